"""``mnistlab train-reader``: train a number reader (:class:`~mnistlab.models.reader.NumberReader`)
on pictures of whole numbers made of MNIST *training* digits.

1. **Pictures.** ``config.numbers`` numbers of 1-8 digits are rendered by
   :func:`mnistlab.data.numbers.render_number` (sizes, baseline jitter, gaps, touching and
   overlapping neighbours, photos of paper), each seeded by its index, and each put through
   :func:`mnistlab.shipping.read.number_line`, the function that prepares a picture for
   reading: the reader learns from exactly what it will be shown. They are generated once, in
   as many processes as the run has threads, and kept in the run folder (``lines.npz``), so a
   resumed run does not make them again.
2. **Training** on the one loop (:func:`mnistlab.training.loop.fit`): batches of pictures of
   similar width (padded with blank columns), each line a fresh variant at every step
   (:func:`augment_lines`), CTC loss on the digit strings.
3. **Test**: 5-digit numbers made of the *test* split's digits, digits apart and with 30 % of
   neighbouring pairs touching, as photos, read through :func:`~mnistlab.shipping.read.read_number`
   end to end (``metrics.json``: string and digit accuracy per condition).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mnistlab.data import load_dataset
from mnistlab.data.numbers import number_set, render_number
from mnistlab.errors import MnistlabError
from mnistlab.features.augment import augment_images
from mnistlab.io import atomic_write_bytes
from mnistlab.models.files import READER_FORMAT, tensors_to_bytes, write_model_file
from mnistlab.models.reader import BLANK, LINE_HEIGHT, NumberReader, frames
from mnistlab.runs import (
    check_out_dir,
    new_run_dir,
    prepare_out_dir,
    write_json,
    write_run_record,
)
from mnistlab.shipping.read import edit_distance, number_line, read_number
from mnistlab.shipping.reader_config import ReaderConfig
from mnistlab.training.callbacks import ProgressBar
from mnistlab.training.data import epoch_permutation
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

LINES_FILE = "lines.npz"
CHUNK = 250  # pictures per generation task (each seeded by its first index)
TEST_CONDITIONS = {"photo, digits apart": 0.0, "photo, 30 % of pairs touching": 0.3}


@dataclass
class Lines:
    """Training lines: ``pixels`` uint8 ``(LINE_HEIGHT, sum of widths)`` side by side,
    ``widths``, and ``texts`` (the digit strings)."""

    pixels: np.ndarray
    widths: np.ndarray
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.widths)])


@dataclass
class ReaderResult:
    """What :func:`train_reader` returns: the run, its test metrics (empty when stopped
    early) and the model."""

    run_dir: Path
    metrics: dict[str, Any]
    train_seconds: float
    model: NumberReader


_WORKER: dict[str, Any] = {}


def _start_worker(
    dataset: str, home: str | None, extra: tuple[np.ndarray, np.ndarray] | None = None
) -> None:
    torch.set_num_threads(1)  # one process per core makes pictures; each augments on its own
    split = load_dataset(dataset, "train", home=home)
    _WORKER["images"], _WORKER["labels"] = split.images, split.labels
    if extra is not None:  # generated digits join the digits lines are drawn from
        _WORKER["images"] = np.concatenate([split.images, extra[0]])
        _WORKER["labels"] = np.concatenate([split.labels, extra[1]])


def _make_lines(first: int, count: int, config: dict[str, Any]) -> list[tuple[np.ndarray, str]]:
    """Pictures ``first`` .. ``first + count - 1``, each from its own seed."""
    images, labels = _WORKER["images"], _WORKER["labels"]
    out = []
    for index in range(first, first + count):
        rng = np.random.default_rng([config["seed"], index])
        k = int(rng.integers(config["min_digits"], config["max_digits"] + 1))
        pick = rng.choice(len(images), size=k, replace=False)
        digits = images[pick]
        if config.get("digit_augment", "none") != "none":  # each digit its own variant
            digits = augment_images(digits, config["digit_augment"], seed=int(rng.integers(2**31)))
        picture = render_number(
            list(digits), [int(labels[i]) for i in pick], rng,
            touching=float(rng.uniform(0, config["max_touching"])),
            photo=bool(rng.random() < config["photo"]),
        )  # fmt: skip
        line = number_line(picture.image)
        if line is not None:
            out.append((np.round(line.pixels * 255).astype(np.uint8), picture.text))
    return out


def make_lines(
    config: ReaderConfig, *, workers: int = 1, home: str | os.PathLike[str] | None = None,
    log: Any = None,
) -> Lines:  # fmt: skip
    """The training lines of ``config`` (deterministic: the same config gives the same
    lines, whatever ``workers``), made in ``workers`` processes."""
    settings = config.to_dict()
    tasks = [(first, min(CHUNK, config.numbers - first))
             for first in range(0, config.numbers, CHUNK)]  # fmt: skip
    home_text = os.fspath(home) if home is not None else None
    extra = None
    if config.generated_digits:  # made once here, handed to each worker
        from mnistlab.data.synthetic import digits_for

        names = load_dataset(config.dataset, "train", home=home).class_names
        extra = digits_for(names, config.dataset, config.generated_digits, seed=config.seed)
    made: list[tuple[np.ndarray, str]] = []
    if workers <= 1:
        _start_worker(config.dataset, home_text, extra)
        for first, count in tasks:
            made += _make_lines(first, count, settings)
            if log:
                log(len(made), config.numbers)
    else:
        import multiprocessing

        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(config.dataset, home_text, extra),
        ) as pool:  # fmt: skip
            futures = [pool.submit(_make_lines, first, count, settings) for first, count in tasks]
            for future in futures:
                made += future.result()
                if log:
                    log(len(made), config.numbers)
    if not made:
        raise MnistlabError("no training picture could be prepared for reading")
    return Lines(
        np.concatenate([p for p, _ in made], axis=1),
        np.array([p.shape[1] for p, _ in made], dtype=np.int64),
        [t for _, t in made],
    )


def save_lines(lines: Lines, path: Path) -> None:
    """Write ``lines`` to an ``.npz`` file atomically (read back without pickle)."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, pixels=lines.pixels, widths=lines.widths,
             texts=np.array(lines.texts, dtype="U"))  # fmt: skip
    atomic_write_bytes(path, buffer.getvalue())


