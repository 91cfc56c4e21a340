"""Training a CNN (any ``nn.Module`` on 28x28 images) into a run folder: data and model
set-up around the one training loop (:func:`mnistlab.training.loop.fit`), then the test
evaluation, the model file and the report. ``train_model`` reads top to bottom.

The data path (:mod:`mnistlab.training.data`): a split is put on the device once as uint8;
each epoch a seeded permutation picks the batches, which are augmented as uint8 on the device,
then normalized with the training split's mean and std. Every random stream is re-derived from
``(seed, epoch)``, so a run resumed from a checkpoint ends with exactly the weights of an
uninterrupted run on the same device. See ``docs/training.md``.

Distributed data-parallel: under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1) each
process trains a DistributedDataParallel replica (gloo on the CPU, nccl on CUDA); every global
batch of ``batch_size`` images is split across the ranks, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import gc
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mnistlab.data import DatasetSplit, get_spec
from mnistlab.errors import MnistlabError, unknown_name
from mnistlab.evaluation.figures import plot_training_curves
from mnistlab.evaluation.report import ReportSection, write_report
from mnistlab.features.augment import augment_batch, resolve_augment
from mnistlab.models.cnn import CNN_MODELS, build_model, cnn_from_file, write_cnn_model
from mnistlab.models.files import TORCH_FORMAT, read_model_file
from mnistlab.models.inference import Normalization
from mnistlab.runs import (
    check_out_dir,
    new_run_dir,
    prepare_out_dir,
    read_json,
    write_json,
    write_run_record,
)
from mnistlab.training import checkpoint as ckpt
from mnistlab.training.adversarial import pgd_training_inputs
from mnistlab.training.callbacks import (
    BestEpoch,
    BestWeights,
    EarlyStopping,
    ProgressBar,
    StepCurve,
    Validation,
)
from mnistlab.training.config import RUN_KEYS, TrainConfig
from mnistlab.training.data import (
    DeviceSplit,
    EpochBatches,
    check_train_split,
    load_training_data,
    steps_per_epoch,
)
from mnistlab.training.loggers import bind_loggers, finish_loggers
from mnistlab.training.loop import Callback, StepOutput, fit
from mnistlab.training.optim import Schedule, make_optimizer
from mnistlab.training.runtime import (
    Distributed,
    autocast,
    precision_in_use,
    process_group,
    resolve_device,
    run_threads,
    sync,
    training_settings,
    tune_cpu_allocator,
    warm_up_imports,
)

EVAL_BATCH = 2048  # images per forward pass when evaluating (no gradients: memory is small)
CURVE_POINTS = 100  # points of the training curves over a whole run (training_curves.png)

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

    def _repr_html_(self) -> str:  # Jupyter: the run's summary and figures
        from mnistlab.runs import open_run

        return open_run(self.run_dir)._repr_html_()


@dataclass
class TrainingData:
    """A run's data, loaded once: the splits, and the training and validation images on the
    device as uint8 with the training split's normalization."""

    train: DatasetSplit
    val: DatasetSplit | None
    test: DatasetSplit
    norm: Normalization
    train_data: DeviceSplit
    val_data: DeviceSplit | None


def schedule_of(config: TrainConfig, total_steps: int) -> Schedule:
    """The learning-rate schedule a :class:`TrainConfig` describes."""
    return Schedule(
        lr=config.lr,
        total_steps=total_steps,
        kind=config.schedule,
        warmup=config.warmup,
        final_lr=config.final_lr,
        epochs=config.epochs,
        step_epochs=config.step_epochs,
        step_gamma=config.step_gamma,
    )


