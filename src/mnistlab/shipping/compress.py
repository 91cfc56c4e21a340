"""Make a trained model smaller and faster: int8 quantization and magnitude pruning, measured.

Variants written by :func:`compress_model` (each a model folder that ``mnistlab predict`` and
``mnistlab serve`` load like any other):

* ``fp32/``: the ONNX export of the model (verified against PyTorch, see :mod:`.onnx`);
* ``int8-dynamic/``: ONNX Runtime dynamic quantization: int8 weights, activations quantized
  on the fly per batch (no calibration data);
* ``int8-static/``: ONNX Runtime static quantization in QDQ form: int8 weights (per output
  channel) and int8 activations whose ranges were calibrated on images of the *training* split;
* ``pruned/``: global magnitude (L1) pruning of every convolution and linear weight to
  ``prune_amount`` zeros, optionally fine-tuned for a few epochs with the zeros held, saved as
  safetensors (run with PyTorch; unstructured zeros shrink the file only once compressed).

:func:`measure` times every variant on the same CPU with the same thread count: file size (raw
and gzip), latency of one image and of a batch of 256 (median of repeated calls), throughput
(256 / batch latency) and accuracy on the whole test split.
"""

from __future__ import annotations

import gzip
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError, OverwriteError
from mnistlab.io import atomic_write_json
from mnistlab.runs import environment_info
from mnistlab.shipping.model import (
    ONNX_FORMAT,
    TORCH_FORMAT,
    ShippedModel,
    load_model,
    write_model,
)
from mnistlab.training import checkpoint as ckpt
from mnistlab.training.callbacks import Hooks
from mnistlab.training.config import TrainConfig
from mnistlab.training.data import EpochBatches, load_training_data
from mnistlab.training.loop import StepOutput, fit
from mnistlab.training.optim import Schedule, make_optimizer
from mnistlab.training.runtime import torch_threads

__all__ = [
    "METHODS",
    "CompressResult",
    "compress_model",
    "measure",
    "prune_model",
    "quantize_onnx",
]

METHODS = ("int8-dynamic", "int8-static", "pruned")


@dataclass
class CompressResult:
    """What :func:`compress_model` wrote and measured."""

    folder: Path  # holds one sub-folder per variant and compress.json
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per variant, see measure()


