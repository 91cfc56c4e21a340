"""Reading whole numbers: string and digit accuracy on synthetic 5-digit numbers made of MNIST
*test* digits (mnistlab.data.numbers), by condition.

Four sets of ``--count`` numbers each, built deterministically (seed 0): digits apart or with
30 % of neighbouring pairs touching or overlapping, each rendered clean (ink on white, PNG) or
as a photo (paper and pen colours, a lighting gradient, blur, noise, JPEG). For each set:
string accuracy (every digit right, none missing or extra), digit accuracy (1 - edit distance
/ 5), the share read with the right number of digits, string accuracy when the reader may
abstain on its least confident 10 %, how well the digits' boxes fit (where the length is
right: the share of digits whose box overlaps the true one with an intersection over union of
at least 0.7, and the mean of that ratio), milliseconds per picture, and, for number readers,
the string accuracy when the length is known (``digits=5``: the best reading of five digits).

    python benchmarks/read_benchmark.py --model MODEL [MODEL ...] [--count 500] [--json out.json]
        [--dataset sklearn-digits] [--one-view]

The models, measured in turn on the same pictures: number readers (``pretrained:number-reader``
or a ``mnistlab train-reader`` run: the whole line at once), number readers with a classifier's
second opinion on each digit (``READER+CLASSIFIER``; with ``--one-view`` each reader also
reads the line only as it is, not stretched too), and digit classifier runs (cuts by
recognition), e.g. the one docs/benchmarks.md reports, ``mnistlab train --model fast-cnn --set
epochs=8 --set augment=mnist-sota --out RUN``. With several, a last table puts their string
accuracies side by side, with each one's errors as a multiple of the first one's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time

import numpy as np

import mnistlab
from mnistlab.data.numbers import number_set
from mnistlab.runs import cpu_model
from mnistlab.shipping.read import edit_distance, load_number_model, read_number_file

CONDITIONS = {
    "photo, digits apart": {"touching": 0.0, "photo": True},
    "photo, 30 % of pairs touching": {"touching": 0.3, "photo": True},
    "clean, digits apart": {"touching": 0.0, "photo": False},
    "clean, 30 % of pairs touching": {"touching": 0.3, "photo": False},
}


def box_overlap(a: tuple, b: tuple) -> float:
    """Intersection over union of two boxes ``(x0, y0, x1, y1)`` (x1/y1 exclusive)."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def measure(model, images, labels, count: int, seed: int, **style) -> dict:
    pictures = number_set(images, labels, count, seed=seed, **style)
    start = time.perf_counter()
    readings = [read_number_file(p.data, model) for p in pictures]
    seconds = time.perf_counter() - start
    right = np.array([r.text == p.text for r, p in zip(readings, pictures, strict=True)])
    confidence = np.array([r.confidence for r in readings])
    kept = confidence >= np.quantile(confidence, 0.10)
    known = None
    if getattr(model, "reads_lines", False):  # the same pictures, their length known
        known = float(np.mean([read_number_file(p.data, model, digits=len(p.text)).text == p.text
                               for p in pictures]))  # fmt: skip
    digits = [max(0.0, 1 - edit_distance(r.text, p.text) / len(p.text))
              for r, p in zip(readings, pictures, strict=True)]  # fmt: skip
    overlaps = [box_overlap(d.box, box)
                for r, p in zip(readings, pictures, strict=True) if len(r.digits) == len(p.boxes)
                for d, box in zip(r.digits, p.boxes, strict=True)]  # fmt: skip
    return {
        "count": count,
        "box_iou_mean": float(np.mean(overlaps)) if overlaps else None,
        "boxes_iou_0.7": float(np.mean(np.array(overlaps) >= 0.7)) if overlaps else None,
        "string_accuracy": float(right.mean()),
        "digit_accuracy": float(np.mean(digits)),
        "length_right": float(np.mean([len(r.text) == 5 for r in readings])),
        "string_accuracy_abstain_10": float(right[kept].mean()),
        "string_accuracy_length_known": known,
        "ms_per_picture": 1000 * seconds / count,
        "touching_pairs": int(sum(sum(p.touching) for p in pictures)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        required=True,
        nargs="+",
        help="Number readers (pretrained:number-reader, a `mnistlab train-reader` run) and/or "
        "digit classifier runs, measured in turn; READER+CLASSIFIER: a number reader whose "
        "digits a classifier reads again (e.g. pretrained:number-reader+pretrained:handwriting).",
    )
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dataset",
        default="mnist",
        help="Whose digits the numbers are made of: its test split (sklearn-digits: 13 writers "
        "MNIST does not have).",
    )
    parser.add_argument(
        "--one-view",
        action="store_true",
        help="Also measure each number reader reading the line only as it is, not stretched "
        "too (READER@one-view in the tables; mnistlab.models.reader.consensus).",
    )
    parser.add_argument("--json", help="Also write the numbers to this file.")
    args = parser.parse_args()
    test = mnistlab.load_dataset(args.dataset, "test")
    print(f"# reading numbers, {dt.date.today()}, CPU: {cpu_model()}, load "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{args.count} five-digit numbers per set from the {args.dataset} test split, "
          f"seed {args.seed}")  # fmt: skip
    results: dict[str, dict] = {}
    names = list(args.model)
    if args.one_view:  # each reader's peer that reads the line only once
        names = [n for path in args.model for n in (path, f"{path}@one-view")]
    for path in names:
        reader, _, second = path.removesuffix("@one-view").partition("+")
        model = load_number_model(reader, threads=1, classifier=second or None)
        if path.endswith("@one-view"):
            if not getattr(model, "reads_lines", False):
                continue
            model.stretches = ()
            model.name += ", the line read once"
        print(f"\n## {model.name} ({path})\n")
        print(
            "| set | string accuracy | digit accuracy | 5 digits found | string acc., "
            "abstaining on 10 % | boxes IoU >= 0.7 (mean IoU) | ms / picture | "
            "string acc., length known |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        results[path] = {}
        for name, style in CONDITIONS.items():
            r = measure(model, test.images, test.labels, args.count, args.seed, **style)
            results[path][name] = r
            k = r["string_accuracy_length_known"]
            known = "-" if k is None else f"{k:.3f}"
            boxes = ("-" if r["box_iou_mean"] is None
                     else f"{r['boxes_iou_0.7']:.3f} ({r['box_iou_mean']:.3f})")  # fmt: skip
            print(f"| {name} | {r['string_accuracy']:.3f} | {r['digit_accuracy']:.4f} | "
                  f"{r['length_right']:.3f} | {r['string_accuracy_abstain_10']:.3f} | {boxes} | "
                  f"{r['ms_per_picture']:.0f} | {known} |", flush=True)  # fmt: skip
    if len(results) > 1:  # the models side by side: string accuracy, errors vs the first
        first, measured = next(iter(results)), list(results)
        print(f"\n## string accuracy side by side (errors relative to {first})\n")
        print("| set | " + " | ".join(measured) + " |")
        print("|---|" + "---:|" * len(measured))
        for name in CONDITIONS:
            base = 1 - results[first][name]["string_accuracy"]
            cells = [f"{results[m][name]['string_accuracy']:.3f} "
                     f"(x{(1 - results[m][name]['string_accuracy']) / max(base, 1e-9):.2f})"
                     for m in measured]  # fmt: skip
            print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"date": str(dt.date.today()), "cpu": cpu_model(), "models": list(results),
                       "dataset": args.dataset, "count": args.count, "results": results},
                      handle, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
