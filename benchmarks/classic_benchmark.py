"""Classic models on MNIST-format datasets: accuracy, fit time, predict time.

Part 1 (``--logreg``): the tutorial's logistic-regression recipe (``--recipe seed``:
one-vs-rest lbfgs, max_iter=1000, 70k pooled, 80/20 split) and mnistlab's default logreg
(softmax regression by full-batch L-BFGS in torch, official split), in the same run, with
the ratio of their fit times.

Part 2 (``--table``): every classic model's default recipe on each dataset.

Part 3 (``--busy``): the same fits while another process keeps one CPU busy (``python -c
"while True: pass"``, started by the benchmark), with the threads chosen automatically (the
CPUs free: 1 here) and with ``--busy-threads`` forced (the BLAS/OpenMP default of one thread
per core), beside the idle fit, for the ``--busy-runs`` given as MODEL:RECIPE:DATASET.

Each run goes through ``mnistlab.training.train_classic`` (the code behind ``mnistlab train``)
into a temporary run folder; times are its ``train_seconds`` (fit wall time, features
included, data loading excluded) and ``predict_seconds`` (test split).

    python benchmarks/classic_benchmark.py --logreg --table --datasets mnist fashion-mnist
    python benchmarks/classic_benchmark.py --busy
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnistlab.runs import environment_info
from mnistlab.training import train_classic


def run(
    model: str, recipe: str, dataset: str, work: Path, seed: int, num_threads: int = 0
) -> dict:
    result = train_classic(
        model,
        recipe=recipe,
        dataset=dataset,
        seed=seed,
        runs_root=work,
        log=lambda *_: None,
        num_threads=num_threads,
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
        "threads": json.loads((result.run_dir / "config.json").read_text())["threads"],
    }
    print(
        f"{model:7s} {recipe:8s} {dataset:14s} acc {row['test_accuracy']:.4f}  "
        f"fit {row['train_seconds']:8.2f}s  predict {row['predict_seconds']:7.2f}s  "
        f"{row['threads']} thread(s)",
        flush=True,
    )
    return row


def busy(runs: list[str], forced: int, work: Path, seed: int) -> list[dict]:
    """Each MODEL:RECIPE:DATASET fitted idle (auto threads), then with another process
    keeping one CPU busy: auto threads, and ``forced`` threads."""
    rows = []
    for spec in runs:
        model, recipe, dataset = spec.split(":")
        idle = run(model, recipe, dataset, work, seed)
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1.0)  # let the burner show up in /proc/stat
            auto = run(model, recipe, dataset, work, seed)
            pinned = run(model, recipe, dataset, work, seed, num_threads=forced)
        finally:
            burner.kill()
            burner.wait()
        rows.append({"run": spec, "idle": idle, "busy_auto": auto, "busy_forced": pinned})
    print(f"\n| fit | idle (auto) | busy, auto | ratio | busy, {forced} threads forced | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        base = row["idle"]["train_seconds"]
        cells = [f"{base:.2f} s ({row['idle']['threads']} thr.)"]
        for key in ("busy_auto", "busy_forced"):
            seconds = row[key]["train_seconds"]
            cells += [f"{seconds:.2f} s ({row[key]['threads']} thr.)", f"{seconds / base:.1f}x"]
        print(f"| {row['run']} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logreg", action="store_true", help="seed recipe vs default logreg")
    parser.add_argument("--table", action="store_true", help="all models x datasets")
    parser.add_argument("--models", nargs="+", default=["logreg", "knn", "svm", "rf"])
    parser.add_argument("--datasets", nargs="+", default=["mnist"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--busy", action="store_true", help="fits on a busy machine")
    parser.add_argument(
        "--busy-runs",
        nargs="+",
        default=["logreg:seed:mnist-mini", "logreg:default:mnist", "knn:default:mnist-mini"],
        help="MODEL:RECIPE:DATASET fitted for --busy",
    )
    parser.add_argument("--busy-threads", type=int, default=os.cpu_count() or 2)
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
        if args.busy:
            results["busy"] = busy(args.busy_runs, args.busy_threads, work, args.seed)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
