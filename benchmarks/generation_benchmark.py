"""Generated digits, side by side (docs/benchmarks.md, "Generation"): the class-conditional GPT
of ``mnistlab pretrain``, the DCGAN of ``mnistlab gan`` and its conditional variant, scored by
one classifier.

For every model: the share of samples that the classifier reads as the digit asked for
(conditional models), the Fréchet distance in the classifier's penultimate feature space
(:func:`mnistlab.evaluation.generative.frechet_distance`) between the samples and the second
half of the MNIST test set, the classes the classifier sees among unconditional samples (a
mode-collapse check, with the histogram), and the training cost. Real images give the
baselines: the first half of the test set against the second half, at the samples' count and
at 5,000 vs 5,000.

Runs that are missing are trained first (one at a time, one thread each) with the settings
below, in ``--root``; pass finished runs with ``--classifier``, ``--gpt``, ``--gan``, ``--cgan``
to only measure::

    python benchmarks/generation_benchmark.py --root runs/genbench \\
        --classifier runs/genbench/resnet-small-3ep --gpt runs/genbench/gpt-mnist \\
        --figures docs/pretraining
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.data import load_dataset
from mnistlab.evaluation.generative import class_coverage, classifier_features, frechet_distance
from mnistlab.pretraining import generate_digits, save_generated_grid
from mnistlab.pretraining.generate import Generated, classifier_agreement

THREADS = 1
GPT = {"objective": "gpt", "dataset": "mnist", "preset": "tiny", "patch_size": 4, "epochs": 3,
       "batch_size": 128, "lr": 2e-3, "codebook_size": 256, "conditional": True,
       "num_threads": THREADS, "seed": 0}  # fmt: skip
GAN = {"dataset": "mnist", "num_threads": THREADS, "seed": 0}  # GanConfig's defaults otherwise


def ensure_runs(args: argparse.Namespace) -> None:
    """Train what was not given (classifier, GPT, both GANs) under ``--root``."""
    root = args.root
    if args.classifier is None:
        args.classifier = root / "resnet-small-3ep"
        if not (args.classifier / "model" / "model.json").is_file():
            from mnistlab.training.engine import train_model
            from mnistlab.training.recipes import get_deep_recipe

            config = get_deep_recipe("resnet-small", epochs=3, num_threads=THREADS)
            train_model(config, out=args.classifier, overwrite=True, home=args.home)
    if args.gpt is None:
        args.gpt = root / "gpt-mnist"
        if not (args.gpt / "model" / "model.json").is_file():
            from mnistlab.pretraining import PretrainConfig, pretrain

            pretrain(PretrainConfig(**GPT), out=args.gpt, overwrite=True, home=args.home)
    for name, conditional in (("gan", False), ("cgan", True)):
        if getattr(args, name) is None:
            run = root / ("gan-cond-mnist" if conditional else "gan-mnist")
            setattr(args, name, run)
            if not (run / "model" / "model.json").is_file():
                from mnistlab.pretraining.gan import train_gan
                from mnistlab.pretraining.gan_config import GanConfig

                config = GanConfig(conditional=conditional, **GAN)
                train_gan(config, out=run, overwrite=True, home=args.home)


def training_cost(run: Path) -> dict[str, Any]:
    """Epochs, training seconds and threads of a run, from its files."""
    report = json.loads((run / "report.json").read_text())
    config = json.loads((run / "config.json").read_text())
    seconds = report.get("train_seconds")
    if seconds is None:  # a classifier run of `mnistlab train`
        seconds = json.loads((run / "metrics.json").read_text())["train_seconds"]
    return {"seconds": seconds, "epochs": report.get("epochs", config.get("epochs")),
            "threads": config.get("threads") or config.get("num_threads")}  # fmt: skip


def score(
    name: str, generated: Generated, free: Generated | None, args: argparse.Namespace,
    reference: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    """The row of one generator: agreement, FID, coverage (of ``free``, its unconditional
    samples; ``generated`` when it has none)."""
    features, proba = classifier_features(args.classifier, generated.images)
    row: dict[str, Any] = {"model": name, "samples": len(generated.images)}
    row["fid"] = frechet_distance(features, reference)
    asked = generated.digits < 10
    if asked.any():
        agreement = classifier_agreement(generated, proba)
        row["per_digit"] = agreement
        row["agreement"] = float(np.mean(list(agreement.values())))
    free_proba = proba if free is None else classifier_features(args.classifier, free.images)[1]
    coverage = class_coverage(free_proba)
    row["coverage"], row["histogram"] = coverage.covered, coverage.histogram
    row["coverage_of"] = "unconditional samples" if free is not None else "the samples"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/genbench"))
    parser.add_argument("--classifier", type=Path, help="classifier run (default: train one)")
    parser.add_argument("--gpt", type=Path, help="conditional GPT run (default: train one)")
    parser.add_argument("--gan", type=Path, help="unconditional GAN run (default: train one)")
    parser.add_argument("--cgan", type=Path, help="conditional GAN run (default: train one)")
    parser.add_argument(
        "--cgan-plain",
        type=Path,
        help="optional extra row: a conditional GAN trained with --set mode_seeking=0",
    )
    parser.add_argument("-n", type=int, default=200, help="samples per digit (default 200)")
    parser.add_argument("--figures", type=Path, help="write the sample grids (PNG) here")
    parser.add_argument("--home", type=Path, help="dataset cache root")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    ensure_runs(args)

    test = load_dataset("mnist", "test", home=args.home).images
    half_a, half_b = test[:5000], test[5000:]
    total = 10 * args.n
    feats_a, proba_a = classifier_features(args.classifier, half_a)
    feats_b, _ = classifier_features(args.classifier, half_b)
    rows: list[dict[str, Any]] = [{
        "model": f"real: test images 0-{total - 1} vs 5000-9999", "samples": total,
        "fid": frechet_distance(feats_a[:total], feats_b),
        "coverage": class_coverage(proba_a[:total]).covered,
        "histogram": class_coverage(proba_a[:total]).histogram, "coverage_of": "the images",
        "cost": "-",
    }]  # fmt: skip
    rows.append({"model": "real: test 0-4999 vs 5000-9999", "samples": 5000,
                 "fid": frechet_distance(feats_a, feats_b)})  # fmt: skip

    digits = list(range(10))
    runs = [("GPT, conditional", args.gpt, True), ("DCGAN", args.gan, False),
            ("DCGAN, conditional", args.cgan, True)]  # fmt: skip
    if args.cgan_plain is not None:
        runs.append(("DCGAN, conditional, no mode seeking", args.cgan_plain, True))
    for name, run, conditional in runs:
        start = time.perf_counter()
        generated = generate_digits(run, digits if conditional else None, total if not
                                    conditional else args.n, seed=0)  # fmt: skip
        free = None
        if name.startswith("GPT"):  # the conditional GPT also samples with "no class"
            free = generate_digits(run, None, total, seed=1)
        seconds = time.perf_counter() - start
        row = score(name, generated, free, args, feats_b)
        row["sample_seconds"] = seconds
        row["cost"] = training_cost(run)
        row["run"] = str(run)
        rows.append(row)
        if args.figures is not None:
            args.figures.mkdir(parents=True, exist_ok=True)
            keep = np.concatenate([np.flatnonzero(generated.digits == d)[:10]
                                   for d in np.unique(generated.digits)])  # fmt: skip
            if not conditional:  # free samples: the first 100
                keep = np.arange(min(100, len(generated.images)))
            stem = name.lower().replace(", ", "_").replace(" ", "_")
            grid = Generated(generated.images[keep[:100]], generated.digits[keep[:100]])
            save_generated_grid(grid, args.figures / f"generation_{stem}.png", per_row=10)
        print(f"{name}: done in {seconds:.0f} s of sampling", flush=True)

    (args.root / "generation.json").write_text(
        json.dumps({"classifier": str(args.classifier), "rows": rows}, indent=1)
    )
    print(f"\nclassifier: {args.classifier} ({training_cost(args.classifier)})\n")
    print("| model | samples | read as the digit asked | FID (classifier features) | classes "
          "seen (≥ 1 %) | class histogram 0-9 | training |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for row in rows:
        agreement = f"{row['agreement']:.1%}" if "agreement" in row else "—"
        coverage = f"{row['coverage']}/10 ({row['coverage_of']})" if "coverage" in row else ""
        histogram = " ".join(str(c) for c in row.get("histogram", []))
        cost = row.get("cost", "")
        if isinstance(cost, dict):
            cost = (f"{cost['epochs']} epochs, {cost['seconds'] / 60:.1f} min "
                    f"({cost['threads']} thread)")  # fmt: skip
        print(f"| {row['model']} | {row['samples']:,} | {agreement} | {row['fid']:.2f} | "
              f"{coverage} | {histogram} | {cost} |")  # fmt: skip
    for row in rows:
        if "per_digit" in row:
            per = " ".join(f"{d}:{v:.0%}" for d, v in row["per_digit"].items())
            print(f"{row['model']} per digit: {per}")


if __name__ == "__main__":
    main()
