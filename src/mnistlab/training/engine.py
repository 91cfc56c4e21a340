"""The deep-learning training engine: one config dataclass, one readable training loop.

The fast data path (after airbench): a split is put on the device once as a uint8 tensor.
Each epoch a seeded permutation picks the batches; a batch is gathered, augmented as uint8 on
the device, then converted to float, scaled by 1/255 and normalized with the training split's
mean and std. There is no per-sample Python DataLoader.

Reproducibility: every random stream is re-derived from ``(seed, epoch)`` at each epoch start
(the batch permutation, the augmentation generator, torch's global RNG for dropout), so a run
resumed from a checkpoint ends with exactly the weights of an uninterrupted run on the same
device. See ``docs/training.md``.

Distributed data-parallel: under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1) each
process trains a DistributedDataParallel replica (gloo on the CPU, nccl on CUDA); every global
batch of ``batch_size`` images is split across the ranks, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mnistlab.data import DatasetSplit, get_spec, load_dataset
from mnistlab.data.splits import validation_split
from mnistlab.errors import MnistlabError, unknown_name
from mnistlab.features.augment import augment_batch, resolve_augment
from mnistlab.io import atomic_write_bytes, atomic_write_json, sha256_file
from mnistlab.runs import (
    check_out_dir,
    environment_info,
    new_run_dir,
    prepare_out_dir,
    read_json,
    write_json,
)
from mnistlab.training import checkpoint as ckpt
from mnistlab.training.config import RUN_KEYS as RUN_KEYS  # re-exported
from mnistlab.training.config import (
    SCHEDULES,
)
from mnistlab.training.config import TrainConfig as TrainConfig  # re-exported

EVAL_BATCH = 2048  # images per forward pass when evaluating (no gradients: memory is small)

ModelFactory = Callable[[str, int], nn.Module]
"""Builds a fresh model: ``factory(name, num_classes)`` -> a module taking float
``(N, 1, 28, 28)`` normalized images and returning logits ``(N, num_classes)``."""

def split_sha256(split: DatasetSplit) -> str:
    """SHA-256 of a split's images and labels (uint8 images, int64 labels, in order): the
    identity of training data passed to :func:`train_model` as ``train_split``."""
    digest = hashlib.sha256(np.ascontiguousarray(split.images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


@dataclass
class TrainResult:
    """What :func:`train_model` returns."""

    run_dir: Path
    test_accuracy: float
    train_seconds: float  # see train_model: model creation to last optimizer step, no validation
    epochs_run: int  # epochs trained (fewer than config.epochs after early stopping)
    stopped_early: bool
    best_epoch: int | None  # 1-based epoch of the best validation metric; None without validation
    history: list[dict[str, Any]]  # the lines of metrics.jsonl
    report: dict[str, Any]
    model: nn.Module = field(repr=False)  # the final model (on the training device, eval mode)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a resumable checkpoint was written."""

    def __init__(self, run_dir: Path, epoch: int, step: int) -> None:
        self.run_dir = run_dir
        self.message = (
            f"training interrupted in epoch {epoch}, after step {step}; checkpoint written to "
            f"{run_dir / 'checkpoint'}"
        )
        self.hint = f"resume with: mnistlab train --resume {run_dir}"
        super().__init__(f"{self.message}\n{self.hint}")


