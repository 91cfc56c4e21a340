"""Build the number reader that ships with mnistlab (``pretrained:number-reader``).

    python scripts/build_reader.py [--seed 0] [--out runs/reader]
    python scripts/build_reader.py --run runs/reader     # package a finished run instead

runs ``mnistlab train-reader --seed S --out OUT`` (the default recipe: 16,000 pictures of
numbers made of the MNIST training digits and 20,000 generated ones, 16 epochs of fresh line
variants; see docs/shipping.md; ``scripts/install_fonts.sh`` first installs the fonts the
generated digits are printed from), then copies the run's ``model/`` folder into
``src/mnistlab/models/pretrained/number-reader/`` with its card
(``card.json``: data and its SHA-256, seed, the command that rebuilds it, size, time and the
test numbers the run measured). ``--run`` packages a finished run of that same command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mnistlab.models.hub import PRETRAINED_DIR, install_pretrained, run_provenance

NAME = "number-reader"
TARGET = PRETRAINED_DIR / NAME
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/reader", help="the training run folder")
    parser.add_argument("--run", default=None, help="package this finished run instead")
    parser.add_argument("--overwrite", action="store_true", help="replace --out")
    parser.add_argument("--home", default=None, help="dataset cache (default $MNISTLAB_HOME)")
    args = parser.parse_args()

    from mnistlab.shipping.reader_config import ReaderConfig
    from mnistlab.shipping.reader_training import train_reader

    if args.run is None:
        config = ReaderConfig(seed=args.seed)
        train_reader(config, out=args.out, overwrite=args.overwrite, home=args.home)
        run = Path(args.out)
    else:
        run = Path(args.run)
    config = ReaderConfig.from_run(run)
    if config.to_dict() != {**ReaderConfig(seed=config.seed).to_dict(),
                            "num_threads": config.num_threads}:  # fmt: skip
        raise SystemExit(f"{run} was not trained with the default recipe; the card would lie")
    metrics = json.loads((run / "metrics.json").read_text())
    facts = run_provenance(run)
    card = {
        "name": NAME,
        "summary": "Reads a whole line of handwritten digits at once, touching and overlapping "
        "ones included (a CNN trained with CTC on pictures of numbers made of MNIST training "
        "digits and generated ones); `mnistlab read pretrained:number-reader PICTURE`.",
        "objective": "ctc",
        "architecture": "number-reader",
        "parameters": metrics["parameters"],
        "data": {
            "dataset": "mnist",
            "split": f"train ({metrics['pictures']:,} pictures of numbers made of its digits"
            + (f" and {config.generated_digits:,} generated ones)" if config.generated_digits
               else ")"),
            "sha256": facts["data_sha256"]["mnist"],
        },
        "seed": config.seed,
        "recipe": config.to_dict(),
        "command": f"mnistlab train-reader --seed {config.seed}",
        "rebuild": "python scripts/build_reader.py",
        "train_seconds": round(metrics["train_seconds"], 1),
        "trained_on": facts["trained_on"],
        "weights_sha256": facts["weights_sha256"],
        "downstream": [
            {
                "task": f"5-digit numbers, {name}",
                "split": "MNIST test digits (seed 0)",
                "count": row["count"],
                "string_accuracy": row["string_accuracy"],
                "digit_accuracy": row["digit_accuracy"],
            }
            for name, row in metrics["test"].items()
        ],
    }
    install_pretrained(run / "model", NAME, card)
    size = (TARGET / "model" / "model.safetensors").stat().st_size
    print(f"{NAME}: {size / 1e6:.2f} MB of weights -> {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
