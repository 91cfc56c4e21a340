"""Classic models on MNIST-format datasets: accuracy, fit time, predict time.

Part 1 (``--logreg``): the tutorial's logistic-regression recipe (``--recipe seed``:
one-vs-rest lbfgs, max_iter=1000, 70k pooled, 80/20 split) and mnistlab's default logreg
(softmax regression by full-batch L-BFGS in torch, official split), in the same run, with
the ratio of their fit times.

Part 2 (``--table``): every classic model's default recipe on each dataset.

Each run goes through ``mnistlab.training.train_classic`` (the code behind ``mnistlab train``)
into a temporary run folder; times are its ``train_seconds`` (fit wall time, features
included, data loading excluded) and ``predict_seconds`` (test split).

    python benchmarks/classic_benchmark.py --logreg --table --datasets mnist fashion-mnist
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
from pathlib import Path

from mnistlab.runs import environment_info
from mnistlab.training import train_classic


def run(model: str, recipe: str, dataset: str, work: Path, seed: int) -> dict:
    result = train_classic(
        model,
        recipe=recipe,
        dataset=dataset,
        seed=seed,
        runs_root=work,
        log=lambda *_: None,
    )
    row = {
        "model": model,
        "recipe": recipe,
        "dataset": dataset,
        "seed": seed,
        "split": result.report.get("split"),
        "test_accuracy": result.test_accuracy,
        "train_seconds": result.train_seconds,
        "predict_seconds": result.predict_seconds,
        "num_test": result.report["num_test"],
    }
    print(
        f"{model:7s} {recipe:8s} {dataset:14s} acc {row['test_accuracy']:.4f}  "
        f"fit {row['train_seconds']:8.2f}s  predict {row['predict_seconds']:7.2f}s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logreg", action="store_true", help="seed recipe vs default logreg")
    parser.add_argument("--table", action="store_true", help="all models x datasets")
    parser.add_argument("--models", nargs="+", default=["logreg", "knn", "svm", "rf"])
    parser.add_argument("--datasets", nargs="+", default=["mnist"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    env = environment_info()
    print(
        f"{dt.date.today()}  {env['processor']}  {os.cpu_count()} cores  "
        f"python {platform.python_version()}  torch {env['packages']['torch']}  "
        f"scikit-learn {env['packages']['scikit-learn']}"
    )
    results: dict = {"date": str(dt.date.today()), "environment": env}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.logreg:
            seed_row = run("logreg", "seed", "mnist", work, args.seed)
            default_row = run("logreg", "default", "mnist", work, args.seed)
            ratio = seed_row["train_seconds"] / default_row["train_seconds"]
            print(
                f"default logreg fits {ratio:.1f}x faster than the seed recipe "
                f"({default_row['train_seconds']:.2f}s vs {seed_row['train_seconds']:.1f}s)"
            )
            results["logreg"] = {"seed": seed_row, "default": default_row, "speedup": ratio}
        if args.table:
            results["table"] = [
                run(model, "default", dataset, work, args.seed)
                for dataset in args.datasets
                for model in args.models
            ]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
