"""Time to 99 % MNIST test accuracy: mnistlab's default recipe vs the tutorial's Keras recipe
(Keras 3 on the torch backend) vs a plain PyTorch loop in the style of pytorch/examples, all in
one run on the same machine, plus mnistlab's training/inference images/s and how its time scales
with batch size and thread count.

    KERAS_BACKEND=torch python benchmarks/time_to_accuracy_benchmark.py --seeds 5
    python benchmarks/time_to_accuracy_benchmark.py --seeds 5 --peer-seeds 1 --json out.json

What each contender's time covers (data already loaded in memory, test evaluations excluded):

* **mnistlab**: ``train_seconds`` of :func:`mnistlab.training.train_model` on the default recipe
  (``fast-cnn``): from just before the model is built to just after the last optimizer step. The
  recipe is one-shot (it is not stopped when it reaches the target): its time to 99 % is its whole
  training time, counted only for seeds whose final test accuracy is >= the target.
* **Keras 3** (torch backend): the tutorial CNN and recipe (docs/recipes.md: Adam 1e-3,
  batch 128, categorical cross-entropy on one-hot labels, up to 10 epochs), trained one epoch per
  ``fit`` call; the clock runs from building the model to the end of the epoch after which the test
  accuracy first reaches the target.
* **PyTorch loop** (pytorch/examples' ``mnist/main.py`` style, on ``seed-cnn``): a per-sample
  ``Dataset`` doing ToTensor + Normalize((0.1307,), (0.3081,)) in ``__getitem__``, a shuffling
  ``DataLoader`` (no workers, as on CPU), Adadelta lr 1.0 with StepLR(gamma 0.7) and batch 64 —
  pytorch/examples' own defaults — timed like Keras.

Peers need ``pip install -r benchmarks/requirements.txt`` (keras); torch's is the one mnistlab uses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import torch
import torch.nn.functional as F

import mnistlab
from mnistlab.data import load_dataset
from mnistlab.models.cnn import build_model
from mnistlab.training import get_deep_recipe, train_model
from mnistlab.training.engine import EVAL_BATCH

TUTORIAL_MAX_EPOCHS = 10


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


# --------------------------------------------------------------------------------- mnistlab
def run_mnistlab(seeds: list[int], target: float, overrides: dict, threads: int) -> dict:
    """Train the default recipe once per seed; returns per-seed accuracy and train_seconds."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            config = get_deep_recipe("fast-cnn", seed=seed, num_threads=threads, **overrides)
            result = train_model(config, out=Path(tmp) / f"s{seed}", progress=False)
            rows.append(
                {
                    "seed": seed,
                    "test_accuracy": result.test_accuracy,
                    "train_seconds": result.train_seconds,
                    "images_per_second": 60_000 * result.epochs_run / result.train_seconds,
                }
            )
            print(
                f"  mnistlab seed {seed}: acc {result.test_accuracy:.4f}"
                f"  train_seconds {result.train_seconds:.2f}",
                flush=True,
            )
            last_model = result.model
        inference = inference_images_per_second(last_model, config.precision, config.channels_last)
    accs = [r["test_accuracy"] for r in rows]
    times = [r["train_seconds"] for r in rows]
    return {
        "name": "mnistlab default (fast-cnn)",
        "config": config.to_dict(),
        "runs": rows,
        "mean_accuracy": statistics.mean(accs),
        "mean_train_seconds": statistics.mean(times),
        "time_to_target": statistics.mean(times) if statistics.mean(accs) >= target else None,
        "seeds_reaching_target": sum(a >= target for a in accs),
        "inference_images_per_second": inference,
    }


def busy_machine(seeds: list[int], target: float) -> dict[str, dict]:
    """The default recipe while another process keeps one CPU busy (``while True: pass``):
    with the automatic thread choice, then with 2 threads forced (the old default)."""
    import subprocess

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # let the burner show up in /proc/stat
        runs = {}
        for name, threads in (("auto threads", 0), ("2 threads forced", 2)):
            print(f"busy machine, {name}:", flush=True)
            runs[name] = run_mnistlab(seeds, target, {}, threads)
        return runs
    finally:
        burner.kill()
        burner.wait()


