"""``mnistlab pretrain``: self-supervised pretraining of a transformer on a dataset's images.

Objectives: ``mae`` (masked-patch reconstruction, :mod:`mnistlab.pretraining.mae`) and ``gpt``
(next-token prediction over quantized patches, :mod:`mnistlab.pretraining.gpt`) train a
transformer; ``simclr`` (contrastive views, :mod:`mnistlab.pretraining.contrastive`) trains a
CNN backbone for ``mnistlab fewshot``. Only the images of the training split are used; labels
are read only by a class-conditional GPT (``conditional=True``), never by the others.

Run folder::

    config.json, environment.json, metrics.jsonl (one line per epoch), checkpoint/
    model/model.json + model/model.safetensors   the pretrained weights (+ GPT codebook)
    pretraining_curves.png                       loss per epoch
    reconstructions.png (MAE) | samples.png (GPT) | views.png (SimCLR)
    report.json, report.html
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.evaluation.report import ReportSection
from mnistlab.features.augment import augment_batch
from mnistlab.models.files import (
    PRETRAINED_FORMAT,
    read_model_file,
    tensors_to_bytes,
    write_model_file,
)
from mnistlab.models.transformer import (
    GPTModel,
    count_parameters,
)
from mnistlab.pretraining.config import PretrainConfig
from mnistlab.pretraining.contrastive import SimCLR
from mnistlab.pretraining.figures import plot_history, save_image_grid, write_simple_report
from mnistlab.pretraining.gpt import detokenize, fit_codebook, gpt_loss, sample_tokens, tokenize
from mnistlab.pretraining.mae import MAE, reconstruction_panels
from mnistlab.runs import (
    check_out_dir,
    new_run_dir,
    prepare_out_dir,
    read_json,
    write_run_record,
)
from mnistlab.training.callbacks import ProgressBar
from mnistlab.training.data import EpochBatches
from mnistlab.training.loggers import bind_loggers, finish_loggers
from mnistlab.training.loop import Callback, StepOutput, fit
from mnistlab.training.optim import Schedule, make_optimizer
from mnistlab.training.runtime import (
    announce_precision,
    autocast,
    resolve_device,
    run_threads,
    torch_threads,
)

NUM_CLASSES = 10  # prefix tokens of a conditional GPT: one per class, then "no class"


class ImageSource(Protocol):
    """What pretraining reads from a split: ``images`` (uint8 ``(N, 28, 28)``); ``labels``
    only for a class-conditional GPT."""

    images: np.ndarray


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns."""

    run_dir: Path
    final_loss: float
    train_seconds: float
    finished: bool
    history: list[dict[str, Any]]
    model: nn.Module


def build_pretrain_model(config: PretrainConfig) -> nn.Module:
    """A fresh :class:`~mnistlab.pretraining.mae.MAE`,
    :class:`~mnistlab.models.transformer.GPTModel` or
    :class:`~mnistlab.pretraining.contrastive.SimCLR` for ``config``."""
    if config.objective == "simclr":
        return SimCLR(config.backbone, config.projection_dim, config.temperature)
    tc = config.transformer()
    if config.objective == "mae":
        return MAE(tc, config.mask_ratio, config.decoder_dim, config.decoder_depth)
    return GPTModel(tc, config.codebook_size, NUM_CLASSES + 1)