def quantize_onnx(
    fp32: ShippedModel,
    out: str | os.PathLike[str],
    *,
    mode: str = "static",
    calibration: np.ndarray | None = None,
) -> Path:
    """Quantize an ONNX model folder's weights (and, in ``static`` mode, activations) to int8.

    Args:
        fp32: an ONNX :class:`ShippedModel` (see :func:`mnistlab.shipping.onnx.export_onnx`).
        out: the model folder to write.
        mode: ``"dynamic"`` or ``"static"``.
        calibration: uint8 ``(N, 28, 28)`` images for ``static`` (e.g. 1,000 training images).

    Returns:
        The new manifest's path.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    if fp32.backend != "onnxruntime":
        raise MnistlabError("quantize_onnx needs an ONNX model (export it first)")
    if mode not in ("dynamic", "static"):
        raise MnistlabError(f"unknown quantization mode {mode!r}; use dynamic or static")
    source = fp32.folder / fp32.manifest["weights"]
    with tempfile.TemporaryDirectory(prefix="mnistlab-quant-") as tmp, _quiet_logging():
        prepared = Path(tmp) / "prepared.onnx"
        target = Path(tmp) / "int8.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
            details: dict[str, Any] = {"mode": "dynamic", "weights": "int8 per tensor"}
        else:
            if calibration is None or len(calibration) == 0:
                raise MnistlabError("static quantization needs calibration images")
            batches = [
                {"images": fp32.normalize(calibration[i : i + 128])}
                for i in range(0, len(calibration), 128)
            ]

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self._batches = iter(batches)

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self._batches, None)

            quantize_static(
                str(prepared),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
            )
            details = {
                "mode": "static",
                "format": "QDQ",
                "weights": "int8 per output channel",
                "activations": "uint8, MinMax ranges",
                "calibration_images": len(calibration),
            }
        data = target.read_bytes()
    return write_model(
        out,
        data,
        "model.onnx",
        fp32.manifest,
        fmt=ONNX_FORMAT,
        source=fp32.manifest_path,
        variant=f"int8-{mode}",
        quantization=details,
    )


@contextmanager
def _quiet_logging() -> Any:
    """ONNX Runtime's quantizer logs advice through the root logger: keep it off the console."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def prune_model(
    model: str | os.PathLike[str] | ShippedModel,
    out: str | os.PathLike[str],
    *,
    amount: float = 0.5,
    finetune_epochs: int = 0,
    lr: float = 1e-3,
    batch_size: int = 256,
    threads: int = 1,
    home: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Magnitude-prune a PyTorch model and optionally fine-tune it with its zeros held.

    Global unstructured L1 pruning: the ``amount`` fraction of all convolution and linear
    weights with the smallest absolute values become zero. Fine-tuning trains the remaining
    weights for ``finetune_epochs`` on the model's training split (its validation part left
    out, as in the original run; AdamW, no augmentation, seeded, ``threads`` CPU threads) and
    re-applies the mask after every step.

    Returns:
        The manifest of the pruned model folder (format ``mnistlab-torch-model/1``: it also loads
        with :func:`mnistlab.models.cnn.cnn_from_file`).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    if not 0 < amount < 1:
        raise MnistlabError(f"prune amount must be a fraction in (0, 1); got {amount}")
    if finetune_epochs < 0:
        raise MnistlabError(f"finetune_epochs must be >= 0; got {finetune_epochs}")
    source = model if isinstance(model, ShippedModel) else load_model(model)
    if source.backend != "torch":
        raise MnistlabError("pruning needs the PyTorch model (a run folder), not an ONNX file")
    import copy

    module = copy.deepcopy(source.module)  # loaded (and hash-checked) once, by load_model
    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = torch.cat([m.weight.detach().abs().flatten() for m in layers])
    k = round(amount * weights.numel())
    threshold = weights.kthvalue(k).values if k > 0 else weights.new_tensor(-1.0)
    masks = {m: (m.weight.detach().abs() > threshold).float() for m in layers}

    def apply_masks() -> None:
        with torch.no_grad():
            for m, mask in masks.items():
                m.weight.mul_(mask)

    apply_masks()
    if finetune_epochs:  # the one training loop, the masks re-applied after every step
        config = TrainConfig.from_dict(source.manifest["config"])
        train, _, _ = load_training_data(config, home)
        images = torch.from_numpy(np.ascontiguousarray(train.images))
        labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
        batches = len(labels) // batch_size

        order = EpochBatches(len(labels), config.seed + 1000, batch_size)

        def step(epoch: int, b: int, generator: torch.Generator) -> StepOutput:
            idx = order(epoch, b)
            x = torch.from_numpy(source.normalize(images[idx].numpy()))
            return StepOutput(F.cross_entropy(module(x), labels[idx]), len(idx))

        def report(loop: Any, record: dict[str, Any]) -> None:
            if log:
                log(f"fine-tune epoch {record['epoch']}/{finetune_epochs}: "
                    f"loss {record['train_loss']:.4f}")  # fmt: skip

        with torch_threads(threads):
            fit(
                module,
                make_optimizer(module, lr=lr),
                step,
                schedule=Schedule(
                    lr=lr, total_steps=finetune_epochs * batches, kind="constant", warmup=0.0
                ),
                epochs=finetune_epochs,
                steps_per_epoch=batches,
                seed=config.seed + 1000,
                callbacks=[Hooks(step=lambda loop: apply_masks(), epoch=report)],
            )
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    total_weights = sum(m.weight.numel() for m in layers)
    return write_model(
        out,
        ckpt.tensors_to_bytes(module.state_dict()),
        "model.safetensors",
        source.manifest,
        fmt=TORCH_FORMAT,
        source=source.manifest_path,
        variant=f"pruned-{round(amount * 100)}%",
        pruning={
            "method": "global unstructured L1 magnitude (conv and linear weights)",
            "amount": amount,
            "sparsity": zeros / total_weights,
            "finetune_epochs": finetune_epochs,
            "finetune_lr": lr if finetune_epochs else None,
        },
    )


def measure(
    model: ShippedModel,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    threads: int = 1,
    seconds: float = 1.0,
) -> dict[str, Any]:
    """Size, latency, throughput and accuracy of ``model`` on this CPU.

    Args:
        model: any :class:`ShippedModel` (PyTorch or ONNX Runtime).
        images, labels: the evaluation split (uint8 ``(N, 28, 28)``); the first 256 images make
            the timed batch.
        threads: CPU threads for the forward passes (torch and ONNX Runtime alike).
        seconds: time spent repeating each timed call (after a warm-up), at least 5 calls.

    Returns:
        ``{"variant", "backend", "size_bytes", "gzip_bytes", "latency_b1_ms",
        "latency_b256_ms", "throughput_per_s", "latency_b1_best_ms", "latency_b256_best_ms",
        "accuracy", "images"}``: medians, and the fastest call (``_best``, the least disturbed
        by other work on a shared machine).
    """
    import torch

    weights = (model.folder / model.manifest["weights"]).read_bytes()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if model.backend == "onnxruntime":  # a session with the requested thread count
            model = load_model(model.manifest_path, threads=threads)
        x1 = model.normalize(images[:1])
        xb = model.normalize(images[:256])
        b1, b1_best = time_call(lambda: model.forward(x1), seconds)
        b256, b256_best = time_call(lambda: model.forward(xb), seconds)
        predicted = model.logits(images).argmax(1)
    finally:
        torch.set_num_threads(previous)
    return {
        "variant": model.manifest.get("variant") or "fp32",
        "backend": model.backend,
        "size_bytes": len(weights),
        "gzip_bytes": len(gzip.compress(weights, 9, mtime=0)),
        "latency_b1_ms": b1 * 1e3,
        "latency_b256_ms": b256 * 1e3,
        "throughput_per_s": len(xb) / b256,
        "latency_b1_best_ms": b1_best * 1e3,
        "latency_b256_best_ms": b256_best * 1e3,
        "accuracy": float((predicted == np.asarray(labels)).mean()),
        "images": len(labels),
    }