# ---------------------------------------------------------------------------- schedule


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based) out of ``total_steps``.

    All schedules first warm up linearly over ``round(warmup * total_steps)`` steps, from
    ``lr / warmup_steps`` (step 0) to ``lr``. Then, with ``p`` the fraction of the remaining
    steps done (0 at the first step after warmup) and ``floor = final_lr * lr``:

    - ``constant``: ``lr``;
    - ``onecycle``: linear decay, ``lr + (floor - lr) * p`` (warmup + decay = one cycle);
    - ``cosine``: ``floor + (lr - floor) * (1 + cos(pi p)) / 2``;
    - ``step``: ``lr * step_gamma ** k`` with ``k`` the number of completed
      ``step_epochs``-epoch blocks (counted from step 0, warmup included).
    """
    peak = config.lr
    warmup_steps = round(config.warmup * total_steps)
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if config.schedule == "constant":
        return peak
    if config.schedule == "step":
        decays = (step * config.epochs) // (config.step_epochs * total_steps)
        return peak * config.step_gamma**decays
    p = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    floor = config.final_lr * peak
    if config.schedule == "onecycle":
        return peak + (floor - peak) * p
    if config.schedule == "cosine":
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * p))
    raise MnistlabError(f"unknown schedule {config.schedule!r}; use one of {SCHEDULES}")


# ---------------------------------------------------------------------------- data on device


@dataclass
class DeviceSplit:
    """A split held on the device: uint8 images ``(N, 1, 28, 28)`` and int64 labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    split: str  # "train", "val" or "test"

    @classmethod
    def from_split(cls, data: DatasetSplit, device: torch.device) -> DeviceSplit:
        images = torch.from_numpy(np.ascontiguousarray(data.images)).unsqueeze(1).to(device)
        labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64)).to(device)
        return cls(images, labels, data.split)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Normalization:
    """Per-pixel standardization ``(x / 255 - mean) / std`` with the training split's stats."""

    mean: float
    std: float

    @classmethod
    def of(cls, images: np.ndarray) -> Normalization:
        """Mean and std of uint8 ``images`` on the [0, 1] scale (MNIST: 0.1307, 0.3081)."""
        x = np.asarray(images, dtype=np.float64) / 255.0
        return cls(float(x.mean()), float(x.std()))

    def __call__(self, x_uint8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        x = x_uint8.float().mul_(1 / (255 * self.std)).sub_(self.mean / self.std)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def derive_seed(seed: int, epoch: int, stream: str) -> int:
    """A 63-bit seed for one random stream of one epoch, fixed by ``(seed, epoch, stream)``."""
    key = {"permutation": 0, "augment": 1, "torch": 2}[stream]
    state = np.random.SeedSequence([seed, epoch, key]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & ((1 << 63) - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the ``n`` training images in epoch ``epoch`` (0-based), on the CPU."""
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, "permutation"))
    return torch.randperm(n, generator=generator)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (at least one: a split smaller than a batch is one batch)."""
    return max(1, n // batch_size)


# ---------------------------------------------------------------------------- model pieces


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu; others are checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MnistlabError(
            "device 'cuda' requested but CUDA is not available", hint="--device cpu"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise MnistlabError("device 'mps' requested but MPS is not available", hint="--device cpu")
    return torch.device(name)


def default_model_factory(name: str, num_classes: int) -> nn.Module:
    """``mnistlab.models.cnn.build_model``."""
    from mnistlab.models.cnn import build_model

    return build_model(name, num_classes=num_classes)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD; weight decay on weights with dim >= 2 (not biases, norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999))
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0
    )


def _autocast(device: torch.device, precision: str) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DeviceSplit,
    norm: Normalization,
    config: TrainConfig,
) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy (no label smoothing), accuracy and probabilities ``(N, classes)``
    (float64 numpy) of ``model`` on ``data``, in eval mode."""
    model.eval()
    device = data.images.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    probabilities = []
    for start in range(0, len(data), EVAL_BATCH):
        x = norm(data.images[start : start + EVAL_BATCH], config.channels_last)
        y = data.labels[start : start + EVAL_BATCH]
        with _autocast(device, config.precision):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        probabilities.append(torch.softmax(logits, dim=1).double().cpu())
    probs = torch.cat(probabilities).numpy()
    accuracy = float((probs.argmax(1) == data.labels.cpu().numpy()).mean())
    return float(loss_sum) / len(data), accuracy, probs


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameter numbers


def tune_cpu_allocator() -> bool:
    """Start glibc's malloc where its own heuristics end up after a while; returns whether done.

    glibc serves blocks above a threshold (128 KiB at start) with a fresh mmap and gives them
    back with munmap on free; each free of such a block raises the threshold, up to 32 MiB.
    A training step allocates and frees activations of a few MiB, so until the threshold has
    risen every step pays page faults on new pages: the first run in a process measured ~25 %
    slower per step than the next one (fast-cnn on 2 CPU cores, docs/benchmarks.md). Setting
    the thresholds to glibc's 64-bit maxima (mmap 32 MiB, trim 64 MiB) from the start removes
    that. Process-wide, harmless elsewhere; a no-op off glibc (macOS, Windows, musl).
    """
    import ctypes
    import ctypes.util

    if not hasattr(os, "confstr") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
        return libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20) == 1 and ok
    except (OSError, AttributeError):
        return False


@contextmanager
def _torch_settings(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Fixed thread count and deterministic algorithms for the run; restored afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda":  # cuBLAS needs this before its first use to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


@contextmanager
def _stop_on_sigint() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag the loop checks between steps (the second one raises
    at once). Only in the main thread; elsewhere Ctrl-C raises as usual."""
    flag = {"stop": False}

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _rng_states(device: torch.device) -> dict[str, list[int] | None]:
    return {
        "torch_cpu": torch.get_rng_state().tolist(),
        "torch_cuda": torch.cuda.get_rng_state(device).tolist() if device.type == "cuda" else None,
    }


def _set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(torch.tensor(states["torch_cpu"], dtype=torch.uint8))
    if device.type == "cuda" and states.get("torch_cuda") is not None:
        torch.cuda.set_rng_state(torch.tensor(states["torch_cuda"], dtype=torch.uint8), device)


# ---------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (``world == 1``: a plain single process)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        """Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (set by torchrun)."""
        env = os.environ
        return cls(
            int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0))
        )

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs and writes the run folder."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def is_main_process() -> bool:
    """False in the torchrun processes of rank > 0 (which must not log or write)."""
    return Distributed.from_env().main