def inference_images_per_second(
    model: torch.nn.Module, precision: str, channels_last: bool, repeats: int = 3
) -> dict[str, float]:
    """Images/s of the model on the 10,000 test images (batches of EVAL_BATCH), best of repeats."""
    test = load_dataset("mnist", "test")
    x = torch.from_numpy(test.images).unsqueeze(1).float().div_(255).sub_(0.1307).div_(0.3081)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.eval().to(memory_format=fmt)
    out = {}
    for label, bf16 in (("fp32", False), ("bf16", precision == "bf16")):
        if label == "bf16" and not bf16:
            continue
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                for i in range(0, len(x), EVAL_BATCH):
                    model(x[i : i + EVAL_BATCH].contiguous(memory_format=fmt))
            best = min(best, time.perf_counter() - start)
        out[label] = len(x) / best
    return out


# --------------------------------------------------------------------------------- peers
def _epochs_to_target(
    name: str,
    setup: Callable[[], tuple[Callable[[int], None], Callable[[], float]]],
    target: float,
    max_epochs: int,
) -> dict:
    """Time ``train_epoch`` calls until ``test_accuracy()`` >= target (evaluation not timed)."""
    start = time.perf_counter()
    train_epoch, test_accuracy = setup()  # model building is inside the clock
    elapsed = time.perf_counter() - start
    history = []
    for epoch in range(1, max_epochs + 1):
        start = time.perf_counter()
        train_epoch(epoch)
        elapsed += time.perf_counter() - start
        accuracy = test_accuracy()
        history.append({"epoch": epoch, "seconds": elapsed, "test_accuracy": accuracy})
        print(f"  {name} epoch {epoch}: acc {accuracy:.4f}  {elapsed:.1f} s", flush=True)
        if accuracy >= target:
            return {"time_to_target": elapsed, "epochs": epoch, "history": history}
    return {"time_to_target": None, "epochs": max_epochs, "history": history}