def load_lines(path: Path) -> Lines:
    """Read :func:`save_lines`' file (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as data:
        return Lines(data["pixels"], data["widths"], [str(t) for t in data["texts"]])


def augment_lines(
    x: torch.Tensor, widths: torch.Tensor, generator: torch.Generator, strength: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh variant of each training line, so that the reader does not learn its pictures
    by heart: every line gets its own draw of a horizontal stretch (+-20 %), a vertical
    scale (+-12 %) and shift (+-2 pixels), a slant (+-0.2 pixel per row), a thicker or
    thinner stroke, a contrast change, blur and noise, all scaled by ``strength`` (0: the
    lines unchanged).

    Made here from tensors, not by rendering new pictures: a rendered picture costs about
    10 ms of a core, a batch of these variants about as much as one training step's forward
    pass.

    Args:
        x: ``(B, 1, LINE_HEIGHT, W)`` lines in [0, 1] (ink bright), padded with 0 on the right.
        widths: ``(B,)`` each line's width before padding.
        generator: the random source (advanced by this call).
        strength: how far the draws go, 0-1.

    Returns:
        The new lines (padded to their widest) and their widths.
    """
    if strength <= 0:
        return x, widths
    b, _, h, _ = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, generator=generator)

    stretch = 1 + strength * uniform(-0.2, 0.2)
    new = (widths.double() * stretch).round().long().clamp(min=8)
    out = x.new_zeros(b, 1, h, int(new.max()))
    for i in range(b):
        w, n = int(widths[i]), int(new[i])
        out[i, :, :, :n] = F.interpolate(x[i : i + 1, :, :, :w], size=(h, n), mode="bilinear",
                                         align_corners=False)[0]  # fmt: skip
    width = out.shape[-1]
    # The affine map from an output pixel to where it reads the input, in [-1, 1] units.
    slant = strength * uniform(-0.2, 0.2) * h / width
    scale = 1 + strength * uniform(-0.12, 0.12)
    shift = strength * uniform(-2, 2) * 2 / h
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = 1, slant
    theta[:, 1, 1], theta[:, 1, 2] = 1 / scale, shift
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Stroke width: towards the 3x3 maximum (thicker) or minimum (thinner) of each pixel.
    stroke = strength * uniform(-0.8, 0.8).view(b, 1, 1, 1)
    thick = F.max_pool2d(out, 3, 1, 1)
    thin = -F.max_pool2d(-out, 3, 1, 1)
    out = out + stroke.clamp(min=0) * (thick - out) + (-stroke).clamp(min=0) * (thin - out)
    blur = strength * uniform(0, 0.6).view(b, 1, 1, 1)
    out = out + blur * (F.avg_pool2d(out, 3, 1, 1, count_include_pad=False) - out)
    contrast = 1 - strength * uniform(0, 0.35).view(b, 1, 1, 1)
    noise = strength * uniform(0, 0.05).view(b, 1, 1, 1)
    out = out * contrast + noise * torch.randn(out.shape, generator=generator)
    columns = torch.arange(width).view(1, 1, 1, width)
    out = torch.where(columns < new.view(b, 1, 1, 1), out.clamp(0, 1), 0.0)
    return out, new


