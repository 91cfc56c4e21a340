"""Robustness numbers for deep run folders: corruptions, FGSM/PGD, calibration, OOD.

Runs ``mnistlab.robustness.evaluate_robustness`` on each run folder given (which also writes
``<run>/robustness/``, ``<run>/model/calibration.json`` and the report section) and prints
Markdown tables for docs/benchmarks.md: one summary row per run, then accuracy per corruption.

Usage (from the repository root)::

    .venv/bin/python benchmarks/robustness_benchmark.py RUN [RUN ...] \\
        [--attack-limit 1000] [--pgd-steps 40] [--restarts 1] [--limit N] [--threads 1] \\
        [--json results.json] [--examples docs/robustness-corruptions.png]

Every run is measured on its dataset's test split (corruptions on all of it unless ``--limit``;
attacks on the first ``--attack-limit`` images); OOD is its test split against Fashion-MNIST's
(MNIST's for a Fashion-MNIST run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch

from mnistlab.features.corruptions import CORRUPTIONS
from mnistlab.robustness.suite import evaluate_robustness


def _name(result: dict) -> str:
    adv = result.get("adversarial_training") or {}
    suffix = (
        f" + PGD-{adv['adversarial_steps']} AT ε {adv['adversarial_eps']:g}"
        if adv.get("adversarial_eps")
        else ""
    )
    return f"{result['model']}{suffix} ({Path(result['run']).name})"


def _attack(result: dict, attack: str, eps: float) -> str:
    for row in result.get("adversarial", {}).get("results", []):
        if row["attack"] == attack and abs(row["eps"] - eps) < 1e-9:
            return f"{row['accuracy']:.4f}"
    return "—"


def summary_table(results: list[dict], eps: list[float]) -> str:
    """One row per run: clean, mean corrupted, FGSM/PGD per eps, ECE, T, OOD AUROC."""
    head = ["run", "clean", "mean corrupted"]
    head += [f"FGSM {e:g}" for e in eps] + [f"PGD {e:g}" for e in eps]
    head += ["ECE before", "ECE after (T)", "AUROC max-softmax", "AUROC energy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for r in results:
        cal = r.get("calibration", {})
        ood = r.get("ood", {}).get("raw", {}).get("auroc", {})
        cells = [
            _name(r),
            f"{r['clean_accuracy']:.4f}",
            f"{r['corruptions']['mean_accuracy']:.4f}" if "corruptions" in r else "—",
            *[_attack(r, "fgsm", e) for e in eps],
            *[_attack(r, "pgd", e) for e in eps],
            f"{cal['ece_before']:.4f}" if cal else "—",
            f"{cal['ece_after']:.4f} ({cal['temperature']:.3f})" if cal else "—",
            f"{ood['max_softmax']:.4f}" if ood else "—",
            f"{ood['energy']:.4f}" if ood else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def corruption_table(results: list[dict]) -> str:
    """Accuracy per corruption (mean over severities), one column per run."""
    runs = [r for r in results if "corruptions" in r]
    head = ["corruption", "family", *[_name(r) for r in runs]]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(runs)]
    for name, spec in CORRUPTIONS.items():
        cells = [
            f"{r['corruptions']['per_corruption'][name]['mean']:.4f}"
            if name in r["corruptions"]["per_corruption"]
            else "—"
            for r in runs
        ]
        lines.append(f"| {name} | {spec.family} | " + " | ".join(cells) + " |")
    lines.append(
        "| **mean** | | "
        + " | ".join(f"**{r['corruptions']['mean_accuracy']:.4f}**" for r in runs)
        + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="deep run folders")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--attack-limit", type=int, default=1000, help="images attacked")
    parser.add_argument("--pgd-steps", type=int, default=40)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="test images corrupted")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument(
        "--examples", type=Path, default=None, help="also draw every corruption (PNG) here"
    )
    parser.add_argument(
        "--tables-from",
        type=Path,
        nargs="+",
        default=None,
        help="measure nothing: print the tables of earlier --json files, in order",
    )
    args = parser.parse_args(argv)
    if args.tables_from:
        results = [r for path in args.tables_from for r in json.loads(path.read_text())]
        eps = sorted(
            {row["eps"] for r in results for row in r.get("adversarial", {}).get("results", [])}
        )
        print(summary_table(results, eps) + "\n\n" + corruption_table(results))
        return 0
    torch.set_num_threads(args.threads)
    if args.examples is not None:
        from mnistlab.data import load_dataset
        from mnistlab.robustness.suite import plot_corruption_examples

        plot_corruption_examples(load_dataset("mnist", "test").images[:17], args.examples)

    results = []
    for run in args.runs:
        start = time.perf_counter()
        result = evaluate_robustness(
            run,
            eps=args.eps,
            pgd_steps=args.pgd_steps,
            pgd_restarts=args.restarts,
            attack_limit=args.attack_limit,
            limit=args.limit,
            log=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
        )
        result["benchmark_seconds"] = time.perf_counter() - start
        print(f"{run}: {result['benchmark_seconds']:.0f} s", file=sys.stderr, flush=True)
        results.append(result)

    print(summary_table(results, args.eps))
    print()
    print(corruption_table(results))
    print()
    print(
        f"Measured {dt.date.today().isoformat()} on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {args.threads} torch thread(s); attacks on "
        f"{args.attack_limit} images, PGD {args.pgd_steps} steps x {args.restarts} restart(s); "
        + ", ".join(f"{Path(r['run']).name}: {r['benchmark_seconds']:.0f} s" for r in results)
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