def optimizer_of(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer a :class:`TrainConfig` describes, over ``model``'s trainable weights."""
    return make_optimizer(
        model,
        config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
    )


def default_model_factory(name: str, num_classes: int) -> nn.Module:
    """``mnistlab.models.cnn.build_model``."""

    return build_model(name, num_classes=num_classes)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DeviceSplit,
    norm: Normalization,
    channels_last: bool = False,
    precision: str = "fp32",
) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy (no label smoothing), accuracy and probabilities ``(N, classes)``
    (float64 numpy) of ``model`` on ``data``, in eval mode."""
    model.eval()
    device = data.images.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    probabilities = []
    for start in range(0, len(data), EVAL_BATCH):
        x = norm(data.images[start : start + EVAL_BATCH], channels_last)
        y = data.labels[start : start + EVAL_BATCH]
        with autocast(device, precision):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        probabilities.append(torch.softmax(logits, dim=1).double().cpu())
    probs = torch.cat(probabilities).numpy()
    accuracy = float((probs.argmax(1) == data.labels.cpu().numpy()).mean())
    return float(loss_sum) / len(data), accuracy, probs


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
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train a neural network, evaluate it on the test split and write its run folder.

    Args:
        config: the hyper-parameters (default ``TrainConfig()``). With ``resume``, leave it
            None (the run's ``config.json`` is used) or pass that same config.
        out: the run folder (default: a new folder under ``runs_root``, ``$MNISTLAB_RUNS`` or
            ``./runs``); ``overwrite`` lets it replace a run or use a non-empty folder.
        resume: a run folder to continue from its last checkpoint (``checkpoint/``).
        home: dataset cache root.
        model_factory: ``factory(config.model, num_classes)`` -> a fresh ``nn.Module``
            (default ``mnistlab.models.cnn.build_model``). A resumed run needs the same one.
        progress: show the config and a progress bar.
        train_split: train on these images and labels instead of ``config.dataset``'s training
            split; the test split is still ``config.dataset``'s. ``config.json`` records its
            SHA-256 and ``train_source`` under ``train_data``; a resumed run needs the same split.
        callbacks: more hooks into the loop, after validation (loggers: mnistlab.training.loggers).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this with the same arguments
    (docs/training.md, "Distributed training"); ranks other than 0 write nothing.

    Returns:
        A :class:`TrainResult`. ``train_seconds`` runs from just before the model is built to
        just after the last optimizer step, without validation, checkpoints and metrics.

    Raises:
        TrainingInterrupted: Ctrl-C; a checkpoint was written first (resume with ``resume``).
        MnistlabError: bad config, a resume folder without a valid checkpoint, ...
    """
    from rich.console import Console

    ddp = Distributed.from_env()
    console = Console(quiet=not (progress and ddp.main), highlight=False)
    # -- 1. the config: given, or the interrupted run's (checked against the data given)
    config, hashed = _run_config(config, resume, train_split, train_source)
    if resume is None:  # a wrong name or --out fails here, before the run folder exists
        _check_names(config, out, overwrite, home, model_factory)
    # CPU threads: as configured, or chosen from the CPUs free now (kept when resuming)
    threads, why = run_threads(config.num_threads, resume)
    with (
        process_group(ddp, resolve_device(config.device)) as device,
        training_settings(threads, device),
    ):
        run_dir = Path(resume).expanduser() if resume is not None else None
        if resume is None:  # rank 0 makes the run folder; the others learn its path
            if ddp.main:
                run_dir = (
                    prepare_out_dir(out, overwrite)
                    if out is not None
                    else new_run_dir(f"{config.model}-{config.dataset}", runs_root)
                )
            run_dir = Path(ddp.broadcast(str(run_dir)))
        # -- 2. data: loaded once, kept on the device as uint8 (rank 0 first: it may download)
        data = _load_data(config, home, train_split, ddp, device)
        n_train = len(data.train_data)
        batches = steps_per_epoch(n_train, config.batch_size)
        used, warning = precision_in_use(device, config.precision)
        if resume is None and ddp.main:
            _write_run_config(
                run_dir, config, data, ddp, (train_split, train_source), home, (threads, used)
            )
        console.print(f"[bold]training[/] {config.model} on {config.dataset} -> {run_dir}"
                      + (f"\n[yellow]warning:[/] {warning}" if warning else ""))  # fmt: skip
        console.print(
            f"{n_train:,} train / {len(data.val) if data.val else 0:,} val images on {device} "
            f"in {used}, {batches} steps/epoch, {threads} threads ({why})"
            + (f" on {ddp.world} processes" if ddp.active else "")
            + "; config: " + ", ".join(f"{k}={v}" for k, v in config.to_dict().items())
        )  # fmt: skip
        # -- 3. model and optimizer (train_seconds starts here)
        warm_up_imports()
        if device.type == "cpu":
            tune_cpu_allocator()
        sync(device)
        clock_start = time.perf_counter()
        torch.manual_seed(config.seed)
        model = (model_factory or default_model_factory)(config.model, len(data.train.class_names))
        model = model.to(device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = optimizer_of(model, config)
        forward = torch.compile(model) if config.compile else model
        # DDP averages the gradients across ranks in backward(); evaluation uses `forward`
        # directly (a DDP forward on one rank alone would wait for the others).
        train_forward = (
            DistributedDataParallel(forward, device_ids=[device] if device.type == "cuda" else None)
            if ddp.active
            else forward
        )
        if resume is not None:
            _refuse_finished(run_dir)
        # -- 4. the loop, with validation, early stopping and best weights as callbacks
        hooks, best = _callbacks(config, forward, data, progress, (callbacks, run_dir, ddp))
        result = fit(
            model,
            optimizer,
            cnn_step(config, model, train_forward, data.train_data, data.norm, ddp),
            schedule=schedule_of(config, config.epochs * batches),
            epochs=config.epochs,
            steps_per_epoch=batches,
            seed=config.seed,
            device=device,
            run_dir=run_dir,
            checkpoint_config=hashed,
            resume=resume is not None,
            callbacks=hooks,
            grad_clip=config.grad_clip,
            ddp=ddp,
            clock_start=clock_start,
            resume_hint=f"mnistlab train --resume {run_dir}",
            console=console,
        )
        # -- 5. the final model, its test evaluation and the report (rank 0)
        test_accuracy, metrics, report = float("nan"), {}, {}
        if ddp.main:
            test_accuracy, metrics, report = _finish(run_dir, config, model, data, result, best,
                                                     device, ddp, console, hooks)  # fmt: skip
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
        train_seconds=result.train_seconds,
        epochs_run=len(result.history),
        stopped_early=result.stopped_early,
        best_epoch=metrics["best_epoch"],
        history=result.history,
        report=report,
        model=model,
    )


