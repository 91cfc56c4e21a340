"""Build the digit model that ships with mnistlab (``pretrained:handwriting``): the model that
``mnistlab serve`` and the draw-a-digit page use when no model is named.

    python scripts/build_handwriting.py [--seed 0] [--out runs/handwriting]
    python scripts/build_handwriting.py --run runs/handwriting   # package a finished run

runs ``mnistlab train --model resnet-small --set augment=handwriting --set
generated_digits=30000 --seed S --out OUT`` (resnet-small's default recipe with the
``handwriting`` augmentation, on MNIST's training split plus 30,000 generated digits, see
docs/data.md, "Generated digits"; the fonts: ``scripts/install_fonts.sh``), measures it on
MNIST's test split and on sklearn-digits (other writers) with and without a 2 % reject
option, then copies the run's ``model/`` folder into
``src/mnistlab/models/pretrained/handwriting/`` with its card. ``--run`` packages a finished
run of that same command.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mnistlab.models.hub import PRETRAINED_DIR, install_pretrained, run_provenance

NAME = "handwriting"
TARGET = PRETRAINED_DIR / NAME
ROOT = Path(__file__).resolve().parents[1]
GENERATED = 30000
RECIPE = ["--model", "resnet-small", "--set", "augment=handwriting",
          "--set", f"generated_digits={GENERATED}"]  # fmt: skip


def measure(run: Path) -> list[dict]:
    """Accuracy on MNIST's test split and on sklearn-digits, plain and abstaining on 2 %."""
    import mnistlab
    from mnistlab.evaluation.metrics import selective_accuracy
    from mnistlab.shipping import load_model

    model = load_model(run)
    rows = []
    for name in ("mnist", "sklearn-digits"):
        test = mnistlab.load_dataset(name, "test")
        plain, kept = selective_accuracy(model.probabilities(test.images), test.labels, [0, 0.02])
        rows.append({"task": f"{name} test split ({len(test):,} digits)",
                     "accuracy": round(plain.accuracy, 4),
                     "accuracy_abstaining_2pct": round(kept.accuracy, 4)})  # fmt: skip
    return rows


def parameters(weights: Path) -> int:
    """Trainable parameters in a weights file (BatchNorm's running statistics not counted)."""
    from safetensors.numpy import load_file

    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.size for k, v in load_file(weights).items() if not k.endswith(buffers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/handwriting", help="the training run folder")
    parser.add_argument("--run", default=None, help="package this finished run instead")
    parser.add_argument("--overwrite", action="store_true", help="replace --out")
    args = parser.parse_args()

    if args.run is None:
        command = [sys.executable, "-m", "mnistlab", "train", *RECIPE, "--seed", str(args.seed),
                   "--out", args.out, *(["--overwrite"] if args.overwrite else [])]  # fmt: skip
        subprocess.run(command, check=True)
        run = Path(args.out)
    else:
        run = Path(args.run)
    config = json.loads((run / "config.json").read_text())
    recipe = ("resnet-small", "handwriting", GENERATED)
    if (config.get("model"), config.get("augment"), config.get("generated_digits")) != recipe:
        raise SystemExit(f"{run} was not trained with this recipe; the card would lie")
    metrics = json.loads((run / "metrics.json").read_text())
    facts = run_provenance(run)
    card = {
        "name": NAME,
        "summary": "Reads single handwritten digits, including styles MNIST lacks (a 1 with a "
        "flag and base, an open 4, a crossed 7): resnet-small trained on MNIST plus digits "
        "generated from fonts and stroke templates. What `mnistlab serve` serves by default.",
        "objective": "classification",
        "architecture": "resnet-small",
        "parameters": parameters(run / "model" / "model.safetensors"),
        "data": {
            "dataset": "mnist",
            "split": f"train + {GENERATED:,} generated digits ({len(config['generated']['fonts'])}"
            " fonts and the stroke templates of mnistlab.data.synthetic)",
            "sha256": facts["data_sha256"]["mnist"],
            "train_sha256": config["generated"]["train_sha256"],
            "fonts_sha256": config["generated"]["fonts_sha256"],
        },
        "seed": config["seed"],
        "command": f"mnistlab train {' '.join(RECIPE)} --seed {config['seed']}",
        "rebuild": "scripts/install_fonts.sh && python scripts/build_handwriting.py",
        "train_seconds": round(metrics["train_seconds"], 1),
        "trained_on": facts["trained_on"],
        "weights_sha256": facts["weights_sha256"],
        "downstream": measure(run),
    }
    install_pretrained(run / "model", NAME, card)
    size = (TARGET / "model" / "model.safetensors").stat().st_size
    print(f"{NAME}: {size / 1e6:.2f} MB of weights -> {TARGET.relative_to(ROOT)}")
    for row in card["downstream"]:
        print(f"  {row['task']}: {row['accuracy']:.2%} ({row['accuracy_abstaining_2pct']:.2%} "
              "abstaining on 2 %)")  # fmt: skip


if __name__ == "__main__":
    main()