@contextmanager
def _process_group(ddp: Distributed, device: torch.device) -> Iterator[torch.device]:
    """Init the process group (nccl on CUDA, gloo otherwise) and yield this rank's device;
    the group is destroyed on the way out, also on errors. A no-op for a single process."""
    if not ddp.active:
        yield device
        return
    if device.type == "mps":
        raise MnistlabError("distributed training supports cpu and cuda, not mps")
    if device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    initialized_here = not dist.is_initialized()
    if initialized_here:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
        if initialized_here:
            # Every rank finishes its last collective before any tears the group down; without
            # this, rank 0 exiting first could abort a peer still inside a gloo receive.
            dist.barrier()
    finally:
        if initialized_here:
            dist.destroy_process_group()


# ---------------------------------------------------------------------------- the run


def check_train_split(split: DatasetSplit, test: DatasetSplit) -> None:
    """Refuse training data that does not fit the test split's dataset: images that are not
    uint8 ``(N, 28, 28)``, labels that are not integers in ``range(classes)``, or other
    class names (raises :class:`MnistlabError`)."""
    images, labels = np.asarray(split.images), np.asarray(split.labels)
    hint = "train_split: uint8 images (N, 28, 28), int labels in range(classes), N >= 1"
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise MnistlabError(
            f"train_split images are {images.dtype} {images.shape}, not uint8 (N, 28, 28)", hint
        )
    if labels.shape != (len(images),) or len(images) == 0:
        raise MnistlabError(
            f"train_split has {len(images)} images and labels of shape {labels.shape}", hint
        )
    if not np.issubdtype(labels.dtype, np.integer) or not (
        labels.min() >= 0 and labels.max() < len(test.class_names)
    ):
        raise MnistlabError(
            f"train_split labels must be integers in 0..{len(test.class_names) - 1} "
            f"({test.dataset} has {len(test.class_names)} classes); got {labels.dtype} "
            f"{labels.min()}..{labels.max()}",
            hint,
        )
    if tuple(split.class_names) != tuple(test.class_names):
        raise MnistlabError(
            f"the training data's classes {list(split.class_names)} differ from "
            f"{test.dataset}'s {list(test.class_names)}",
            hint="train_split must use the class names of the test split's dataset",
        )


def load_training_data(
    config: TrainConfig,
    home: str | os.PathLike[str] | None = None,
    train_split: DatasetSplit | None = None,
) -> tuple[DatasetSplit, DatasetSplit | None, DatasetSplit]:
    """``(train, val, test)``: ``val`` is carved out of the training split (stratified, seeded
    with ``config.seed``) when ``val_size`` is set, else None. The test split is only used for
    the final evaluation. ``train_split`` replaces ``config.dataset``'s training split."""
    train = (
        train_split if train_split is not None else load_dataset(config.dataset, "train", home=home)
    )
    test = load_dataset(config.dataset, "test", home=home)
    val = None
    if config.val_size:
        train, val = validation_split(train, config.val_size, seed=config.seed)
    return train, val, test