def cnn_step(
    config: TrainConfig,
    model: nn.Module,
    forward: nn.Module,
    train: DeviceSplit,
    norm: Normalization,
    ddp: Distributed | None = None,
) -> Any:
    """The step function of CNN training: a batch of the epoch's permutation (this rank's
    share under DDP), augmented with the epoch's generator, optionally replaced by PGD
    adversarial examples, through ``forward``; cross-entropy with label smoothing."""
    ddp = ddp or Distributed()
    device = train.images.device
    n_train = len(train)
    batch = min(config.batch_size, n_train)  # the global batch, split across the ranks
    augment = resolve_augment(config.augment) if config.augment else None
    batches = EpochBatches(n_train, config.seed, batch)

    def step(epoch: int, b: int, generator: torch.Generator) -> StepOutput:
        # Under DDP each rank takes every world-th image of the global batch.
        idx = batches(epoch, b)[ddp.rank :: ddp.world].to(device)
        images, y = train.images[idx], train.labels[idx]
        if augment is not None:
            images = augment_batch(images, augment, generator)
        x = norm(images, config.channels_last)
        if config.adversarial_eps:  # learn from PGD attacks on the batch instead
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
                autocast=autocast(device, config.precision),
            )
        with autocast(device, config.precision):
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
        correct = (logits.detach().argmax(1) == y).sum()
        return StepOutput(loss, len(y), {"accuracy": correct})

    return step


# ---------------------------------------------------------------------------- helpers


def _run_config(
    config: TrainConfig | None,
    resume: str | os.PathLike[str] | None,
    train_split: DatasetSplit | None,
    train_source: dict[str, Any] | None,
) -> tuple[TrainConfig, dict[str, Any]]:
    """The run's config and the dict its checkpoints are tied to; for a resumed run, the
    saved one, checked against ``config`` and ``train_split`` if given."""
    if train_source is not None and train_split is None:
        raise MnistlabError("train_source describes a train_split: pass both or neither")
    if resume is None:
        config = config or TrainConfig()
        return config, config.to_dict()
    run_dir = Path(resume).expanduser()
    saved = read_json(run_dir, "config.json")
    if saved.get("kind") != "deep":
        raise MnistlabError(f"{run_dir} is not a deep-learning run (kind {saved.get('kind')!r})")
    saved_config = TrainConfig.from_dict({k: v for k, v in saved.items() if k not in RUN_KEYS})
    if config is not None and config.to_dict() != saved_config.to_dict():
        raise MnistlabError(
            f"the config given differs from {run_dir / 'config.json'}",
            hint="a resumed run keeps its config; pass config=None",
        )
    recorded = saved.get("train_data")
    if recorded is not None and train_split is None:
        raise MnistlabError(
            f"{run_dir} trained on data of its own ({recorded.get('source', 'train_split')}), "
            "not on a dataset's training split; it cannot be resumed without that data",
            hint=recorded.get("resume_hint", "pass the same train_split to train_model"),
        )
    if recorded is not None and split_sha256(train_split) != recorded.get("sha256"):
        raise MnistlabError(
            f"the training data given differs from the data {run_dir} was trained on "
            "(SHA-256 of images and labels)",
            hint="resume with the same train_split, or start a new run",
        )
    if recorded is None and train_split is not None:
        raise MnistlabError(
            f"{run_dir} trained on {saved_config.dataset}'s training split: do not pass train_split"
        )
    # Checkpoints are tied to the config by a hash. A run saved before a TrainConfig field was
    # added lacks that key (it ran with the field's default, which from_dict filled in): hash
    # only the keys its config.json has, so adding a field never orphans a checkpoint.
    hashed = {k: v for k, v in saved_config.to_dict().items() if k in saved}
    return saved_config, hashed


