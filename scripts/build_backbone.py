"""Build the pretrained backbone that ships with mnistlab (``pretrained:simclr-fast-cnn-wide``).

    python scripts/build_backbone.py [--epochs 40] [--seed 0] [--out runs/backbone]

runs ``mnistlab pretrain`` with the recipe below (SimCLR on the 60,000 MNIST training images;
no label is read), then copies the run's ``model/`` folder into
``src/mnistlab/models/pretrained/simclr-fast-cnn-wide/`` with its model card (``card.json``:
objective, data and its SHA-256, seed, the command that rebuilds it, size, time). The same
recipe by hand::

    mnistlab pretrain --objective simclr --epochs 40 --batch-size 512 --lr 0.5 \\
        --precision bf16 --set optimizer=sgd --set weight_decay=0.0005 --seed 0

Downstream numbers are added to the card by ``benchmarks/fewshot_benchmark.py --card``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mnistlab.models.hub import PREFIX, install_pretrained, run_provenance
from mnistlab.pretraining.config import DEFAULT_BACKBONE

NAME = DEFAULT_BACKBONE.removeprefix(PREFIX)  # simclr-fast-cnn-wide: what fewshot starts from
ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "src" / "mnistlab" / "models" / "pretrained" / NAME


def recipe(epochs: int, seed: int) -> dict:
    """The pretraining settings of the shipped backbone."""
    return {
        "objective": "simclr",
        "backbone": "fast-cnn-wide",
        "dataset": "mnist",
        "epochs": epochs,
        "batch_size": 512,
        "lr": 0.5,
        "optimizer": "sgd",
        "weight_decay": 5e-4,
        "warmup": 0.05,
        "schedule": "cosine",
        "precision": "bf16",
        "temperature": 0.2,
        "projection_dim": 64,
        "views": "strong",
        "seed": seed,
    }


def command(epochs: int, seed: int) -> str:
    """The ``mnistlab pretrain`` command line of :func:`recipe`."""
    return (
        f"mnistlab pretrain --objective simclr --epochs {epochs} --batch-size 512 --lr 0.5 "
        f"--precision bf16 --set optimizer=sgd --set weight_decay=0.0005 --seed {seed}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/backbone", help="the pretraining run folder")
    parser.add_argument("--overwrite", action="store_true", help="replace --out")
    parser.add_argument("--home", default=None, help="dataset cache (default $MNISTLAB_HOME)")
    args = parser.parse_args()

    from mnistlab.pretraining.config import PretrainConfig
    from mnistlab.pretraining.pretrain import pretrain

    config = PretrainConfig(**recipe(args.epochs, args.seed))
    result = pretrain(config, out=args.out, overwrite=args.overwrite, home=args.home)
    if not result.finished:
        raise SystemExit("pretraining did not finish; resume it with mnistlab pretrain --resume")
    run = Path(result.run_dir)
    facts = run_provenance(run)
    backbone_params = sum(
        p.numel() for p in result.model.features.parameters()  # type: ignore[union-attr]
    )
    card = {
        "name": NAME,
        "summary": "A fast-cnn-wide convolutional backbone pretrained without labels "
        "(SimCLR: two strong views of each image agree) on the MNIST training images; "
        "the starting point of `mnistlab fewshot`.",
        "objective": "simclr",
        "architecture": "fast-cnn-wide",
        "backbone_parameters": backbone_params,
        "data": {
            "dataset": "mnist",
            "split": "train (60,000 images; labels not read)",
            "sha256": facts["data_sha256"]["mnist"],
        },
        "seed": args.seed,
        "recipe": recipe(args.epochs, args.seed),
        "command": command(args.epochs, args.seed),
        "rebuild": "python scripts/build_backbone.py",
        "final_loss": result.final_loss,
        "train_seconds": round(result.train_seconds, 1),
        "trained_on": facts["trained_on"],
        "weights_sha256": facts["weights_sha256"],
        "downstream": [],
    }
    old = TARGET / "card.json"
    if old.is_file():  # keep measured downstream numbers only if the weights are the same
        previous = json.loads(old.read_text())
        if previous.get("weights_sha256") == card["weights_sha256"]:
            card["downstream"] = previous.get("downstream", [])
    install_pretrained(run / "model", NAME, card)
    size = (TARGET / "model" / "model.safetensors").stat().st_size
    print(f"{NAME}: {size / 1e6:.2f} MB of weights, loss {result.final_loss:.4f}, "
          f"{result.train_seconds:.0f} s -> {TARGET}")


if __name__ == "__main__":
    main()