def train_model(
    config: TrainConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    model_factory: ModelFactory | None = None,
    progress: bool = True,
    train_split: DatasetSplit | None = None,
    train_source: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a neural network, evaluate it on the test split and write its run folder.

    Args:
        config: the hyper-parameters (default ``TrainConfig()``). With ``resume``, leave it
            None (the run's ``config.json`` is used) or pass that same config.
        out: the run folder (default: a new folder under ``runs_root``).
        runs_root: root of new run folders (default ``$MNISTLAB_RUNS`` or ``./runs``).
        overwrite: allow ``out`` to replace an existing run.
        resume: a run folder to continue from its last checkpoint (``checkpoint/``).
        home: dataset cache root.
        model_factory: ``factory(config.model, num_classes)`` -> a fresh ``nn.Module``
            (default ``mnistlab.models.cnn.build_model``). A resumed run needs the same one.
        progress: show the config and a rich progress bar.
        train_split: train on these images and labels instead of ``config.dataset``'s training
            split (e.g. pseudo-labels, see ``mnistlab.pretraining.selftrain``); the test split
            is still ``config.dataset``'s, and ``class_names`` must match it. ``config.json``
            records its SHA-256 (:func:`split_sha256`) under ``train_data``; a resumed run
            needs the same split.
        train_source: more facts to record under ``train_data`` in ``config.json`` (where the
            split came from); only with ``train_split``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this with the same arguments:
    see ``docs/training.md``, "Distributed training". Ranks other than 0 write nothing and
    return rank 0's report and test accuracy.

    Returns:
        A :class:`TrainResult`. ``train_seconds`` is the wall time from just before the model
        is built to just after the last optimizer step, minus the time spent on per-epoch
        validation and on writing checkpoints and metrics; data loading and the transfer of
        the data to the device come before it, the final test evaluation after. A resumed run
        adds up its sessions (including, for each, rebuilding the model and reading the
        checkpoint).

    Raises:
        TrainingInterrupted: Ctrl-C; a checkpoint was written first (resume with ``resume``).
        MnistlabError: bad config, a resume folder without a valid checkpoint, ...
    """
    from rich.console import Console

    ddp = Distributed.from_env()
    console = Console(quiet=not (progress and ddp.main), highlight=False)
    factory = model_factory or default_model_factory

    # -- 1. the run folder and its config
    if resume is not None:
        run_dir = Path(resume).expanduser()
        saved = read_json(run_dir, "config.json")
        if saved.get("kind") != "deep":
            raise MnistlabError(
                f"{run_dir} is not a deep-learning run (kind {saved.get('kind')!r})"
            )
        saved_config = TrainConfig.from_dict({k: v for k, v in saved.items() if k not in RUN_KEYS})
        if config is not None and config.to_dict() != saved_config.to_dict():
            raise MnistlabError(
                f"the config given differs from {run_dir / 'config.json'}",
                hint="a resumed run keeps its config; pass config=None",
            )
        config = saved_config
        recorded = saved.get("train_data")
        if recorded is not None and train_split is None:
            raise MnistlabError(
                f"{run_dir} trained on data of its own ({recorded.get('source', 'train_split')}), "
                "not on a dataset's training split; it cannot be resumed without that data",
                hint=recorded.get("resume_hint", "pass the same train_split to train_model"),
            )
        if recorded is not None and train_split is not None:
            if split_sha256(train_split) != recorded.get("sha256"):
                raise MnistlabError(
                    f"the training data given differs from the data {run_dir} was trained on "
                    "(SHA-256 of images and labels)",
                    hint="resume with the same train_split, or start a new run",
                )
        elif train_split is not None:
            raise MnistlabError(
                f"{run_dir} trained on {config.dataset}'s training split: do not pass train_split"
            )
    else:
        config = config or TrainConfig()
    if train_source is not None and train_split is None:
        raise MnistlabError("train_source describes a train_split: pass both or neither")
    config_dict = config.to_dict()
    # Checkpoints are tied to the config by a hash. A run saved before a TrainConfig field was
    # added lacks that key (it ran with the field's default, which from_dict filled in): hash
    # only the keys its config.json has, so adding a field never orphans a checkpoint.
    hashed_config = (
        {k: v for k, v in config_dict.items() if k in saved} if resume is not None else config_dict
    )

    if resume is None:  # a wrong name or --out fails here, before the run folder exists
        get_spec(config.dataset, home)
        if out is not None:
            check_out_dir(out, overwrite)
        if model_factory is None:
            from mnistlab.models.cnn import CNN_MODELS

            if config.model not in CNN_MODELS:
                raise unknown_name("model", config.model, tuple(CNN_MODELS))

    # Under DDP, Ctrl-C stops all ranks at once (no mid-epoch checkpoint): resume from the
    # last end-of-epoch checkpoint.
    sigint_guard = nullcontext({"stop": False}) if ddp.active else _stop_on_sigint()
    with (
        _process_group(ddp, resolve_device(config.device)) as device,
        _torch_settings(config, device),
        sigint_guard as sigint,
    ):
        if resume is None:  # rank 0 makes the run folder; the others learn its path
            run_dir = None
            if ddp.main:
                run_dir = (
                    prepare_out_dir(out, overwrite)
                    if out is not None
                    else new_run_dir(f"{config.model}-{config.dataset}", runs_root)
                )
            run_dir = Path(ddp.broadcast(str(run_dir)))

        # -- 2. data: loaded once, kept on the device as uint8 (rank 0 first: it may download)
        if not ddp.main:
            ddp.barrier()
        train, val, test = load_training_data(config, home, train_split)
        if ddp.main:
            ddp.barrier()
        if train_split is not None:
            check_train_split(train_split, test)
        norm = Normalization.of(train.images)
        class_names = list(train.class_names)
        train_data = DeviceSplit.from_split(train, device)
        val_data = DeviceSplit.from_split(val, device) if val is not None else None
        n_train = len(train_data)
        batches = steps_per_epoch(n_train, config.batch_size)
        batch = min(config.batch_size, n_train)  # the global batch, split across the ranks
        total_steps = config.epochs * batches
        if resume is None and ddp.main:
            run_config = {
                "kind": "deep",
                **config_dict,
                "num_train": n_train,
                "num_val": len(val) if val is not None else 0,
                "num_test": len(test),
                "normalization": {"mean": norm.mean, "std": norm.std},
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
            if ddp.active:
                run_config["world_size"] = ddp.world
            if train_split is not None:
                run_config["train_data"] = {
                    **(train_source or {}),
                    "sha256": split_sha256(train_split),
                    "num_images": len(train_split),
                }
            write_json(run_dir, "config.json", run_config)
            write_json(run_dir, "environment.json", environment_info([config.dataset], home))
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            if (run_dir / "checkpoint").is_dir():
                for stale in (run_dir / "checkpoint").iterdir():
                    stale.unlink()
        console.print(f"[bold]training[/] {config.model} on {config.dataset} -> {run_dir}")
        console.print(
            f"{n_train:,} train / {len(val) if val is not None else 0:,} val images on {device}, "
            f"{batches} steps/epoch"
            + (f" on {ddp.world} processes" if ddp.active else "")
            + "; config: "
            + ", ".join(f"{k}={v}" for k, v in config_dict.items())
        )

        # -- 3. model and optimizer (train_seconds starts here)
        # The first optimizer a process builds makes torch import torch._dynamo (~800 modules,
        # ~1.1 s on a 2-core CPU). That is Python import time, like `import torch`, not
        # training: do it before the clock starts.
        with suppress(ImportError):
            import torch._dynamo
        if device.type == "cpu":
            tune_cpu_allocator()
        _sync(device)
        session_start = time.perf_counter()
        excluded = 0.0  # validation and checkpoint seconds, not part of train_seconds
        torch.manual_seed(config.seed)
        model = factory(config.model, len(class_names)).to(device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, config)
        forward = torch.compile(model) if config.compile else model
        # DDP averages the gradients across ranks in backward(); evaluation uses `forward`
        # directly (a DDP forward on one rank alone would wait for the others).
        train_forward = (
            DistributedDataParallel(forward, device_ids=[device] if device.type == "cuda" else None)
            if ddp.active
            else forward
        )

        step, start_epoch, start_batch = 0, 0, 0
        history: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None  # {"value", "epoch"} of the monitored metric
        best_weights: dict[str, torch.Tensor] | None = None
        stale_epochs = 0
        stopped_early = finished = False
        prior_seconds = 0.0
        partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        resumed_rng: dict[str, Any] | None = None
        if resume is not None:
            state, tensors, best_weights = ckpt.load_checkpoint(
                run_dir / "checkpoint", hashed_config
            )
            if state["finished"] and (run_dir / "metrics.json").exists():
                raise MnistlabError(
                    f"{run_dir} finished training already; nothing to resume",
                    hint="start a new run, or `mnistlab evaluate` this one",
                )
            ckpt.restore(model, optimizer, state, tensors)
            step, start_epoch, start_batch = state["step"], state["epoch"], state["batch"]
            history, best = state["history"], state["best"]
            stale_epochs, prior_seconds = state["stale_epochs"], state["train_seconds"]
            stopped_early, finished = state["stopped_early"], state["finished"]
            partial = state["partial_epoch"]
            resumed_rng = state["rng"] if start_batch else None
            if ddp.main:
                metrics_lines = "".join(json.dumps(r) + "\n" for r in history)
                atomic_write_bytes(run_dir / "metrics.jsonl", metrics_lines.encode())
            console.print(f"resuming at epoch {start_epoch + 1}, step {step}")

        def train_seconds_now() -> float:
            return prior_seconds + time.perf_counter() - session_start - excluded

        def save(epoch: int, batch_in_epoch: int, finished: bool, best_changed: bool) -> None:
            state = {
                "epoch": epoch,  # 0-based epoch in progress (== epochs done when batch is 0)
                "batch": batch_in_epoch,  # batches of that epoch done
                "step": step,  # optimizer steps done
                "train_seconds": train_seconds_now(),
                "partial_epoch": partial,
                "rng": {**_rng_states(device), "augment": ckpt.generator_state(augment_gen)},
                "history": history,
                "best": best,
                "stale_epochs": stale_epochs,
                "stopped_early": stopped_early,
                "finished": finished,
            }
            ckpt.save_checkpoint(
                run_dir / "checkpoint",
                model=model,
                optimizer=optimizer,
                state=state,
                config=hashed_config,
                best_weights=best_weights,
                best_changed=best_changed,
            )

        # -- 4. the training loop
        bar = _progress_bar(console, progress)
        task = bar.add_task("train", total=total_steps, completed=step, epoch="", stats="")
        augment_gen: torch.Generator | None = None
        # Resolved once: a dict of AugmentConfig fields would otherwise be validated per batch.
        augment = resolve_augment(config.augment) if config.augment else None
        with bar:
            for epoch in range(start_epoch, config.epochs if not finished else 0):
                # Every random stream is re-derived from (seed, epoch): resuming reproduces it.
                order = epoch_permutation(n_train, config.seed, epoch)
                augment_gen = None
                if config.augment:
                    augment_gen = torch.Generator().manual_seed(
                        derive_seed(config.seed, epoch, "augment")
                    )
                torch.manual_seed(derive_seed(config.seed, epoch, "torch"))
                first = 0
                if epoch == start_epoch and start_batch:  # resuming inside this epoch
                    first = start_batch
                    _set_rng_states(resumed_rng, device)
                    if augment_gen is not None:
                        ckpt.set_generator_state(augment_gen, resumed_rng["augment"])
                else:
                    partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
                bar.update(task, epoch=f"epoch {epoch + 1}/{config.epochs}")
                # Sums start from the ones carried by a checkpoint, so the order of the
                # additions (and the float result) is the same as without the interruption.
                # Under DDP only rank 0 carries them (they are summed over the ranks).
                carried = partial if ddp.main else {"loss_sum": 0.0, "correct": 0, "seen": 0}
                loss_sum = torch.tensor(carried["loss_sum"], dtype=torch.float64, device=device)
                correct = torch.tensor(carried["correct"], dtype=torch.int64, device=device)
                seen = carried["seen"]
                epoch_start = time.perf_counter()
                model.train()
                for b in range(first, batches):
                    lr = lr_at(step, total_steps, config)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    # Under DDP each rank takes every world-th image of the global batch.
                    idx = order[b * batch : (b + 1) * batch][ddp.rank :: ddp.world].to(device)
                    images, y = train_data.images[idx], train_data.labels[idx]
                    if augment_gen is not None:
                        images = augment_batch(images, augment, augment_gen)
                    x = norm(images, config.channels_last)
                    if config.adversarial_eps:  # learn from PGD attacks on the batch instead
                        from mnistlab.robustness.attacks import pgd_training_inputs

                        x = pgd_training_inputs(
                            model,
                            images,
                            y,
                            norm.mean,
                            norm.std,
                            eps=config.adversarial_eps,
                            steps=config.adversarial_steps,
                            step_size=config.adversarial_step_size,
                            channels_last=config.channels_last,
                            autocast=_autocast(device, config.precision),
                        )
                    with _autocast(device, config.precision):
                        logits = train_forward(x)
                    loss = F.cross_entropy(
                        logits.float(), y, label_smoothing=config.label_smoothing
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    optimizer.step()
                    step += 1
                    loss_sum += loss.detach().double() * len(y)
                    correct += (logits.detach().argmax(1) == y).sum()
                    seen += len(y)
                    if sigint["stop"]:
                        _sync(device)
                        partial = _partial(partial, loss_sum, correct, seen, epoch_start)
                        save(epoch, b + 1, finished=False, best_changed=False)
                        console.print(f"[yellow]interrupted[/]: checkpoint at step {step}")
                        raise TrainingInterrupted(run_dir, epoch + 1, step)
                    if step % 10 == 0 or b == batches - 1:
                        bar.update(
                            task,
                            completed=step,
                            stats=_stats(loss_sum, correct, seen, partial, epoch_start),
                        )
                _sync(device)
                if ddp.active:  # the epoch's sums over all ranks (each image counted once)
                    ddp.all_reduce_sum(loss_sum)
                    ddp.all_reduce_sum(correct)
                    seen = int(ddp.all_reduce_sum(torch.tensor(seen, device=device)))
                partial = _partial(partial, loss_sum, correct, seen, epoch_start)
                epoch_seconds = partial["seconds"]

                # -- end of epoch: validation, early stopping, checkpoint, metrics line
                pause = time.perf_counter()
                val_loss = val_accuracy = None
                # Every rank evaluates the full validation split (identical replicas), so all
                # take the same early-stopping and best-epoch decisions without communicating.
                if val_data is not None:
                    val_loss, val_accuracy, _ = evaluate(forward, val_data, norm, config)
                record = {
                    "epoch": epoch + 1,
                    "step": step,
                    "lr": lr_at(step - 1, total_steps, config),
                    "train_loss": partial["loss_sum"] / partial["seen"],
                    "train_accuracy": partial["correct"] / partial["seen"],
                    "val_loss": val_loss,
                    "val_accuracy": val_accuracy,
                    "epoch_seconds": epoch_seconds,
                    "images_per_second": partial["seen"] / max(epoch_seconds, 1e-9),
                }
                history.append(record)
                improved = False
                if val_data is not None:
                    value = record[config.monitor]
                    higher = config.monitor == "val_accuracy"
                    if best is None or (value > best["value"] if higher else value < best["value"]):
                        best, stale_epochs, improved = {"value": value, "epoch": epoch + 1}, 0, True
                        if config.select_best:
                            best_weights = {
                                k: v.detach().clone() for k, v in model.state_dict().items()
                            }
                    else:
                        stale_epochs += 1
                    stopped_early = (
                        config.early_stopping is not None and stale_epochs >= config.early_stopping
                    )
                finished = stopped_early or epoch + 1 == config.epochs
                partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
                if ddp.main:
                    save(epoch + 1, 0, finished=finished, best_changed=improved)
                    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")
                excluded += time.perf_counter() - pause
                console.print(_epoch_line(record))
                if sigint["stop"] and not finished:
                    raise TrainingInterrupted(run_dir, epoch + 1, step)
                if stopped_early:
                    console.print(
                        f"early stopping: no {config.monitor} improvement for {stale_epochs} "
                        f"epochs (best {best['value']:.4f} at epoch {best['epoch']})"
                    )
                    break
        train_seconds = train_seconds_now()

        # -- 5. the final model, its test evaluation and the report
        if config.select_best and best_weights is not None:
            model.load_state_dict(best_weights)
        # Rank 0 alone evaluates the test split, writes the model and the report; the
        # others wait for its results.
        test_accuracy, metrics, report = float("nan"), {}, {}
        if ddp.main:
            test_data = DeviceSplit.from_split(test, device)
            test_loss, test_accuracy, probabilities = evaluate(model, test_data, norm, config)
            metrics = {
                "test_accuracy": test_accuracy,
                "test_loss": test_loss,
                "train_seconds": train_seconds,
                "epochs_run": len(history),
                "steps": step,
                "stopped_early": stopped_early,
                "best_epoch": best["epoch"] if best else None,
                "best_" + config.monitor: best["value"] if best else None,
                "final_train_loss": history[-1]["train_loss"],
                "final_val_accuracy": history[-1]["val_accuracy"],
                "num_train": n_train,
                "num_val": len(val) if val is not None else 0,
                "num_test": len(test),
                "device": str(device),
            }
            if ddp.active:
                metrics["world_size"] = ddp.world
            _write_model(run_dir / "model", model, config, class_names, norm, metrics)
            curves = _plot_curves(history, run_dir / "training_curves.png")
            from mnistlab.evaluation.report import ReportSection, write_report

            report = write_report(
                run_dir,
                images=test.images,
                labels=test.labels,
                probabilities=probabilities,
                class_names=class_names,
                dataset=config.dataset,
                model=config.model,
                train_seconds=train_seconds,
                extra={
                    "kind": "deep",
                    "epochs_run": len(history),
                    "stopped_early": stopped_early,
                    "best_epoch": metrics["best_epoch"],
                    "test_loss": test_loss,
                    "seed": config.seed,
                    "device": str(device),
                    "num_train": n_train,
                },
                sections=[
                    ReportSection(
                        "Training curves",
                        figure=curves,
                        caption="Loss and accuracy per epoch; training values are averaged over "
                        "each epoch's (augmented) batches, validation values at the epoch's end. "
                        "The training accuracy is lower than the test accuracy: it is measured on "
                        "augmented images (and a smoothed-label loss) while the weights are still "
                        "learning, the test accuracy on clean images with the final weights.",
                    )
                ],
            )
            write_json(run_dir, "metrics.json", metrics)
            console.print(
                f"[bold]test accuracy {test_accuracy:.4f}[/]  train {train_seconds:.2f}s  "
                f"({len(history)} epochs) -> {run_dir}"
            )
        test_accuracy, metrics, report = ddp.broadcast((test_accuracy, metrics, report))
        if ddp.active:
            # Free the DDP wrapper (its reducer holds gloo/nccl work objects) while the process
            # group is alive: destroyed after it, or at interpreter exit, those objects can
            # abort the process ("terminate called without an active exception", seen on a
            # rank that had finished; pytorch/pytorch PR 179291 describes the mechanism).
            del train_forward
            gc.collect()
    model.eval()
    return TrainResult(
        run_dir=run_dir,
        test_accuracy=test_accuracy,
        train_seconds=train_seconds,
        epochs_run=len(history),
        stopped_early=stopped_early,
        best_epoch=metrics["best_epoch"],
        history=history,
        report=report,
        model=model,
    )


# ---------------------------------------------------------------------------- helpers


def _partial(
    partial: dict[str, Any],
    loss_sum: torch.Tensor,
    correct: torch.Tensor,
    seen: int,
    epoch_start: float,
) -> dict[str, Any]:
    """The epoch's sums so far (``loss_sum``/``correct`` include any carried from a checkpoint;
    ``seconds`` adds this session's time to the carried seconds)."""
    return {
        "loss_sum": float(loss_sum),
        "correct": int(correct),
        "seen": seen,
        "seconds": partial["seconds"] + time.perf_counter() - epoch_start,
    }


def _stats(
    loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, partial: dict[str, Any], start: float
) -> str:
    now = _partial(partial, loss_sum, correct, seen, start)
    new = seen - partial["seen"]
    rate = new / max(time.perf_counter() - start, 1e-9)
    return (
        f"loss {now['loss_sum'] / max(seen, 1):.4f}  acc {now['correct'] / max(seen, 1):.4f}  "
        f"{rate:,.0f} img/s"
    )


def _epoch_line(record: dict[str, Any]) -> str:
    line = (
        f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  "
        f"acc {record['train_accuracy']:.4f}"
    )
    if record["val_loss"] is not None:
        line += f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}"
    return line + f"  {record['epoch_seconds']:.2f}s  {record['images_per_second']:,.0f} img/s"


def _progress_bar(console: Any, enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=True,
    )


def _plot_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Loss and accuracy per epoch, training vs validation, as a PNG."""
    from matplotlib.ticker import MaxNLocator

    from mnistlab.plotting import pyplot, save_figure

    plt = pyplot()
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], marker="o", label="train")
        if any(r[f"val_{key}"] is not None for r in history):
            ax.plot(epochs, [r[f"val_{key}"] for r in history], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


MODEL_FORMAT = "mnistlab-torch-model/1"


def _write_model(
    folder: Path,
    model: nn.Module,
    config: TrainConfig,
    class_names: list[str],
    norm: Normalization,
    metrics: dict[str, Any],
) -> None:
    """``model.safetensors`` (the weights) then ``model.json`` (how to rebuild and feed it)."""
    weights = folder / "model.safetensors"
    atomic_write_bytes(weights, ckpt.tensors_to_bytes(model.state_dict()))
    atomic_write_json(
        folder / "model.json",
        {
            "format": MODEL_FORMAT,
            "kind": "deep",
            "architecture": config.model,
            "num_classes": len(class_names),
            "class_names": class_names,
            "input": "float (N, 1, 28, 28): uint8 pixels / 255, then (x - mean) / std",
            "normalization": {"mean": norm.mean, "std": norm.std},
            "config": config.to_dict(),
            "metrics": metrics,
            "weights": weights.name,
            "weights_sha256": sha256_file(weights),
        },
    )


def load_trained_model(
    model_dir: str | os.PathLike[str], model_factory: ModelFactory | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model written by :func:`train_model` (``<run>/model`` or the run folder).

    Returns:
        ``(model, meta)``: the module on the CPU in eval mode, and ``model.json``.

    Raises:
        MnistlabError: missing files, or weights whose SHA-256 differs from ``model.json``'s.
    """
    from safetensors.torch import load as load_safetensors

    folder = Path(model_dir)
    if (folder / "model").is_dir():
        folder = folder / "model"
    meta = read_json(folder, "model.json")
    if meta.get("format") != MODEL_FORMAT:
        raise MnistlabError(f"{folder / 'model.json'}: not a deep model ({meta.get('format')!r})")
    data = (folder / meta["weights"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["weights_sha256"]:
        raise MnistlabError(f"{folder / meta['weights']}: SHA-256 differs from model.json")
    model = (model_factory or default_model_factory)(meta["architecture"], meta["num_classes"])
    try:
        model.load_state_dict(load_safetensors(data))
    except RuntimeError as exc:  # names or shapes differ: another version of the architecture
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise MnistlabError(
            f"{folder / meta['weights']}: the weights do not fit the {meta['architecture']!r} "
            f"architecture of this mnistlab ({first})",
            hint="the model was saved by another mnistlab version or with another model "
            "factory; load it with that version or factory, or train it again",
        ) from None
    return model.eval(), meta
