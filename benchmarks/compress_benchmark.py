"""Compression on this CPU: fp32 (PyTorch and ONNX Runtime) vs int8 (dynamic, static) vs pruned.

For each run folder, ``mnistlab.shipping.compress.compress_model`` (the code behind
``mnistlab compress``) exports the model to ONNX (verified against PyTorch on the whole test
split), quantizes it to int8 with ONNX Runtime (dynamic; static with 1,000 calibration images
from the training split), prunes 50 % of the conv/linear weights by magnitude and fine-tunes
one epoch, then measures every variant with the same thread count: file size (raw and gzip),
latency of one image and of a batch of 256 (median and best of the repeated calls: on a shared
machine the best is the least disturbed), throughput (256 / best batch latency), and accuracy
on the whole test split. Prints a Markdown table per run.

    python benchmarks/compress_benchmark.py RUN [RUN ...] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

from mnistlab.runs import environment_info
from mnistlab.shipping.compress import compress_model


def markdown(rows: list[dict]) -> str:
    base = rows[0]
    onnx_fp32 = next(r for r in rows if r["backend"] == "onnxruntime" and r["variant"] == "fp32")
    lines = [
        "| variant | runtime | size | gzip | size vs ONNX fp32 | batch 1 median / best "
        "| batch 256 median / best | images/s (best) | test accuracy |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {'PyTorch' if r['backend'] == 'torch' else 'ONNX Runtime'} "
            f"| {r['size_bytes'] / 1024:.1f} kB | {r['gzip_bytes'] / 1024:.1f} kB "
            f"| {onnx_fp32['size_bytes'] / r['size_bytes']:.2f}x smaller "
            f"| {r['latency_b1_ms']:.3f} / {r['latency_b1_best_ms']:.3f} ms "
            f"| {r['latency_b256_ms']:.2f} / {r['latency_b256_best_ms']:.2f} ms "
            f"| {256e3 / r['latency_b256_best_ms']:,.0f} "
            f"| {r['accuracy']:.4f} ({100 * (r['accuracy'] - base['accuracy']):+.2f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="deep run folders")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0, help="per timing")
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    for run in args.runs:
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="mnistlab-compress-bench-") as tmp:
            result = compress_model(
                run,
                Path(tmp) / "compressed",
                prune_amount=args.prune,
                finetune_epochs=args.finetune_epochs,
                threads=args.threads,
                seconds=args.seconds,
                log=lambda message: print(message, flush=True),
            )
            verification = json.loads((result.folder / "fp32" / "model.json").read_text())[
                "verification"
            ]
        load_after = os.getloadavg()
        print(
            f"\n{run} ({args.threads} thread(s), load average {load_before[0]:.1f} → "
            f"{load_after[0]:.1f})\n"
        )
        print(markdown(result.rows))
        print(
            f"\nONNX check: max |logit difference| {verification['max_abs_diff']:.2e} on "
            f"{verification['images']:,} test images, accuracy "
            f"{verification['candidate_accuracy']:.4f} "
            f"(PyTorch {verification['reference_accuracy']:.4f})\n",
            flush=True,
        )
        results.append(
            {
                "run": str(run),
                "rows": result.rows,
                "verification": verification,
                "load_average_before": load_before,
                "load_average_after": load_after,
            }
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": dt.date.today().isoformat(),
                    "threads": args.threads,
                    "environment": environment_info(),
                    "results": results,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