def pretrain(
    config: PretrainConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    data: ImageSource | None = None,
    max_rounds: int | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> PretrainResult:
    """Pretrain a transformer (or, with ``simclr``, a CNN backbone) without labels and write
    its run folder.

    Args:
        config: the settings (default ``PretrainConfig()``); with ``resume`` leave it None.
        out: the run folder (default: a new one under ``runs_root``).
        runs_root: root of new run folders (default ``$MNISTLAB_RUNS`` or ``./runs``).
        overwrite: allow ``out`` to replace an existing run.
        resume: a run folder to continue from its last end-of-epoch checkpoint.
        home: dataset cache root.
        data: the training images to use instead of ``load_dataset(config.dataset, "train")``;
            only its ``images`` are read (and ``labels`` for a conditional GPT).
        max_rounds: stop after this many epochs in this call (resume later).
        progress: print progress.
        callbacks: more hooks into the loop, before the progress bar; loggers
            (:mod:`mnistlab.training.loggers`) are bound to the run and log its folder.

    Returns:
        A :class:`PretrainResult`.

    Raises:
        MnistlabError: bad config, unknown dataset, a resume folder without a checkpoint, ...
    """
    from rich.console import Console

    console = Console(quiet=not progress, highlight=False)
    if resume is not None:
        run_dir = Path(resume).expanduser()
        saved = read_json(run_dir, "config.json")
        if saved.get("kind") != "pretrain":
            raise MnistlabError(f"{run_dir} is not a pretraining run")
        config = PretrainConfig.from_dict(
            {k: v for k, v in saved.items() if k not in PretrainConfig.run_keys}
        )
    config = config or PretrainConfig()
    config_dict = config.to_dict()
    threads, _ = run_threads(config.num_threads, resume)  # kept when resuming: bit-exact
    if resume is None and out is not None:
        check_out_dir(out, overwrite)  # before the data is loaded
    device = resolve_device(config.device)

    if data is None:
        data = load_dataset(config.dataset, "train", home=home)
    images_np = data.images
    if config.max_images:
        images_np = images_np[: config.max_images]
    images = torch.from_numpy(np.ascontiguousarray(images_np)).unsqueeze(1).to(device)
    n = len(images)
    prefixes = torch.full((n,), NUM_CLASSES, dtype=torch.long)
    if config.objective == "gpt" and config.conditional:
        labels = torch.as_tensor(np.asarray(data.labels[:n], dtype=np.int64))
        drop = torch.rand(n, generator=torch.Generator().manual_seed(config.seed))
        prefixes = torch.where(drop < config.uncond_prob, NUM_CLASSES, labels)
    prefixes = prefixes.to(device)

    if resume is None:
        run_dir = (
            prepare_out_dir(out, overwrite)
            if out is not None
            else new_run_dir(f"pretrain-{config.objective}-{config.dataset}", runs_root)
        )
    torch.manual_seed(config.seed)
    model = build_pretrain_model(config).to(device)
    codebook = None
    tokens = None
    tc = config.transformer()
    if config.objective == "gpt":
        codebook = fit_codebook(images.cpu(), tc.patch_size, config.codebook_size, seed=config.seed)
        tokens = tokenize(images.cpu(), codebook, tc.patch_size).to(device)
    used = announce_precision(device, config.precision, console)
    if resume is None:
        write_run_record(run_dir, {
            "kind": "pretrain", **config_dict, "num_images": n, "threads": threads,
            "precision_used": used,
            "parameters": count_parameters(model),
        }, [config.dataset], home)  # fmt: skip
    shape = config.backbone if config.objective == "simclr" else config.preset
    console.print(
        f"[bold]pretraining[/] {config.objective} {shape} "
        f"({count_parameters(model):,} parameters) on {n:,} {config.dataset} images -> {run_dir}"
    )
    batch = min(config.batch_size, n)
    steps = max(1, n // batch)
    batches = EpochBatches(n, config.seed, batch)

    def step_fn(epoch: int, b: int, generator: torch.Generator) -> StepOutput:
        idx = batches(epoch, b).to(device)
        if config.objective == "simclr":  # two strong views of every image
            views = augment_batch(images[idx].repeat(2, 1, 1, 1), config.views, generator)
            with autocast(device, config.precision):
                return StepOutput(model(views.float() / 255).float(), len(idx))
        with autocast(device, config.precision):
            if config.objective == "mae":
                loss = model(images[idx].float() / 255)[0]
            else:
                loss = gpt_loss(model, tokens[idx], prefixes[idx])
        return StepOutput(loss.float(), len(idx))

    optimizer = make_optimizer(
        model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = Schedule(
        config.lr, config.epochs * steps, kind=config.schedule, warmup=config.warmup
    )
    extra = bind_loggers(callbacks, run_dir, config_dict)
    with torch_threads(threads):
        result = fit(
            model,
            optimizer,
            step_fn,
            schedule=schedule,
            epochs=config.epochs,
            steps_per_epoch=steps,
            seed=config.seed,
            device=device,
            run_dir=run_dir,
            checkpoint_config=config_dict,
            resume=resume is not None,
            callbacks=[*extra, ProgressBar(progress)],
            max_epochs=max_rounds,
            resume_hint=f"mnistlab pretrain --resume {run_dir}",
            console=console,
        )
        if result.finished:
            _finish(run_dir, model, config, codebook, images, result, console)
            finish_loggers(extra)
    final = result.history[-1]["train_loss"] if result.history else float("nan")
    return PretrainResult(
        run_dir, final, result.train_seconds, result.finished, result.history, model
    )


def _finish(
    run_dir: Path,
    model: nn.Module,
    config: PretrainConfig,
    codebook: torch.Tensor | None,
    images: torch.Tensor,
    result: Any,
    console: Any,
) -> None:
    """Write the model, the figures and the report of a finished pretraining run."""
    tensors = dict(model.state_dict())
    if codebook is not None:
        tensors["codebook"] = codebook
    meta = {
        "objective": config.objective,
        "config": config.to_dict(),
        "parameters": count_parameters(model),
    }
    if config.objective == "simclr":
        meta["backbone"] = config.backbone
    else:
        meta["transformer"] = config.transformer().to_dict()
    write_model_file(run_dir / "model", tensors_to_bytes(tensors), meta, fmt=PRETRAINED_FORMAT)
    curves = plot_history(
        result.history, ["train_loss"], run_dir / "pretraining_curves.png", "epoch"
    )
    sections = [ReportSection("Pretraining curve", figure=curves, caption="Mean loss per epoch.")]
    if config.objective == "simclr":
        generator = torch.Generator().manual_seed(config.seed)
        sample = images[:12].cpu()
        rows = [sample.float() / 255] + [
            augment_batch(sample, config.views, generator).float() / 255 for _ in range(2)
        ]
        fig = save_image_grid(rows, run_dir / "views.png", row_titles=["image", "view", "view"])
        caption = "Two random views of each image: the contrastive loss makes their features "
        caption += "agree, and differ from the other images' in the batch."
        sections.append(ReportSection("Views", figure=fig, caption=caption))
    elif config.objective == "mae":
        sample = images[:12].float() / 255
        rows = reconstruction_panels(model, sample, seed=config.seed)
        fig = save_image_grid(
            rows, run_dir / "reconstructions.png", row_titles=["original", "masked", "MAE"]
        )
        caption = f"Top: images; middle: {config.mask_ratio:.0%} of patches hidden; bottom: "
        caption += "visible patches + the model's reconstruction of the hidden ones."
        sections.append(ReportSection("Reconstructions", figure=fig, caption=caption))
    else:
        tc = config.transformer()
        generator = torch.Generator().manual_seed(config.seed)
        prefix = torch.arange(NUM_CLASSES + 1).repeat_interleave(8)
        if not config.conditional:
            prefix = torch.full((24,), NUM_CLASSES)
        tokens = sample_tokens(model, prefix, generator=generator)
        drawn = detokenize(tokens, codebook, tc.patch_size).cpu()
        rows = [drawn[i : i + 8] for i in range(0, len(drawn), 8)]
        titles = [
            str(int(prefix[i])) if prefix[i] < NUM_CLASSES else "any"
            for i in range(0, len(prefix), 8)
        ]
        fig = save_image_grid(rows, run_dir / "samples.png", row_titles=titles)
        sections.append(ReportSection("Samples", figure=fig, caption="Rows: prefix token."))
    write_simple_report(
        run_dir,
        {
            "kind": "pretrain",
            "objective": config.objective,
            "dataset": config.dataset,
            "model": shape_name(config),
            "parameters": meta["parameters"],
            "final_train_loss": result.history[-1]["train_loss"],
            "train_seconds": result.train_seconds,
            "epochs": len(result.history),
        },
        sections,
        f"Pretraining ({config.objective}) on {config.dataset}",
    )
    console.print(
        f"[bold]pretrained[/] loss {result.history[-1]['train_loss']:.4f} "
        f"in {result.train_seconds:.1f}s -> {run_dir}"
    )


def shape_name(config: PretrainConfig) -> str:
    """What is pretrained: ``transformer-<preset>`` or the CNN backbone's name."""
    return config.backbone if config.objective == "simclr" else f"transformer-{config.preset}"


def load_pretrained(
    run_dir: str | os.PathLike[str],
) -> tuple[nn.Module, dict[str, Any], torch.Tensor | None]:
    """Rebuild a pretrained model from its run folder (or its ``model/`` folder).

    Returns:
        ``(model, meta, codebook)``: the MAE, GPT or SimCLR module (CPU, eval mode),
        ``model.json``,
        and the GPT codebook (None for MAE).

    Raises:
        MnistlabError: not a pretraining run, or weights whose SHA-256 differs from model.json.
    """
    model_file = read_model_file(run_dir, [PRETRAINED_FORMAT])
    meta, tensors = model_file.manifest, model_file.tensors()
    codebook = tensors.pop("codebook", None)
    model = build_pretrain_model(PretrainConfig.from_dict(meta["config"]))
    model.load_state_dict(tensors)
    return model.eval(), meta, codebook
