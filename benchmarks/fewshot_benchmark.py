"""The label-efficiency table of ``mnistlab fewshot`` (docs/benchmarks.md, "Few labels").

Cells: labels (--labels) x stages (--stages) x label draws (--seeds), each an ordinary run
folder under --root (a finished run of the same settings is reused, so the script can be run
again to print the table, or to add cells; ``mnistlab fewshot --labels N --seed S --out
ROOT/propagate-N-sS`` makes a `propagate` cell):

    propagate        the default recipe: labels spread over the shipped backbone's feature
                     graph, where 100 generated digits (fonts and stroke templates, labelled
                     by construction) are labelled nodes too, then a resnet-small student on
                     the pseudo-labels (4 epochs)
    propagate-mnist-only  the same without the generated digits (--set generated_digits=0):
                     the recipe comparable with published few-label results
    supervised       the labelled images only (unlabeled_ratio 0), from scratch
    backbone         the labelled images only, from the shipped backbone (--labels 0: all
                     60,000, fine-tuning the backbone)
    finetune-all     the labelled images only, from the shipped backbone, 20,000 steps with
                     the `mnist-sota` augmentation: the recipe for all labels (--labels 0)
    finetune-all-scratch  the same from scratch: what the backbone brings to it
    semi-scratch     consistency training (FixMatch + alignment + weight averaging), from scratch
    semi-unbalanced  consistency training from the shipped backbone without class balancing
    semi             consistency training from the shipped backbone (--method consistency)
    student          + the student (resnet-small on the `semi` run's pseudo-labels): the whole
                     `mnistlab fewshot --method consistency` recipe; its minutes are the two
                     stages' together

Every cell prints the mean, min and max test accuracy over its draws, the CPU minutes of one
run (training only; wall-clock on the threads the run used) and, for `propagate`, the share of
pseudo-labels that are right (read from the hidden labels after they were fixed). With
--card, the `propagate` and `propagate-mnist-only` rows are written into the shipped backbone's
card (its "downstream" list; only when the card's weights are the ones the runs started from).

    python benchmarks/fewshot_benchmark.py --root runs/fewshot --labels 10 100 1000 \\
        --stages propagate --seeds 0 1 2 3 4 --card
    python benchmarks/fewshot_benchmark.py --root runs/fewshot --labels 10 100 1000 \\
        --stages supervised backbone semi --seeds 0 --steps 6000
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from mnistlab.models.hub import get_pretrained
from mnistlab.pretraining import FewshotConfig, fewshot
from mnistlab.pretraining.config import DEFAULT_BACKBONE, GENERATED_DIGITS
from mnistlab.pretraining.fewshot import train_student

STAGES = ("propagate", "propagate-mnist-only", "supervised", "backbone", "finetune-all",
          "finetune-all-scratch", "semi-scratch", "semi-unbalanced", "semi",
          "student")  # fmt: skip
FINETUNE_ALL = {"weak": "mnist-sota", "steps": 20000}  # the finetune-all stage's settings
GENERATED = {"propagate": GENERATED_DIGITS, "propagate-mnist-only": 0}  # generated digits
ANCHORS = {  # published 100-label MNIST results (test error out of 10,000 -> accuracy)
    100: "Improved GAN 99.07 %, Ladder 98.94 %, Bad GAN 99.20 %, VAT 98.64 %",
    10: "no published anchor (1 label per class)",
}


def settings(
    stage: str, labels: int, seed: int, steps: int | None, threads: int = 0
) -> dict[str, Any]:
    """The FewshotConfig fields of one cell."""
    if stage in GENERATED:  # the default's count for MNIST, written out: runs say what they did
        return {"labels": labels, "seed": seed, "num_threads": threads,
                "generated_digits": GENERATED[stage]}  # fmt: skip
    out: dict[str, Any] = {"labels": labels, "seed": seed, "num_threads": threads,
                           "student": None, "method": "consistency"}  # fmt: skip
    if stage.startswith("finetune-all"):
        out.update(FINETUNE_ALL)
    if steps is not None:
        out["steps"] = steps
    if stage in ("supervised", "semi-scratch", "finetune-all-scratch"):
        out["pretrained"] = None
    if stage in ("supervised", "backbone", "finetune-all", "finetune-all-scratch"):
        out["unlabeled_ratio"] = 0
    if stage == "semi-unbalanced":
        out["balance"] = False
    return out


def run_cell(
    root: Path, stage: str, labels: int, seed: int, steps: int | None, threads: int = 0
) -> dict:
    """One finished run's metrics (trained now unless its folder holds a finished run)."""
    folder = root / f"{stage}-{labels}-s{seed}"
    if stage == "student":
        semi = run_cell(root, "semi", labels, seed, steps, threads)
        config = FewshotConfig(**{**settings("semi", labels, seed, steps, threads),
                                  "student": FewshotConfig.student})  # fmt: skip
        folder, _ = train_student(semi["run"], config, threads=threads, progress=False)
        metrics = json.loads((folder / "metrics.json").read_text())
        seconds = semi["train_seconds"] + metrics["train_seconds"]
        return {**metrics, "run": folder, "train_seconds": seconds}
    config = FewshotConfig(**settings(stage, labels, seed, steps, threads))
    done = (folder / "metrics.json").is_file()
    if done:  # reused only if it ran this recipe (e.g. not one from before a change of it)
        # (a `mnistlab fewshot` run folder counts: its student settings do not change the run)
        # (consistency runs have no generated digits, however recorded: null, 0 or absent)
        same = {"num_threads": 0} if stage.startswith("propagate") else {
            "num_threads": 0, "student": None, "student_epochs": 0,
            "generated_digits": 0}  # fmt: skip
        ran = FewshotConfig.from_run(folder).to_dict()
        done = {**ran, **same} == {**config.to_dict(), **same}
    if not done:
        fewshot(config, out=folder, overwrite=True)
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"run": folder, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/fewshot"))
    parser.add_argument("--labels", type=int, nargs="+", default=[100])
    parser.add_argument("--stages", nargs="+", default=["propagate"], choices=STAGES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=None, help="[default: the recipe's]")
    parser.add_argument("--threads", type=int, default=0, help="per run [default: auto]")
    parser.add_argument("--card", action="store_true", help="write propagate rows into the card")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)

    rows = []
    for labels in args.labels:
        for stage in args.stages:
            cells = [
                run_cell(args.root, stage, labels, s, args.steps, args.threads)
                for s in args.seeds
            ]
            acc = [c["test_accuracy"] for c in cells]
            minutes = statistics.mean(c["train_seconds"] for c in cells) / 60
            right = [c["pseudo_label_accuracy"] for c in cells if c.get("pseudo_label_accuracy")]
            rows.append({"labels": labels, "stage": stage, "runs": len(cells),
                         "mean_accuracy": statistics.mean(acc), "min_accuracy": min(acc),
                         "max_accuracy": max(acc), "minutes": minutes, "accuracies": acc,
                         "pseudo_labels_right": right})  # fmt: skip
    print("| labels | stage | runs | mean | min | max | per draw | pseudo-labels right "
          "| CPU minutes / run |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        draws = " ".join(f"{a:.2%}" for a in r["accuracies"])
        shares = r["pseudo_labels_right"]
        right = f"{statistics.mean(shares):.2%}" if shares else ""
        print(f"| {r['labels']:,} | {r['stage']} | {r['runs']} | {r['mean_accuracy']:.2%} | "
              f"{r['min_accuracy']:.2%} | {r['max_accuracy']:.2%} | {draws} | {right} | "
              f"{r['minutes']:.1f} |")  # fmt: skip
    for labels in args.labels:
        if labels in ANCHORS:
            print(f"anchors, {labels} labels: {ANCHORS[labels]}")
    (args.root / "table.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    if args.card:
        write_card(args.root, [r for r in rows if r["stage"].startswith("propagate")], args.seeds)


def write_card(root: Path, rows: list[dict[str, Any]], seeds: list[int]) -> None:
    """Put the `propagate` and `propagate-mnist-only` rows into the shipped backbone's card,
    if the runs used its weights."""
    shipped = get_pretrained(DEFAULT_BACKBONE)
    card_path = shipped.folder / "card.json"
    card = json.loads(card_path.read_text())
    for r in rows:
        folder = root / f"{r['stage']}-{r['labels']}-s{seeds[0]}"
        used = json.loads((folder / "config.json").read_text())
        if used["backbone"]["weights_sha256"] != card["weights_sha256"]:
            raise SystemExit(f"the {r['labels']}-label runs used other backbone weights")
    keys = ("labels", "runs", "mean_accuracy", "min_accuracy", "max_accuracy")
    extra = {"propagate": ("", f"propagate + {GENERATED_DIGITS} generated digits"),
             "propagate-mnist-only": (" --set generated_digits=0",
                                      "propagate, MNIST labels only")}  # fmt: skip
    measured = [
        {
            **{k: r[k] for k in keys},
            "seeds": seeds,
            "minutes": round(r["minutes"], 1),
            "split": "MNIST test (10,000)",
            "command": f"mnistlab fewshot --labels {r['labels']}{extra[r['stage']][0]} --seed S",
            "method": extra[r["stage"]][1],
        }
        for r in rows
    ]
    new = {(r["labels"], r["method"]) for r in measured}
    kept = [r for r in card.get("downstream", []) if (r.get("labels"), r.get("method")) not in new]
    # the default recipe's 100-label row first: `mnistlab models list` shows the first row
    card["downstream"] = sorted(
        [*kept, *measured],
        key=lambda r: (r["method"] != extra["propagate"][1], r["labels"] != 100, r["labels"]),
    )
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"downstream numbers written to {card_path}")


if __name__ == "__main__":
    main()