def time_call(call: Callable[[], Any], seconds: float) -> tuple[float, float]:
    """Median and minimum seconds per call of ``call()``, repeated for ``seconds`` (at least 5
    calls) after a warm-up of 3."""
    for _ in range(3):
        call()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        if len(times) >= 100_000:
            break
    return statistics.median(times), min(times)


def compress_model(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    methods: tuple[str, ...] = METHODS,
    prune_amount: float = 0.5,
    finetune_epochs: int = 1,
    calibration_size: int = 1000,
    threads: int = 1,
    seconds: float = 1.0,
    overwrite: bool = False,
    home: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> CompressResult:
    """Export, quantize and prune ``model``, then :func:`measure` every variant.

    Args:
        model: a PyTorch model (run folder, model folder or file).
        out: where the variants go; default ``compressed/`` beside the model folder (in the run
            folder).
        methods: any of :data:`METHODS`.
        prune_amount: fraction of conv/linear weights set to zero.
        finetune_epochs: epochs of fine-tuning after pruning (0: none).
        calibration_size: training images used to calibrate static quantization (seeded).
        threads: CPU threads used when timing and fine-tuning.
        seconds: time per timed measurement.
        overwrite: replace an earlier ``compress.json`` and its variants in ``out``.
        home: dataset cache root.
        log: called with progress lines.

    Returns:
        A :class:`CompressResult`; the table is also written to ``<out>/compress.json``.
    """
    from mnistlab.shipping.onnx import export_onnx

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise MnistlabError(
            f"unknown compression method(s): {', '.join(unknown)}", hint=f"use {METHODS}"
        )
    say = log or (lambda message: None)
    source = load_model(model)
    if source.manifest["format"] != TORCH_FORMAT:
        raise MnistlabError(
            f"{source.manifest_path}: compress takes the PyTorch model of a CNN (a run folder "
            f"of `mnistlab train`), not {source.name!r} ({source.backend})"
        )
    folder = Path(out).expanduser() if out is not None else source.folder.parent / "compressed"
    if (folder / "compress.json").exists() and not overwrite:
        raise OverwriteError(
            f"{folder} already holds compressed models",
            hint="pass --overwrite, or choose another --out",
        )
    dataset = source.manifest.get("config", {}).get("dataset", "mnist")
    test = load_dataset(dataset, "test", home=home)
    say(f"exporting to ONNX and verifying on {dataset}/test ({len(test.labels):,} images)")
    fp32 = load_model(
        export_onnx(source.manifest_path, folder / "fp32", overwrite=True, home=home).folder
    )
    variants: list[ShippedModel] = [source, fp32]
    if "int8-dynamic" in methods:
        say("int8 dynamic quantization")
        variants.append(load_model(quantize_onnx(fp32, folder / "int8-dynamic", mode="dynamic")))
    if "int8-static" in methods:
        train = load_dataset(dataset, "train", home=home)
        rng = np.random.default_rng(0)
        pick = rng.choice(len(train.labels), min(calibration_size, len(train.labels)), False)
        say(f"int8 static quantization, calibrated on {len(pick):,} training images")
        variants.append(
            load_model(
                quantize_onnx(
                    fp32, folder / "int8-static", mode="static", calibration=train.images[pick]
                )
            )
        )
    if "pruned" in methods:
        say(f"pruning {prune_amount:.0%} of the weights, {finetune_epochs} fine-tuning epoch(s)")
        variants.append(
            load_model(
                prune_model(
                    source,
                    folder / "pruned",
                    amount=prune_amount,
                    finetune_epochs=finetune_epochs,
                    threads=threads,
                    home=home,
                    log=say,
                )
            )
        )
    rows = []
    for variant in variants:
        say(f"measuring {variant.name} ({variant.backend})")
        row = measure(variant, test.images, test.labels, threads=threads, seconds=seconds)
        row["path"] = str(variant.folder)
        rows.append(row)
    result = CompressResult(folder, rows)
    atomic_write_json(
        folder / "compress.json",
        {
            "model": str(source.manifest_path),
            "dataset": dataset,
            "split": "test",
            "threads": threads,
            "rows": rows,
            "environment": environment_info(),
        },
    )
    return result