def width_batches(widths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar width (sorted by width, then cut)."""
    order = np.argsort(widths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def test_reader(
    reader: NumberReader, config: ReaderConfig, home: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """String and digit accuracy of ``reader`` on ``config.test_numbers`` 5-digit photos per
    condition of :data:`TEST_CONDITIONS`, made of the test split's digits (seed 0)."""
    if config.test_numbers == 0:
        return {}
    test = load_dataset(config.dataset, "test", home=home)
    out: dict[str, Any] = {}
    for name, touching in TEST_CONDITIONS.items():
        pictures = number_set(test.images, test.labels, config.test_numbers, seed=0,
                              touching=touching, photo=True)  # fmt: skip
        texts = [read_number(p.image, reader).text for p in pictures]
        right = [t == p.text for t, p in zip(texts, pictures, strict=True)]
        digits = [max(0.0, 1 - edit_distance(t, p.text) / len(p.text))
                  for t, p in zip(texts, pictures, strict=True)]  # fmt: skip
        out[name] = {"string_accuracy": float(np.mean(right)),
                     "digit_accuracy": float(np.mean(digits)), "count": len(pictures)}  # fmt: skip
    return out


def _make_with_bar(config: ReaderConfig, workers: int, home: Any, console: Any) -> Lines:
    """:func:`make_lines` with a progress bar on a terminal (elsewhere: one line at the end)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    started = time.perf_counter()
    bar = Progress("pictures", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console, transient=True, disable=not console.is_terminal)  # fmt: skip
    with bar:
        task = bar.add_task("pictures", total=config.numbers)
        lines = make_lines(config, workers=workers, home=home,
                           log=lambda done, _: bar.update(task, completed=done))  # fmt: skip
    console.print(f"{len(lines):,} pictures in {time.perf_counter() - started:.0f}s")
    return lines


def train_reader(
    config: ReaderConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    max_epochs: int | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> ReaderResult:
    """Train a number reader and write its run folder (``model/``: what ``mnistlab read``
    takes).

    Args:
        config: the settings (default ``ReaderConfig()``); with ``resume`` leave it None.
        out: the run folder (default: a new one under ``runs_root``).
        runs_root: root of new run folders (default ``$MNISTLAB_RUNS`` or ``./runs``).
        overwrite: allow ``out`` to replace an existing run.
        resume: a run folder to continue from its last checkpoint.
        home: dataset cache root.
        max_epochs: stop after this many epochs in this call (resume later).
        progress: print progress.
        callbacks: more hooks into the loop, before the progress bar.

    Raises:
        MnistlabError: bad config, unknown dataset, a resume folder without a checkpoint, ...
    """
    from rich.console import Console

    console = Console(quiet=not progress, highlight=False)
    if resume is not None:
        run_dir = Path(resume).expanduser()
        config = ReaderConfig.from_run(run_dir)  # refuses a folder of another kind
    config = config or ReaderConfig()
    config_dict = config.to_dict()
    threads, _ = run_threads(config.num_threads, resume)
    if resume is None:
        if out is not None:
            check_out_dir(out, overwrite)
        load_dataset(config.dataset, "train", home=home)  # a bad name fails before any work
        run_dir = (
            prepare_out_dir(out, overwrite)
            if out is not None
            else new_run_dir(f"reader-{config.dataset}", runs_root)
        )
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = NumberReader(config.width).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    used = announce_precision(device, config.precision, console)
    if resume is None:
        write_run_record(run_dir, {"kind": "reader", **config_dict, "parameters": parameters,
                                   "threads": threads, "precision_used": used},
                         [config.dataset], home)  # fmt: skip
    lines_path = run_dir / LINES_FILE
    if lines_path.is_file():
        lines = load_lines(lines_path)
    else:
        console.print(f"making {config.numbers:,} pictures of numbers ({threads} processes)")
        lines = _make_with_bar(config, threads, home, console)
        save_lines(lines, lines_path)
    console.print(
        f"[bold]training[/] a number reader ({parameters:,} parameters) on {len(lines):,} "
        f"pictures of {config.dataset} training digits -> {run_dir}"
    )
    offsets = lines.offsets()
    pixels = torch.from_numpy(lines.pixels)
    batches = width_batches(lines.widths, config.batch_size)
    targets = [torch.tensor([int(c) for c in t], dtype=torch.long) for t in lines.texts]

    def step_fn(epoch: int, b: int, generator: torch.Generator) -> StepOutput:
        order = epoch_permutation(len(batches), config.seed, epoch)
        pick = batches[int(order[b])]
        width = int(lines.widths[pick].max())
        x = torch.zeros(len(pick), 1, LINE_HEIGHT, width)
        for row, i in enumerate(pick):
            w = int(lines.widths[i])
            x[row, 0, :, :w] = pixels[:, offsets[i] : offsets[i] + w].float() / 255
        x, widths = augment_lines(x, torch.from_numpy(lines.widths[pick]), generator,
                                  config.augment)  # fmt: skip
        with autocast(device, config.precision):
            log_probs = model(x.to(device))
        lengths = torch.tensor([frames(int(w)) for w in widths])
        y = [targets[i] for i in pick]
        target_lengths = torch.tensor([len(t) for t in y])
        loss = F.ctc_loss(log_probs.float().transpose(0, 1), torch.cat(y).to(device), lengths,
                          target_lengths, blank=BLANK, zero_infinity=True)  # fmt: skip
        return StepOutput(loss, len(pick), {})

    steps = len(batches)
    optimizer = make_optimizer(model, config.optimizer, lr=config.lr,
                               weight_decay=config.weight_decay)  # fmt: skip
    schedule = Schedule(config.lr, config.epochs * steps, kind=config.schedule,
                        warmup=config.warmup)  # fmt: skip
    extra = bind_loggers(callbacks, run_dir, config_dict)
    with torch_threads(threads):
        result = fit(
            model, optimizer, step_fn, schedule=schedule, epochs=config.epochs,
            steps_per_epoch=steps, seed=config.seed, device=device, run_dir=run_dir,
            checkpoint_config=config_dict, resume=resume is not None,
            callbacks=[*extra, ProgressBar(progress)], max_epochs=max_epochs, grad_clip=5.0,
            resume_hint=f"mnistlab train-reader --resume {run_dir}", console=console,
        )  # fmt: skip
        model = model.cpu().eval()
        if not result.finished:
            return ReaderResult(run_dir, {}, result.train_seconds, model)
        metrics = {"train_seconds": result.train_seconds, "parameters": parameters,
                   "pictures": len(lines), "test": test_reader(model, config, home)}  # fmt: skip
    write_model_file(run_dir / "model", tensors_to_bytes(dict(model.state_dict())), {
        "kind": "reader", "width": config.width, "line_height": LINE_HEIGHT,
        "parameters": parameters, "config": config_dict, "metrics": metrics,
    }, fmt=READER_FORMAT)  # fmt: skip
    write_json(run_dir, "metrics.json", metrics)
    write_json(run_dir, "report.json", {"kind": "reader", **metrics})  # for `runs list`
    finish_loggers(extra)
    for name, row in metrics["test"].items():
        console.print(f"[bold]{name}[/]: {row['string_accuracy']:.1%} of numbers read right, "
                      f"digits {row['digit_accuracy']:.1%}")  # fmt: skip
    console.print(f"trained in {result.train_seconds:.0f}s -> {run_dir}")
    return ReaderResult(run_dir, metrics, result.train_seconds, model)