def _check_names(
    config: TrainConfig,
    out: str | os.PathLike[str] | None,
    overwrite: bool,
    home: str | os.PathLike[str] | None,
    model_factory: ModelFactory | None,
) -> None:
    get_spec(config.dataset, home)
    if out is not None:
        check_out_dir(out, overwrite)
    if model_factory is None and config.model not in CNN_MODELS:
        raise unknown_name("model", config.model, tuple(CNN_MODELS))


def _refuse_finished(run_dir: Path) -> None:
    state = ckpt.read_state(run_dir / "checkpoint")
    if state.get("finished") and (run_dir / "metrics.json").exists():
        raise MnistlabError(
            f"{run_dir} finished training already; nothing to resume",
            hint="start a new run, or `mnistlab evaluate` this one",
        )


def _load_data(
    config: TrainConfig,
    home: str | os.PathLike[str] | None,
    train_split: DatasetSplit | None,
    ddp: Distributed,
    device: torch.device,
) -> TrainingData:
    if not ddp.main:
        ddp.barrier()
    train, val, test = load_training_data(config, home, train_split)
    if ddp.main:
        ddp.barrier()
    if train_split is not None:
        check_train_split(train_split, test)
    val_data = DeviceSplit.from_split(val, device) if val is not None else None
    norm = Normalization.of(train.images)
    return TrainingData(train, val, test, norm, DeviceSplit.from_split(train, device), val_data)


def _write_run_config(
    run_dir: Path,
    config: TrainConfig,
    data: TrainingData,
    ddp: Distributed,
    given: tuple[DatasetSplit | None, dict[str, Any] | None],
    home: str | os.PathLike[str] | None,
    runtime: tuple[int, str],
) -> None:
    train_split, train_source = given  # training data given instead of the dataset's split
    threads, precision_used = runtime
    run_config = {
        "kind": "deep",
        **config.to_dict(),
        "num_train": len(data.train),
        "num_val": len(data.val) if data.val is not None else 0,
        "num_test": len(data.test),
        "normalization": {"mean": data.norm.mean, "std": data.norm.std},
        "threads": threads,
        "precision_used": precision_used,  # what "auto" became on this machine
    }
    if ddp.active:
        run_config["world_size"] = ddp.world
    if config.generated_digits:
        from mnistlab.data.synthetic import fonts_record

        run_config["generated"] = {**fonts_record(), "train_sha256": split_sha256(data.train)}
    if train_split is not None:
        run_config["train_data"] = {
            **(train_source or {}),
            "sha256": split_sha256(train_split),
            "num_images": len(train_split),
        }
    write_run_record(run_dir, run_config, [config.dataset], home)


