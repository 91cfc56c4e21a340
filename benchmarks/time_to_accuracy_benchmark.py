"""Time to 99 % MNIST test accuracy: mnistlab's default recipe (10 seeds) and its 99.5 % recipe
(5 seeds) vs the tutorial's Keras recipe (Keras 3 on the torch backend), a plain PyTorch
one-epoch loop (fp32 and bf16) and a loop in the style of pytorch/examples, all in one run on
the same machine, plus the busy-machine runs, how mnistlab's time scales with batch size and
thread count, and the physical floor (an epoch's FLOPs at the measured matrix-product rate).

    python benchmarks/time_to_accuracy_benchmark.py --seeds 10 --fast-seeds 5 --busy-seeds 3
    python benchmarks/time_to_accuracy_benchmark.py --device cuda --peers reference torch-loop

What each contender's time covers (data already loaded in memory, test evaluations excluded):

* **mnistlab**: ``train_seconds`` of :func:`mnistlab.training.train_model` on the default recipe
  (``fast-cnn``): from just before the model is built to just after the last optimizer step. The
  recipe is one-shot (it is not stopped when it reaches the target): its time to 99 % is its whole
  training time, counted only for seeds whose final test accuracy is >= the target. The same for
  ``fast-cnn-wide/speed-99.5`` against 99.5 %.
* **plain PyTorch loop** (``reference``, ``reference-bf16``): the speed issue's reference, a
  219k-parameter net trained for exactly one epoch; its epoch's time is shown whatever its
  accuracy.
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
from mnistlab.models.inference import resolve_precision
from mnistlab.runs import cpu_model
from mnistlab.training import get_deep_recipe, train_model
from mnistlab.training.engine import EVAL_BATCH
from mnistlab.training.runtime import sync

TUTORIAL_MAX_EPOCHS = 10


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


# --------------------------------------------------------------------------------- mnistlab
def run_mnistlab(
    seeds: list[int],
    target: float,
    overrides: dict,
    threads: int,
    recipe: tuple[str, str] = ("fast-cnn", "default"),
    inference: bool = True,
) -> dict:
    """Train a recipe (default: ``fast-cnn/default``) once per seed; returns per-seed accuracy
    and train_seconds, their means and minimum, and the last model's inference images/s."""
    rows = []
    model, name = recipe
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            config = get_deep_recipe(model, name, seed=seed, num_threads=threads, **overrides)
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
                f"  {model}/{name} seed {seed}: acc {result.test_accuracy:.4f}"
                f"  train_seconds {result.train_seconds:.2f}",
                flush=True,
            )
            last_model = result.model
        speed = (
            inference_images_per_second(last_model, config.precision, config.channels_last)
            if inference
            else {}
        )
    accs = [r["test_accuracy"] for r in rows]
    times = [r["train_seconds"] for r in rows]
    return {
        "name": f"mnistlab {model}/{name}",
        "config": config.to_dict(),
        "target": target,
        "runs": rows,
        "mean_accuracy": statistics.mean(accs),
        "min_accuracy": min(accs),
        "mean_train_seconds": statistics.mean(times),
        "time_to_target": statistics.mean(times) if statistics.mean(accs) >= target else None,
        "seeds_reaching_target": sum(a >= target for a in accs),
        "inference_images_per_second": speed,
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
            runs[name] = run_mnistlab(seeds, target, {}, threads, inference=False)
        return runs
    finally:
        burner.kill()
        burner.wait()


def inference_images_per_second(
    model: torch.nn.Module, precision: str, channels_last: bool, repeats: int = 3
) -> dict[str, float]:
    """Images/s of the model on the 10,000 test images (batches of EVAL_BATCH), best of repeats,
    on the device the model is on."""
    device = next(model.parameters()).device
    test = load_dataset("mnist", "test")
    x = torch.from_numpy(test.images).unsqueeze(1).float().div_(255).sub_(0.1307).div_(0.3081)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.to(device)
    model = model.eval().to(memory_format=fmt)
    out = {}
    used = resolve_precision(device, precision)  # "auto": bf16 only where it is fast
    for label, bf16 in (("fp32", False), ("bf16", used == "bf16")):
        if label == "bf16" and not bf16:
            continue
        best = float("inf")
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                for i in range(0, len(x), EVAL_BATCH):
                    model(x[i : i + EVAL_BATCH].contiguous(memory_format=fmt))
            sync(device)
            best = min(best, time.perf_counter() - start)
        out[label] = len(x) / best
    return out


# ------------------------------------------------------------------------ the physical floor
def flops_per_epoch(model_name: str, batch_size: int, n_train: int = 60_000) -> float:
    """Floating-point operations of one training epoch (forward + backward, every conv and
    linear layer; elementwise ops not counted), by torch's FlopCounterMode on one step."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(model_name).train()
    x = torch.randn(batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() * (n_train // batch_size)


def _gflops(rate: float) -> str:
    """A FLOP/s rate in GFLOP/s: whole numbers, or two significant digits below 10 (bf16
    emulated on a CPU without bf16 kernels runs at a fraction of one)."""
    return f"{rate / 1e9:,.0f}" if rate >= 1e10 else f"{rate / 1e9:.2g}"


def matmul_flops_per_second(dtype: torch.dtype, device: torch.device, size: int = 2048) -> float:
    """The machine's matrix-product rate: a size^3 product, best of 5 after 2 warm-ups."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for i in range(7):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def physical_floor(model_name: str, batch_size: int, device: torch.device) -> dict:
    """An epoch's FLOPs and the time they take at the machine's measured fp32 and bf16 matrix
    rates (docs/benchmarks.md: "the bf16 floor")."""
    flops = flops_per_epoch(model_name, batch_size)
    size = 8192 if device.type == "cuda" else 2048
    rates = {
        name: matmul_flops_per_second(dtype, device, size)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    return {
        "flops_per_epoch": flops,
        "matmul_flops_per_second": rates,
        "floor_seconds": {name: flops / rate for name, rate in rates.items()},
    }


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


def keras_tutorial(seed: int, x_train, y_train, x_test, y_test, device) -> tuple:
    """The tutorial CNN and recipe (docs/recipes.md) in Keras 3 (on its own choice of device)."""
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


def torch_examples_loop(seed: int, x_train, y_train, x_test, y_test, device) -> tuple:
    """pytorch/examples' mnist/main.py loop and defaults, on mnistlab's seed-cnn (batches are
    moved to the device one by one, as there)."""

    def setup():
        torch.manual_seed(seed)
        model = build_model("seed-cnn").to(device)
        train_loader = torch.utils.data.DataLoader(
            _ExamplesDataset(x_train, y_train), batch_size=64, shuffle=True
        )
        test_loader = torch.utils.data.DataLoader(_ExamplesDataset(x_test, y_test), batch_size=1000)
        optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)

        def train_epoch(_epoch: int) -> None:
            model.train()
            for data, target in train_loader:
                data, target = data.to(device), target.to(device)
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
                    data, target = data.to(device), target.to(device)
                    correct += (model(data).argmax(1) == target).sum().item()
            return correct / len(test_loader.dataset)

        return train_epoch, test_accuracy

    return setup


class _ReferenceNet(torch.nn.Module):
    """The reference net of the speed issue: conv 24 5x5, conv 32 3x3 (each ReLU + 2x2 max-pool),
    a 256-unit hidden layer; 219k parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 24, 5)  # 28 -> 24 -> pool 12
        self.conv2 = torch.nn.Conv2d(24, 32, 3)  # 12 -> 10 -> pool 5
        self.fc1 = torch.nn.Linear(32 * 5 * 5, 256)
        self.fc2 = torch.nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def reference_loop(
    seed: int, x_train, y_train, x_test, y_test, device, bf16: bool = False
) -> tuple:
    """A plain PyTorch one-epoch loop, the fastest simple recipe the speed issue found: the
    reference net, Adam lr 0.01 with betas (0.7, 0.9), one-cycle over one epoch, batch 256,
    the data held as normalized float tensors on the device, shuffled by index each epoch."""
    xtr = torch.from_numpy(x_train).float().div(255).sub(0.1307).div(0.3081).unsqueeze(1)
    xte = torch.from_numpy(x_test).float().div(255).sub(0.1307).div(0.3081).unsqueeze(1)
    xtr, xte = xtr.to(device), xte.to(device)
    ytr = torch.from_numpy(y_train.astype(np.int64)).to(device)
    yte = torch.from_numpy(y_test.astype(np.int64)).to(device)
    batch = 256
    steps = len(xtr) // batch

    def setup():
        torch.manual_seed(seed)
        model = _ReferenceNet().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.7, 0.9))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.01, total_steps=steps)

        def train_epoch(_epoch: int) -> None:
            model.train()
            order = torch.randperm(len(xtr), device=device)
            for i in range(steps):
                idx = order[i * batch : (i + 1) * batch]
                with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            sync(device)

        def test_accuracy() -> float:
            model.eval()
            with torch.no_grad():
                pred = torch.cat(
                    [model(xte[i : i + 2048]).argmax(1) for i in range(0, 10_000, 2048)]
                )
            return float((pred == yte).float().mean())

        return train_epoch, test_accuracy

    return setup


def reference_loop_bf16(seed: int, x_train, y_train, x_test, y_test, device) -> tuple:
    """:func:`reference_loop` under bf16 autocast."""
    return reference_loop(seed, x_train, y_train, x_test, y_test, device, bf16=True)


PEERS = {
    "reference": ("plain PyTorch one-epoch loop, fp32 (reference net)", reference_loop),
    "reference-bf16": ("plain PyTorch one-epoch loop, bf16 (reference net)", reference_loop_bf16),
    "keras": ("Keras 3 tutorial recipe (seed CNN)", keras_tutorial),
    "torch-loop": ("PyTorch loop, pytorch/examples style (seed-cnn)", torch_examples_loop),
}
ONE_EPOCH_PEERS = ("reference", "reference-bf16")  # their schedule spans exactly one epoch


# --------------------------------------------------------------------------------- scaling
def scaling(
    batch_sizes: list[int], thread_counts: list[int], seed: int, overrides: dict
) -> list[dict]:
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
                **overrides,
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
    parser.add_argument("--seeds", type=int, default=10, help="default-recipe seeds (0..N-1)")
    parser.add_argument(
        "--fast-seeds", type=int, default=5, help="seeds of the speed-99.5 recipe (0 = skip it)"
    )
    parser.add_argument("--peer-seeds", type=int, default=1, help="seeds per peer")
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--max-epochs", type=int, default=TUTORIAL_MAX_EPOCHS)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (every contender)")
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
    device = torch.device(args.device)
    overrides = {"device": args.device}

    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(
        f"mnistlab {mnistlab.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {cpu}" + (f", {gpu}" if gpu else ""),
        flush=True,
    )
    print("mnistlab default recipe:", flush=True)
    ours = run_mnistlab(list(range(args.seeds)), args.target, overrides, args.threads)
    results: dict = {"mnistlab": ours, "peers": {}, "cpu": cpu, "gpu": gpu}
    if args.fast_seeds:
        print("mnistlab speed-99.5 recipe:", flush=True)
        results["speed-99.5"] = run_mnistlab(
            list(range(args.fast_seeds)),
            0.995,
            overrides,
            args.threads,
            recipe=("fast-cnn-wide", "speed-99.5"),
            inference=False,
        )
    for key in args.peers:
        name, make = PEERS[key]
        print(f"{name}:", flush=True)
        runs = []
        epochs = 1 if key in ONE_EPOCH_PEERS else args.max_epochs
        for seed in range(args.peer_seeds):
            setup = make(seed, train.images, train.labels, test.images, test.labels, device)
            runs.append(_epochs_to_target(key, setup, args.target, epochs))
        reached = [r["time_to_target"] for r in runs if r["time_to_target"] is not None]
        results["peers"][key] = {
            "name": name,
            "runs": runs,
            "time_to_target": statistics.mean(reached) if reached else None,
            "epoch_seconds": statistics.mean(r["history"][0]["seconds"] for r in runs),
            "runs_reaching_target": len(reached),
        }
    if args.busy_seeds:
        results["busy"] = busy_machine(list(range(args.busy_seeds)), args.target)
    if args.batch_sizes or args.thread_counts:
        print("scaling (default recipe, one seed):", flush=True)
        results["scaling"] = scaling(args.batch_sizes, args.thread_counts, 0, overrides)
    config = ours["config"]
    results["floor"] = physical_floor(config["model"], config["batch_size"], device)
    results["floor"]["precision_used"] = resolve_precision(device, config["precision"])
    _print_summary(args, results)
    if args.json:
        results["machine"] = {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        args.json.write_text(json.dumps(results, indent=2, default=str))


def _print_summary(args: argparse.Namespace, results: dict) -> None:
    ours = results["mnistlab"]
    print()
    print(f"default recipe (fast-cnn), {len(ours['runs'])} seeds, on {args.device}:")
    print("  seed  test acc  train_seconds")
    for r in ours["runs"]:
        print(f"  {r['seed']:4d}  {r['test_accuracy']:.4f}  {r['train_seconds']:13.2f}")
    accs = [r["test_accuracy"] for r in ours["runs"]]
    print(
        f"  mean  {ours['mean_accuracy']:.4f}  {ours['mean_train_seconds']:13.2f}"
        f"   min acc {min(accs):.4f}, {ours['seeds_reaching_target']}/{len(accs)}"
        f" seeds >= {args.target:.1%}"
    )
    fast = results.get("speed-99.5")
    if fast:
        print(
            f"speed-99.5 recipe (fast-cnn-wide), {len(fast['runs'])} seeds: mean acc "
            f"{fast['mean_accuracy']:.4f} (min {fast['min_accuracy']:.4f}), mean train_seconds "
            f"{fast['mean_train_seconds']:.2f} "
            + "("
            + ", ".join(f"{r['test_accuracy']:.4f}" for r in fast["runs"])
            + ")"
        )
    print()
    print(f"time to {args.target:.1%} MNIST test accuracy (data in memory, evaluation excluded)")
    base = ours["mean_train_seconds"]
    print(f"  {'mnistlab default (fast-cnn), mean':52s} {base:7.2f} s  1.0x")
    for key, peer in results["peers"].items():
        t = peer["time_to_target"]
        if key in ONE_EPOCH_PEERS:  # one-epoch recipes: their epoch time, reached or not
            acc = peer["runs"][0]["history"][0]["test_accuracy"]
            e = peer["epoch_seconds"]
            print(
                f"  {peer['name']:52s} {e:7.2f} s  (acc {acc:.4f}; mnistlab takes "
                f"{base / e:.2f}x its time)"
            )
            continue
        shown = f"{t:7.2f} s" if t else f"not reached in {args.max_epochs} epochs"
        ratio = f"{t / base:.1f}x mnistlab's time" if t else "-"
        print(f"  {peer['name']:52s} {shown}  ({ratio})")
    if "busy" in results:
        for name, run in results["busy"].items():
            busy = run["mean_train_seconds"]
            print(f"  busy machine, {name:38s} {busy:7.2f} s  ({busy / base:.1f}x the idle time)")
    floor = results["floor"]
    gf = floor["flops_per_epoch"] / 1e9
    rates = floor["matmul_flops_per_second"]
    secs = floor["floor_seconds"]
    used = floor["precision_used"]
    print(
        f"physical floor: {gf:.0f} GFLOP per epoch; matrix products at "
        f"{_gflops(rates['fp32'])} GFLOP/s fp32, {_gflops(rates['bf16'])} GFLOP/s bf16 -> an "
        f"epoch is {secs['fp32']:.2f} s fp32, {secs['bf16']:.2f} s bf16 of arithmetic; "
        f"the default recipe computes in {used} here and runs at {secs[used] / base:.0%} of "
        f"the {used} floor's speed"
    )
    inf = ours["inference_images_per_second"]
    print(
        "mnistlab training images/s: "
        + _spread([r["images_per_second"] for r in ours["runs"]])
        + "; inference images/s: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in inf.items())
    )


if __name__ == "__main__":
    main()
