"""Handwriting from other sources: accuracy of MNIST-trained models on MNIST's test split and on
scikit-learn's 1,797 digits (13 other writers, 8x8 scans brought to MNIST form), with and
without a reject option (the model abstains on its least confident 2 %).

    python benchmarks/handwriting_benchmark.py --model RUN [RUN...] [--abstain 0.02]
        [--json out.json]

For each run: its probabilities through the model as ``mnistlab predict`` reads it (with its
``calibration.json`` temperature when ``mnistlab robustness`` wrote one), then
``mnistlab.evaluation.metrics.selective_accuracy`` at 0, 1, 2, 5 and 10 % abstention. The
sklearn-digits dataset is built from scikit-learn's bundled copy if it is not cached yet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from dataclasses import asdict

import mnistlab
from mnistlab.evaluation.metrics import ABSTAIN_RATES, selective_accuracy
from mnistlab.runs import cpu_model
from mnistlab.shipping import load_model

DATASETS = ("mnist", "sklearn-digits")


def measure(run: str, abstain: float) -> dict:
    """The run's selective accuracy on each dataset's test split."""
    model = load_model(run)
    out: dict = {"model": run, "temperature": model.calibration.temperature}
    for name in DATASETS:
        test = mnistlab.load_dataset(name, "test")
        start = time.perf_counter()
        probabilities = model.probabilities(test.images)
        seconds = time.perf_counter() - start
        rates = sorted({*ABSTAIN_RATES, abstain})
        points = selective_accuracy(probabilities, test.labels, rates)
        out[name] = {
            "count": len(test),
            "predict_seconds": round(seconds, 3),
            "curve": [asdict(p) for p in points],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", required=True, help="Run folders of classifiers.")
    parser.add_argument("--abstain", type=float, default=0.02, help="The reject rate shown.")
    parser.add_argument("--json", help="Also write the numbers to this file.")
    args = parser.parse_args()

    print(
        f"# handwriting from other sources, {dt.date.today()}, CPU: {cpu_model()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    results = [measure(run, args.abstain) for run in args.model]
    pct = f"{args.abstain:.0%}"
    print(
        f"| model | MNIST test | MNIST test, {pct} abstained | sklearn-digits | "
        f"sklearn-digits, {pct} abstained |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        cells = []
        for name in DATASETS:
            curve = {p["abstain"]: p for p in r[name]["curve"]}
            cells += [f"{curve[0.0]['accuracy']:.2%}", f"{curve[args.abstain]['accuracy']:.2%}"]
        print(f"| {os.path.basename(os.path.normpath(r['model']))} | {' | '.join(cells)} |")
    print()
    print("| model | dataset | " + " | ".join(f"{a:.0%} abstained" for a in ABSTAIN_RATES) + " |")
    print("| --- | --- |" + " ---: |" * len(ABSTAIN_RATES))
    for r in results:
        for name in DATASETS:
            curve = {p["abstain"]: p for p in r[name]["curve"]}
            accs = " | ".join(f"{curve[a]['accuracy']:.2%}" for a in ABSTAIN_RATES)
            print(f"| {os.path.basename(os.path.normpath(r['model']))} | {name} | {accs} |")
    if args.json:
        with open(args.json, "w") as handle:
            record = {"date": str(dt.date.today()), "cpu": cpu_model(), "results": results}
            json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