def keras_tutorial(seed: int, x_train, y_train, x_test, y_test) -> tuple:
    """The tutorial CNN and recipe (docs/recipes.md) in Keras 3."""
    import keras

    xtr = (x_train.astype("float32") / 255.0)[..., None]
    xte = (x_test.astype("float32") / 255.0)[..., None]
    ytr = keras.utils.to_categorical(y_train, 10)

    def setup():
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(32, 3, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Conv2D(64, 3, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dense(128, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

        def train_epoch(_epoch: int) -> None:
            model.fit(xtr, ytr, batch_size=128, epochs=1, shuffle=True, verbose=0)

        def test_accuracy() -> float:
            probs = model.predict(xte, batch_size=1000, verbose=0)
            return float((probs.argmax(1) == y_test).mean())

        return train_epoch, test_accuracy

    return setup


class _ExamplesDataset(torch.utils.data.Dataset):
    """What torchvision's MNIST + ToTensor + Normalize do per sample, without torchvision."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i]).float().div(255).unsqueeze(0)  # ToTensor
        return (x - 0.1307) / 0.3081, int(self.labels[i])  # Normalize


def torch_examples_loop(seed: int, x_train, y_train, x_test, y_test) -> tuple:
    """pytorch/examples' mnist/main.py loop and defaults, on mnistlab's seed-cnn."""

    def setup():
        torch.manual_seed(seed)
        model = build_model("seed-cnn")
        train_loader = torch.utils.data.DataLoader(
            _ExamplesDataset(x_train, y_train), batch_size=64, shuffle=True
        )
        test_loader = torch.utils.data.DataLoader(_ExamplesDataset(x_test, y_test), batch_size=1000)
        optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)

        def train_epoch(_epoch: int) -> None:
            model.train()
            for data, target in train_loader:
                optimizer.zero_grad()
                loss = F.nll_loss(F.log_softmax(model(data), dim=1), target)
                loss.backward()
                optimizer.step()
            scheduler.step()

        def test_accuracy() -> float:
            model.eval()
            correct = 0
            with torch.no_grad():
                for data, target in test_loader:
                    correct += (model(data).argmax(1) == target).sum().item()
            return correct / len(test_loader.dataset)

        return train_epoch, test_accuracy

    return setup


PEERS = {
    "keras": ("Keras 3 tutorial recipe (seed CNN)", keras_tutorial),
    "torch-loop": ("PyTorch loop, pytorch/examples style (seed-cnn)", torch_examples_loop),
}


# --------------------------------------------------------------------------------- scaling
def scaling(batch_sizes: list[int], thread_counts: list[int], seed: int) -> list[dict]:
    """One default-recipe run per batch size (lr scaled linearly from 256) and per thread count."""
    base = get_deep_recipe("fast-cnn")
    rows = []
    settings = [(b, 0) for b in batch_sizes] + [(base.batch_size, t) for t in thread_counts]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (batch, threads) in enumerate(settings):
            config = get_deep_recipe(
                "fast-cnn",
                seed=seed,
                batch_size=batch,
                lr=base.lr * batch / base.batch_size,
                num_threads=threads,
            )
            result = train_model(config, out=Path(tmp) / str(i), progress=False)
            row = {
                "batch_size": batch,
                "threads": threads or torch.get_num_threads(),
                "lr": config.lr,
                "train_seconds": result.train_seconds,
                "images_per_second": 60_000 * result.epochs_run / result.train_seconds,
                "test_accuracy": result.test_accuracy,
            }
            rows.append(row)
            print(
                f"  batch {batch:5d} threads {row['threads']}: {row['train_seconds']:.2f} s"
                f"  {row['images_per_second']:,.0f} img/s  acc {row['test_accuracy']:.4f}",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="mnistlab seeds (0..N-1)")
    parser.add_argument("--peer-seeds", type=int, default=1, help="seeds per peer")
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--max-epochs", type=int, default=TUTORIAL_MAX_EPOCHS)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[128, 256, 512, 1024])
    parser.add_argument("--thread-counts", type=int, nargs="*", default=[1, 2])
    parser.add_argument(
        "--busy-seeds",
        type=int,
        default=0,
        help="also train the default recipe this many times while a CPU-bound process runs "
        "(threads chosen automatically, then forced to 2 threads as before)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    print(
        f"mnistlab {mnistlab.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
        flush=True,
    )
    print("mnistlab default recipe:", flush=True)
    ours = run_mnistlab(list(range(args.seeds)), args.target, {}, args.threads)
    results = {"mnistlab": ours, "peers": {}}
    for key in args.peers:
        name, make = PEERS[key]
        print(f"{name}:", flush=True)
        runs = []
        for seed in range(args.peer_seeds):
            setup = make(seed, train.images, train.labels, test.images, test.labels)
            runs.append(_epochs_to_target(key, setup, args.target, args.max_epochs))
        reached = [r["time_to_target"] for r in runs if r["time_to_target"] is not None]
        results["peers"][key] = {
            "name": name,
            "runs": runs,
            "time_to_target": statistics.mean(reached) if reached else None,
            "runs_reaching_target": len(reached),
        }
    if args.busy_seeds:
        results["busy"] = busy_machine(list(range(args.busy_seeds)), args.target)
    print("scaling (default recipe, one seed):", flush=True)
    results["scaling"] = scaling(args.batch_sizes, args.thread_counts, seed=0)

    print()
    print(f"time to {args.target:.1%} MNIST test accuracy (data in memory, evaluation excluded)")
    mean_acc = ours["mean_accuracy"]
    times = _spread([r["train_seconds"] for r in ours["runs"]])
    print(
        f"  {'mnistlab default (fast-cnn)':52s} {times}"
        f" s  mean acc {mean_acc:.4f} over {args.seeds} seeds"
        f" ({ours['seeds_reaching_target']}/{args.seeds} >= target)"
    )
    base = ours["time_to_target"]
    for peer in results["peers"].values():
        t = peer["time_to_target"]
        ratio = f"{t / base:.1f}x mnistlab's time" if t and base else "-"
        shown = f"{t:.1f} s" if t else f"not reached in {args.max_epochs} epochs"
        print(f"  {peer['name']:52s} {shown}  ({ratio})")
    if "busy" in results:
        idle = ours["mean_train_seconds"]
        for name, run in results["busy"].items():
            busy = run["mean_train_seconds"]
            print(f"  busy machine, {name:38s} {busy:.2f} s  ({busy / idle:.1f}x the idle time)")
    inf = ours["inference_images_per_second"]
    print(
        "mnistlab training images/s: "
        + _spread([r["images_per_second"] for r in ours["runs"]])
        + "; inference images/s: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in inf.items())
    )
    if args.json:
        results["machine"] = {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
