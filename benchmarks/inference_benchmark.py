"""Inference throughput of one model on this CPU: images per second at batch 1 and 2,048 for
PyTorch fp32, PyTorch bf16 (autocast, channels-last), ONNX Runtime fp32 and ONNX Runtime int8
(static quantization: int8 weights per channel, activations calibrated on 1,000 training
images), with the same thread count, in one run, with ratios to PyTorch fp32.

Each figure is the best of the repeated calls after a warm-up (on a shared machine the best
is the least disturbed); the median is printed beside it. Accuracy on the whole test split
checks that every variant still reads the digits.

    python benchmarks/inference_benchmark.py RUN [--threads 2] [--seconds 2] [--json OUT]

RUN: a CNN run folder (``mnistlab train``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import numpy as np

import mnistlab
from mnistlab.runs import cpu_model
from mnistlab.shipping import load_model
from mnistlab.shipping.compress import quantize_onnx, time_call
from mnistlab.shipping.onnx import export_onnx

BATCHES = (1, 2048)


def torch_forward(model, bf16: bool):
    """A call on normalized input that runs the model's module, in bf16 if asked."""
    import torch

    module = model.module.eval()
    if bf16:
        module = module.to(memory_format=torch.channels_last)

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(x)
            if not bf16:
                return module(t).numpy()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(t.contiguous(memory_format=torch.channels_last)).float().numpy()

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    fp32 = load_model(args.run, threads=args.threads)
    config = json.loads((args.run / "config.json").read_text())
    test = mnistlab.load_dataset(config.get("dataset", "mnist"), "test")
    train = mnistlab.load_dataset(config.get("dataset", "mnist"), "train")
    images = np.concatenate([test.images] * (1 + 2048 // len(test.images)))[:2048]
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_onnx(args.run, Path(tmp) / "onnx", check=False)
        onnx_fp32 = load_model(exported.onnx_path, threads=args.threads)
        rng = np.random.default_rng(0)
        calibration = train.images[rng.choice(len(train.images), 1000, replace=False)]
        int8_path = quantize_onnx(onnx_fp32, Path(tmp) / "int8", calibration=calibration)
        int8 = load_model(int8_path, threads=args.threads)
        variants = {
            "PyTorch fp32": (fp32, torch_forward(fp32, bf16=False)),
            "PyTorch bf16 (autocast, channels-last)": (fp32, torch_forward(fp32, bf16=True)),
            "ONNX Runtime fp32": (onnx_fp32, onnx_fp32.forward),
            "ONNX Runtime int8 (static)": (int8, int8.forward),
        }
        rows = {}
        for name, (model, forward) in variants.items():
            row = {}
            for batch in BATCHES:
                x = model.normalize(images[:batch])
                median, best = time_call(lambda f=forward, x=x: f(x), args.seconds)
                row[batch] = {"best_per_s": batch / best, "median_per_s": batch / median}
            logits = np.concatenate([forward(model.normalize(test.images[i : i + 2048]))
                                     for i in range(0, len(test.images), 2048)])  # fmt: skip
            row["accuracy"] = float((logits.argmax(1) == test.labels).mean())
            rows[name] = row
    print(f"# inference, {dt.date.today()}, CPU: {cpu_model()}, {args.threads} threads, load "
          f"{os.getloadavg()[0]:.2f}, model {fp32.name} ({args.run})\n")  # fmt: skip
    print("| variant | batch 1: images/s (median) | ratio | batch 2,048: images/s (median) "
          "| ratio | test accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    base = rows["PyTorch fp32"]
    for name, row in rows.items():
        cells = []
        for batch in BATCHES:
            r = row[batch]
            cells += [f"{r['best_per_s']:,.0f} ({r['median_per_s']:,.0f})",
                      f"{r['best_per_s'] / base[batch]['best_per_s']:.2f}x"]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + f" | {row['accuracy']:.4f} |")
    if args.json:
        record = {"date": str(dt.date.today()), "cpu": cpu_model(), "threads": args.threads,
                  "rows": {name: {str(k): v for k, v in row.items()} for name, row in rows.items()}}
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