def _callbacks(
    config: TrainConfig,
    forward: nn.Module,
    data: TrainingData,
    progress: bool,
    extra: tuple[Sequence[Callback], Path, Distributed],
) -> tuple[list[Callback], BestEpoch]:
    """Validation (every rank evaluates the whole validation split, so all take the same
    early-stopping and best-epoch decisions without communicating), the best epoch, early
    stopping, best weights, the step curve, the callbacks given to :func:`train_model` (its
    loggers bound to the run; only rank 0 logs), and the progress bar, in that order."""
    evaluate_val = None
    if data.val_data is not None:

        def evaluate_val() -> tuple[float, float]:
            loss, accuracy, _ = evaluate(
                forward, data.val_data, data.norm, config.channels_last, config.precision
            )
            return loss, accuracy

    best = BestEpoch(config.monitor)
    callbacks: list[Callback] = [Validation(evaluate_val), best]
    if config.early_stopping is not None:
        callbacks.append(EarlyStopping(config.monitor, config.early_stopping))
    if config.select_best:
        callbacks.append(BestWeights(config.monitor))
    steps = config.epochs * steps_per_epoch(len(data.train_data), config.batch_size)
    curve = StepCurve(max(1, steps // CURVE_POINTS))
    given, run_dir, ddp = extra
    given = bind_loggers(given, run_dir, config.to_dict(), enabled=ddp.main)
    return [*callbacks, curve, *given, ProgressBar(progress)], best


def _finish(
    run_dir: Path,
    config: TrainConfig,
    model: nn.Module,
    data: TrainingData,
    result: Any,
    best: BestEpoch,
    device: torch.device,
    ddp: Distributed,
    console: Any,
    callbacks: Sequence[Callback] = (),
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """Evaluate the final model on the test split; write the model, metrics.json, the curves
    and the report; then let the loggers among ``callbacks`` log the complete run folder."""

    test_data = DeviceSplit.from_split(data.test, device)
    test_loss, test_accuracy, probabilities = evaluate(
        model, test_data, data.norm, config.channels_last, config.precision
    )
    history = result.history
    metrics = {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "train_seconds": result.train_seconds,
        "epochs_run": len(history),
        "steps": result.step,
        "stopped_early": result.stopped_early,
        "best_epoch": best.best["epoch"] if best.best else None,
        "best_" + config.monitor: best.best["value"] if best.best else None,
        "final_train_loss": history[-1]["train_loss"],
        "final_val_accuracy": history[-1].get("val_accuracy"),
        "num_train": len(data.train),
        "num_val": len(data.val) if data.val is not None else 0,
        "num_test": len(data.test),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if ddp.active:
        metrics["world_size"] = ddp.world
    _write_model(run_dir / "model", model, config, list(data.train.class_names), data.norm, metrics)
    curves = plot_training_curves(history, run_dir / "training_curves.png")
    report = write_report(
        run_dir,
        images=data.test.images,
        labels=data.test.labels,
        probabilities=probabilities,
        class_names=list(data.train.class_names),
        dataset=config.dataset,
        model=config.model,
        train_seconds=result.train_seconds,
        extra={
            "kind": "deep",
            "epochs_run": len(history),
            "stopped_early": result.stopped_early,
            "best_epoch": metrics["best_epoch"],
            "test_loss": test_loss,
            "seed": config.seed,
            "device": str(device),
            "num_train": len(data.train),
        },
        sections=[
            ReportSection(
                "Training curves",
                figure=curves,
                caption="Loss and accuracy during training: the training values every few "
                "steps and averaged over each epoch's (augmented) batches, validation values "
                "at the epoch's end. "
                "The training accuracy is lower than the test accuracy: it is measured on "
                "augmented images (and a smoothed-label loss) while the weights are still "
                "learning, the test accuracy on clean images with the final weights.",
            )
        ],
    )
    write_json(run_dir, "metrics.json", metrics)
    finish_loggers(callbacks)
    console.print(
        f"[bold]test accuracy {test_accuracy:.4f}[/]  train {result.train_seconds:.2f}s  "
        f"({len(history)} epochs) -> {run_dir}"
    )
    return test_accuracy, metrics, report


def _write_model(
    folder: Path,
    model: nn.Module,
    config: TrainConfig,
    class_names: list[str],
    norm: Normalization,
    metrics: dict[str, Any],
) -> None:
    """``model.safetensors`` (the weights) and ``model.json`` (how to rebuild and feed it)."""
    write_cnn_model(folder, model, architecture=config.model, class_names=class_names,
                    normalization=(norm.mean, norm.std), config=config.to_dict(),
                    metrics=metrics)  # fmt: skip


def load_trained_model(
    model_dir: str | os.PathLike[str], model_factory: ModelFactory | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model written by :func:`train_model` (``<run>/model`` or the run folder),
    read and hash-checked once (:func:`mnistlab.models.files.read_model_file`).

    Returns:
        ``(model, meta)``: the module on the CPU in eval mode, and ``model.json``.

    Raises:
        MnistlabError: missing files, another format, or weights whose SHA-256 differs from
            ``model.json``'s.
    """
    model_file = read_model_file(model_dir, [TORCH_FORMAT])
    return cnn_from_file(model_file, model_factory), model_file.manifest
