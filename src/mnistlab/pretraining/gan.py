"""``mnistlab gan``: a DCGAN (and a class-conditional variant) trained on a dataset's images.

How a GAN runs on the one training loop (:func:`mnistlab.training.loop.fit`, which takes one
optimizer and one loss per step): the optimizer is Adam over two parameter groups, the
generator's and the discriminator's (each with its own ``beta1``), and the step's loss is

    D's loss on real images and on *detached* fakes
    + G's loss on the fakes scored by D through ``torch.func.functional_call`` with D's
      parameters *detached*,

so D's gradient comes only from D's loss and G's only from G's loss (through D's function,
not into D's weights): one backward pass, one optimizer step, both networks updated at the
same time from the same batch (simultaneous gradient steps, instead of the usual alternation
of a D step and a G step). This keeps the loop unchanged: its schedule, checkpoints with
bit-exact resume, Ctrl-C and callbacks serve the GAN as they serve every other trainer. The
price: the loop sets one learning rate for every parameter group, so G and D share it (as in
the DCGAN paper, 2e-4 for both).

Run folder::

    config.json, environment.json, metrics.jsonl (d_loss, g_loss, D(x), D(G(z)) per epoch),
    checkpoint/, samples/epoch_NNN.png (fixed noise: epochs are comparable),
    model/model.json + model/model.safetensors   the generator (mnistlab-gan-generator/1)
    gan_losses.png, samples.png, report.json, report.html
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.evaluation.report import ReportSection
from mnistlab.models.files import GAN_FORMAT, tensors_to_bytes, write_model_file
from mnistlab.models.gan import GAN, NUM_CLASSES, GanShape, Generator, generator_from_file
from mnistlab.pretraining.figures import save_image_grid, write_simple_report
from mnistlab.pretraining.gan_config import GanConfig
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
from mnistlab.training.loop import Callback, Loop, StepOutput, fit
from mnistlab.training.optim import Schedule
from mnistlab.training.runtime import (
    announce_precision,
    autocast,
    resolve_device,
    run_threads,
    torch_threads,
)

GRID_SIDE = 10  # the per-epoch grids: 10 x 10 samples from fixed noise
GRID_SEED_SALT = 7919  # the grids' noise: seed + this, independent of training's streams


@dataclass
class GanResult:
    """What :func:`train_gan` returns."""

    run_dir: Path
    train_seconds: float
    finished: bool
    history: list[dict[str, Any]]
    model: GAN


def shape_of(config: GanConfig) -> GanShape:
    """The networks' sizes a config asks for."""
    return GanShape(config.z_dim, config.width, config.conditional, config.embed_dim)


