"""CPU training speed of the CNNs: seconds per 60,000-image epoch (forward, backward, Adam),
in fp32 / bf16 autocast, NCHW / channels_last, with each setting's time as a multiple of fp32
NCHW's. Extrapolated from timed batches. Prints the CPU and whether it has fast bf16 kernels
(what ``precision=auto`` decides on: without them bf16 is emulated).

    python benchmarks/cnn_epoch_benchmark.py --models seed-cnn fast-cnn
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import mnistlab
from mnistlab.models.cnn import CNN_MODELS, build_model
from mnistlab.models.inference import native_bf16
from mnistlab.runs import cpu_model


def epoch_seconds(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    bf16: bool,
    channels_last: bool,
    batch: int,
    timed: int,
) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(name).to(memory_format=fmt).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)

    def step(i: int) -> None:
        j = (i * batch) % (len(x) - batch)
        xb = x[j : j + batch].contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(xb), y[j : j + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(3):  # warm-up: allocations, oneDNN kernel selection
        step(i)
    start = time.perf_counter()
    for i in range(timed):
        step(i)
    return (time.perf_counter() - start) * (60000 // batch) / timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CNN_MODELS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--timed", type=int, default=60, help="timed batches per setting")
    args = parser.parse_args()
    images, labels = mnistlab.load_dataset("mnist-mini", "train").arrays()
    x = ((torch.from_numpy(images).float() / 255 - 0.1307) / 0.3081).unsqueeze(1)
    y = torch.from_numpy(labels)
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, fast bf16 kernels: "
          f"{'yes' if native_bf16(torch.device('cpu')) else 'no (emulated)'}")  # fmt: skip
    for name in args.models:
        base = None
        for bf16 in (False, True):
            for channels_last in (False, True):
                seconds = epoch_seconds(name, x, y, bf16, channels_last, args.batch, args.timed)
                base = base or seconds
                print(
                    f"{name:13s} bf16={bf16!s:5s} channels_last={channels_last!s:5s} "
                    f"{seconds:6.2f} s/epoch  x{seconds / base:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
