"""A sweep of fast-cnn's learning rate and batch size on MNIST: what pruning saves.

Runs ``mnistlab sweep`` twice with the same space, budget and sampler seed, with 2 local
workers on the default SQLite storage: once with the median pruner (the default) and once
with ``--no-prune`` (the peer). Prints each sweep's wall time, trials complete/pruned, epochs
trained, the best trial's validation score and that trial's test accuracy (read after the
choice, for information only), and the ratios; the pruned sweep's results table and figure
stay in ``--out``.

    python benchmarks/sweep_benchmark.py [--trials 20] [--epochs 3] [--workers 2]
        [--out sweeps/bench] [--no-peer]

Needs MNIST in the cache (``mnistlab data fetch mnist``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mnistlab.runs import cpu_model

SPACE = ["--param", "lr=log:1e-3:5e-2", "--param", "batch_size=choice:64,128,256,512"]


def _sweep(out: Path, args: argparse.Namespace, prune: bool) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "mnistlab", "sweep", *SPACE, "--set",
               f"epochs={args.epochs}", "--trials", str(args.trials), "--workers",
               str(args.workers), "--out", str(out)]  # fmt: skip
    command.append("--prune" if prune else "--no-prune")
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "COLUMNS": "100"},
                   stdout=subprocess.DEVNULL)  # fmt: skip
    wall = time.perf_counter() - start
    from mnistlab.training.sweep_report import sweep_results

    result = sweep_results(out, write=False)
    best = result.best
    test = None
    if best is not None:
        run = out / best["runs"][0]
        test = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    return {"wall": wall, "result": result, "best": best, "test": test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("sweeps/bench"))
    parser.add_argument("--no-peer", action="store_true", help="Skip the sweep without pruning.")
    args = parser.parse_args()
    print(f"# sweep benchmark, {dt.date.today()}, CPU: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"fast-cnn on MNIST (54,000 train / 6,000 validation), {args.epochs} epochs per "
          f"trial, {args.trials} trials, {args.workers} workers, SQLite; "
          f"space: {' '.join(SPACE[1::2])}\n")  # fmt: skip
    runs = {"median pruner": _sweep(args.out, args, prune=True)}
    if not args.no_peer:
        runs["no pruning"] = _sweep(args.out.with_name(args.out.name + "-noprune"), args, False)
    print("| sweep | wall s | complete | pruned | failed | epochs trained | best val | "
          "its test | best settings |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, r in runs.items():
        res, best = r["result"], r["best"]
        settings = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in (best["params"] if best else {}).items())  # fmt: skip
        print(f"| {name} | {r['wall']:.0f} | {res.count('complete')} | {res.count('pruned')} | "
              f"{res.count('failed')} | {res.steps_run} of {res.steps_full} | "
              f"{best['value']:.4f} | {r['test']:.4f} | {settings} |")  # fmt: skip
    pruned = runs["median pruner"]
    print(f"\n{pruned['result'].pruning_summary()}")
    if "no pruning" in runs:
        peer = runs["no pruning"]
        print(f"wall time with pruning / without: {pruned['wall'] / peer['wall']:.2f}x; "
              f"best validation score {pruned['best']['value']:.4f} vs {peer['best']['value']:.4f}")
    print(f"\nresults: {args.out / 'results.md'}, figure: {args.out / 'sweep.png'}")


if __name__ == "__main__":
    main()