def fixed_grid_inputs(config: GanConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The noise (and digits) of the per-epoch grids: the same in every epoch and on resume.
    Conditional: row ``d`` draws digit ``d`` and column ``j`` uses noise ``j`` in every row
    (so a column shows one "style" across digits); unconditional: 100 different noises."""
    generator = torch.Generator().manual_seed(config.seed + GRID_SEED_SALT)
    if config.conditional:
        z = torch.randn(GRID_SIDE, config.z_dim, generator=generator).repeat(GRID_SIDE, 1)
        return z, torch.arange(GRID_SIDE).repeat_interleave(GRID_SIDE)
    return torch.randn(GRID_SIDE * GRID_SIDE, config.z_dim, generator=generator), None


@torch.no_grad()
def draw(
    generator: Generator, z: torch.Tensor, digits: torch.Tensor | None, batch_size: int = 512
) -> torch.Tensor:
    """Images of ``generator`` (eval mode) as uint8 ``(N, 28, 28)`` on the CPU."""
    device = next(generator.parameters()).device
    out = []
    for start in range(0, len(z), batch_size):
        d = None if digits is None else digits[start : start + batch_size].to(device)
        x = generator(z[start : start + batch_size].to(device), d)
        out.append(((x[:, 0].float() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).cpu())
    return torch.cat(out)


def save_grid(
    images: torch.Tensor, path: Path, conditional: bool, title: str | None = None
) -> Path:
    """A 10 x 10 grid PNG (conditional: one row per digit, titled)."""
    rows = [images[i : i + GRID_SIDE] for i in range(0, len(images), GRID_SIDE)]
    titles = [str(d) for d in range(len(rows))] if conditional else None
    return save_image_grid(rows, path, row_titles=titles, title=title)


class SampleGrids(Callback):
    """Write ``samples/epoch_NNN.png`` from the fixed noise at the end of every
    ``every``-th epoch (and the last). Uses its own generator: training's random streams,
    and so resume, are untouched."""

    name = "gan_sample_grids"

    def __init__(self, model: GAN, config: GanConfig, run_dir: Path) -> None:
        self.model, self.config, self.folder = model, config, run_dir / "samples"
        self.z, self.digits = fixed_grid_inputs(config)

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        epoch = loop.epoch + 1
        if epoch % self.config.grid_every and epoch != loop.epochs:
            return
        self.folder.mkdir(exist_ok=True)
        images = draw(self.model.generator, self.z, self.digits)  # the loop set eval mode
        save_grid(images, self.folder / f"epoch_{epoch:03d}.png", self.config.conditional,
                  title=f"epoch {epoch}")  # fmt: skip


def gan_step(
    model: GAN,
    real: torch.Tensor,
    real_digits: torch.Tensor | None,
    z: torch.Tensor,
    fake_digits: torch.Tensor | None,
    label_smoothing: float = 0.0,
    mode_seeking: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One simultaneous GAN step's loss (see the module docstring) and its sums.

    Args:
        real: images in [-1, 1], ``(B, 1, 28, 28)``; ``real_digits`` their labels (conditional).
        z: noise ``(B, z_dim)``; ``fake_digits`` the digits to draw (conditional).
        label_smoothing: D's target for real images is ``1 - label_smoothing``.
        mode_seeking: weight of the mode-seeking term (Mao et al. 2019) added to G's loss:
            ``1 / mean(|G(z1) - G(z2)| / |z1 - z2|)`` over the pairs (first half, second half)
            of the batch (give both halves the same digits), which punishes a generator that
            ignores its noise. 0 = off.

    Returns:
        ``(loss, sums)``: ``loss = d_loss + g_loss (+ mode_seeking * term)``; ``sums`` over the
        batch of ``d_loss``, ``g_loss``, ``d_real`` (D's probability that a real image is
        real), ``d_fake``, and ``diversity`` (the mean ratio above) when the term is on.
    """
    from torch.func import functional_call

    G, D = model.generator, model.discriminator
    fake = G(z, fake_digits)
    d_real = D(real, real_digits)
    d_fake = D(fake.detach(), fake_digits)  # D's loss: no gradient into G
    d_loss = F.binary_cross_entropy_with_logits(
        d_real, torch.full_like(d_real, 1 - label_smoothing)
    ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    frozen = {name: p.detach() for name, p in D.named_parameters()}
    g_logits = functional_call(D, frozen, (fake, fake_digits))  # G's loss: none into D
    g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
    n = len(real)
    sums = {
        "d_loss": d_loss.detach() * n,
        "g_loss": g_loss.detach() * n,
        "d_real": torch.sigmoid(d_real.detach()).sum(),
        "d_fake": torch.sigmoid(d_fake.detach()).sum(),
    }
    loss = d_loss + g_loss
    if mode_seeking > 0:
        h = len(z) // 2
        image_gap = (fake[:h] - fake[h : 2 * h]).abs().flatten(1).mean(1)
        ratio = (image_gap / (z[:h] - z[h : 2 * h]).abs().mean(1)).mean()
        loss = loss + mode_seeking / (ratio + 1e-5)
        sums["diversity"] = ratio.detach() * n
    return loss, sums


def make_gan_optimizer(model: GAN, config: GanConfig) -> torch.optim.Optimizer:
    """AdamW over two parameter groups: the generator's and the discriminator's, each with
    its ``beta1`` (weight decay ``config.weight_decay``, 0 by default: plain Adam)."""
    groups = [
        {"params": list(model.generator.parameters()), "betas": (config.beta1_g, 0.999)},
        {"params": list(model.discriminator.parameters()), "betas": (config.beta1_d, 0.999)},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def train_gan(
    config: GanConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    data: Any = None,
    max_rounds: int | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> GanResult:
    """Train a DCGAN (``config.conditional``: class-conditional) and write its run folder.

    Args:
        config: the settings (default ``GanConfig()``); with ``resume`` leave it None.
        out: the run folder (default: a new one under ``runs_root``).
        runs_root: root of new run folders (default ``$MNISTLAB_RUNS`` or ``./runs``).
        overwrite: allow ``out`` to replace an existing run.
        resume: a run folder to continue from its last checkpoint.
        home: dataset cache root.
        data: a split to train on instead of ``load_dataset(config.dataset, "train")``; its
            ``images`` are read, and its ``labels`` only by a conditional GAN.
        max_rounds: stop after this many epochs in this call (resume later).
        progress: print progress.
        callbacks: more hooks into the loop, before the progress bar.

    Returns:
        A :class:`GanResult`.

    Raises:
        MnistlabError: bad config, unknown dataset, a resume folder without a checkpoint, ...
    """
    from rich.console import Console

    console = Console(quiet=not progress, highlight=False)
    if resume is not None:
        run_dir = Path(resume).expanduser()
        saved = read_json(run_dir, "config.json")
        if saved.get("kind") != "gan":
            raise MnistlabError(f"{run_dir} is not a GAN run", hint="mnistlab gan --resume RUN")
        config = GanConfig.from_dict(
            {k: v for k, v in saved.items() if k not in GanConfig.run_keys}
        )
    config = config or GanConfig()
    config_dict = config.to_dict()
    threads, _ = run_threads(config.num_threads, resume)
    if resume is None and out is not None:
        check_out_dir(out, overwrite)
    device = resolve_device(config.device)
    if data is None:
        data = load_dataset(config.dataset, "train", home=home)
    images_np = data.images[: config.max_images] if config.max_images else data.images
    n = len(images_np)
    if n < 2:
        raise MnistlabError(f"a GAN needs at least 2 training images; got {n}")
    images = torch.from_numpy(np.ascontiguousarray(images_np)).unsqueeze(1).to(device)
    labels = None
    if config.conditional:
        labels = torch.as_tensor(np.asarray(data.labels[:n], dtype=np.int64)).to(device)
        if int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES:
            raise MnistlabError(f"a conditional GAN needs labels in 0..{NUM_CLASSES - 1}")
    if resume is None:
        run_dir = (
            prepare_out_dir(out, overwrite)
            if out is not None
            else new_run_dir(f"gan{'-cond' * config.conditional}-{config.dataset}", runs_root)
        )
    torch.manual_seed(config.seed)
    model = GAN(shape_of(config)).to(device)
    parameters = {
        "generator": sum(p.numel() for p in model.generator.parameters()),
        "discriminator": sum(p.numel() for p in model.discriminator.parameters()),
    }
    used = announce_precision(device, config.precision, console)
    if resume is None:
        write_run_record(run_dir, {
            "kind": "gan", **config_dict, "num_images": n, "threads": threads,
            "precision_used": used,
            "parameters": parameters,
        }, [config.dataset], home)  # fmt: skip
    kind = "conditional DCGAN" if config.conditional else "DCGAN"
    console.print(
        f"[bold]training[/] {kind} (G {parameters['generator']:,}, D "
        f"{parameters['discriminator']:,} parameters) on {n:,} {config.dataset} images -> {run_dir}"
    )
    batch = min(config.batch_size, n)
    steps = max(1, n // batch)
    batches = EpochBatches(n, config.seed, batch)

    def step_fn(epoch: int, b: int, generator: torch.Generator) -> StepOutput:
        idx = batches(epoch, b).to(device)
        real = images[idx].float() / 127.5 - 1
        z = torch.randn(batch, config.z_dim, generator=generator).to(device)
        real_digits = fake_digits = None
        mode_seeking = 0.0
        if labels is not None:  # both halves draw the same digits: the mode-seeking pairs
            real_digits = labels[idx]
            half = torch.randint(NUM_CLASSES, ((batch + 1) // 2,), generator=generator)
            fake_digits = half.repeat(2)[:batch].to(device)
            mode_seeking = config.mode_seeking
        with autocast(device, config.precision):
            loss, sums = gan_step(model, real, real_digits, z, fake_digits,
                                  config.label_smoothing, mode_seeking)  # fmt: skip
        return StepOutput(loss.float(), batch, sums)

    optimizer = make_gan_optimizer(model, config)
    schedule = Schedule(
        config.lr, config.epochs * steps, kind=config.schedule, warmup=config.warmup
    )
    extra = bind_loggers(callbacks, run_dir, config_dict)
    grids = SampleGrids(model, config, run_dir)
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
            callbacks=[grids, *extra, ProgressBar(progress)],
            max_epochs=max_rounds,
            resume_hint=f"mnistlab gan --resume {run_dir}",
            console=console,
        )
        if result.finished:
            _finish(run_dir, model, config, parameters, result, console)
            finish_loggers(extra)
    return GanResult(run_dir, result.train_seconds, result.finished, result.history, model)


def plot_losses(history: list[dict[str, Any]], path: Path) -> Path:
    """Both losses per epoch in one panel, D's outputs on real and generated images in
    another; returns ``path``."""
    from mnistlab.plotting import pyplot, save_figure

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.2))
    xs = [r["epoch"] for r in history]
    for ax, keys, title in (
        (left, (("train_d_loss", "D loss"), ("train_g_loss", "G loss")), "losses (nats)"),
        (right, (("train_d_real", "D(real)"), ("train_d_fake", "D(G(z))")), "D's output"),
    ):
        for key, name in keys:
            ax.plot(xs, [r.get(key) for r in history], marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def _finish(
    run_dir: Path,
    model: GAN,
    config: GanConfig,
    parameters: dict[str, int],
    result: Any,
    console: Any,
) -> None:
    """Write the generator's model file, the figures and the report of a finished run."""
    model = model.cpu().eval()
    meta = {
        "shape": shape_of(config).to_dict(),
        "config": config.to_dict(),
        "parameters": parameters["generator"],
        "pixel_range": [-1.0, 1.0],
        "epochs": len(result.history),
    }
    weights = tensors_to_bytes(dict(model.generator.state_dict()))
    write_model_file(run_dir / "model", weights, meta, fmt=GAN_FORMAT)
    losses = plot_losses(result.history, run_dir / "gan_losses.png")
    z, digits = fixed_grid_inputs(config)
    samples = save_grid(draw(model.generator, z, digits), run_dir / "samples.png",
                        config.conditional)  # fmt: skip
    last = result.history[-1]
    caption = "Rows: digits 0-9; a column shares its noise." if config.conditional else ""
    write_simple_report(
        run_dir,
        {
            "kind": "gan",
            "conditional": config.conditional,
            "dataset": config.dataset,
            "model": "dcgan",
            "parameters": parameters["generator"],
            "discriminator_parameters": parameters["discriminator"],
            "final_d_loss": last["train_d_loss"],
            "final_g_loss": last["train_g_loss"],
            "train_seconds": result.train_seconds,
            "epochs": len(result.history),
        },
        [
            ReportSection(
                "Losses", figure=losses, caption="Mean losses and D's outputs per epoch."
            ),
            ReportSection("Samples", figure=samples, caption=caption or "Fixed noise."),
        ],
        f"{'Conditional ' if config.conditional else ''}DCGAN on {config.dataset}",
    )
    console.print(
        f"[bold]trained[/] D loss {last['train_d_loss']:.3f}, G loss {last['train_g_loss']:.3f} "
        f"in {result.train_seconds:.1f}s -> {run_dir}"
    )


def sample_gan(
    run_dir: str | os.PathLike[str] | Any,
    digits: list[int] | None,
    n: int,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images per digit from a GAN run's generator (a run folder or a ``ModelFile``).

    Returns:
        ``(images, digits)``: uint8 ``(N, 28, 28)`` and int64 ``(N,)`` (10 = no class).

    Raises:
        MnistlabError: digits asked of an unconditional GAN, or a digit out of range.
    """
    generator, meta = generator_from_file(run_dir)
    conditional = meta["shape"]["conditional"]
    if digits is not None and not conditional:
        raise MnistlabError(
            "this GAN was trained without labels: it cannot draw a given digit",
            hint="omit --digit for unconditional samples, or train one with "
            "`mnistlab gan --conditional`",
        )
    if digits is None and conditional:
        digits = list(range(NUM_CLASSES))  # "any digit": every class, n each
    wanted = torch.tensor(
        [d for d in (digits if digits is not None else [NUM_CLASSES]) for _ in range(n)]
    )
    z = torch.randn(
        len(wanted), meta["shape"]["z_dim"], generator=torch.Generator().manual_seed(seed)
    )
    images = draw(generator, z, wanted if conditional else None)
    return images.numpy(), wanted.numpy().astype(np.int64)
