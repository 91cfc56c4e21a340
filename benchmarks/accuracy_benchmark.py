"""Accuracy of a deep recipe over seeds: each run's test accuracy, with and without test-time
augmentation, their mean and spread, and the ensemble of the runs.

    python benchmarks/accuracy_benchmark.py --model resnet-small --seeds 0 1 2 --root runs/acc
    python benchmarks/accuracy_benchmark.py --model fast-cnn --dataset fashion-mnist --seeds 0 1 2

Runs are trained with ``mnistlab.training.train_model`` on the model's default recipe into
``ROOT/<model>-<dataset>-s<seed>``; a finished run there is reused, an interrupted one resumed, so
the script can be stopped and started again. The test split is only predicted, never chosen on.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mnistlab.data import load_dataset
from mnistlab.training import ensemble_runs, get_deep_recipe, load_trained_model, predict_proba
from mnistlab.training import train_model as train


def _run(root: Path, model: str, dataset: str, seed: int) -> Path:
    """The finished run folder of (model, dataset, seed), trained or resumed when needed."""
    run = root / f"{model}-{dataset}-s{seed}"
    if (run / "metrics.json").is_file():
        return run
    if (run / "checkpoint" / "state.json").is_file():
        print(f"resuming {run}", flush=True)
        train(resume=run, progress=False)
    else:
        print(f"training {run}", flush=True)
        train(get_deep_recipe(model, dataset=dataset, seed=seed), out=run, progress=False)
    return run


def _accuracy(probabilities, labels) -> float:
    return float((probabilities.argmax(1) == labels).mean())


def _summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f} (1 run)"
    return (
        f"mean {statistics.mean(values):.4f}, sd {statistics.stdev(values):.4f}, "
        f"range {min(values):.4f}-{max(values):.4f} ({len(values)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet-small")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--tta", default="shifts", help="test-time augmentation to compare")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    runs = [_run(args.root, args.model, args.dataset, s) for s in args.seeds]
    test = load_dataset(args.dataset, "test")
    rows = []
    for seed, run in zip(args.seeds, runs, strict=True):
        model, meta = load_trained_model(run)
        plain = _accuracy(predict_proba(model, test.images, meta["normalization"]), test.labels)
        tta = _accuracy(
            predict_proba(model, test.images, meta["normalization"], tta=args.tta), test.labels
        )
        seconds = json.loads((run / "metrics.json").read_text()).get("train_seconds")
        rows.append({"seed": seed, "run": str(run), "test": plain, "tta": tta, "sec": seconds})
        print(f"seed {seed}: test {plain:.4f}  with TTA {tta:.4f}  train {seconds:.0f} s")
    ensembles = {}
    for tta in (None, args.tta):
        out = args.root / f"ensemble-{args.model}-{args.dataset}-{tta or 'plain'}"
        report = ensemble_runs(runs, out=out, tta=tta, overwrite=True)
        ensembles[tta or "none"] = report["test_accuracy"]
    print()
    print(f"{args.model} on {args.dataset} (official test split, {len(test):,} images)")
    print(f"  single model:            {_summary([r['test'] for r in rows])}")
    print(f"  single model + TTA {args.tta}: {_summary([r['tta'] for r in rows])}")
    for tta, accuracy in ensembles.items():
        print(f"  ensemble of {len(runs)}, TTA {tta}: {accuracy:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "ensembles": ensembles}, indent=2))


if __name__ == "__main__":
    main()
