"""``mnistlab fewshot``: a classifier from a handful of labels and many unlabeled images.

Two methods (settings: :class:`~mnistlab.pretraining.config.FewshotConfig`). The default,
``method="propagate"``: the backbone (1., below) embeds every training image, the labels
spread over a nearest-neighbour graph of those features
(:mod:`mnistlab.pretraining.propagate`), and the student (4., below) learns the labelled images
and the propagated labels of all the others: ``<run>/student``, the run's one model; the run
folder records the propagation in ``propagation.json``. About a minute and a half on 2 cores.

``method="consistency"``, the recipe:

1. **Backbone**: the CNN's convolutional ``features`` start from a self-supervised backbone
   (``pretrained:NAME``, shipped with the package, or a ``mnistlab pretrain --objective simclr``
   run folder; ``None`` = from scratch). Its projection head is not used.
2. **Consistency training** (FixMatch, Sohn et al. 2020) on the one training loop: every step
   takes a batch of labelled images (weak view, cross-entropy on their labels) and
   ``unlabeled_ratio`` times as many images from the whole training split, labels unread. The
   model labels each one's weak view; where the confidence reaches ``threshold``, that
   pseudo-label is the target of a strong view of the same image (affine + elastic + stroke
   width + cutout). **Distribution alignment** (ReMixMatch) first rescales the pseudo-label
   probabilities by (labelled class frequencies) / (running mean prediction), so that no class
   absorbs a look-alike cluster of another; **class balancing** (``balance``, Sinkhorn-Knopp
   as in SwAV) then spreads each batch's pseudo-labels over the classes in those frequencies,
   which is what holds at ten labels, where one class can take another's look-alikes within
   a few hundred steps.
3. **Weight averaging**: an exponential moving average of the weights (the "teacher") is kept
   in the model's state (checkpointed, so resume is exact); at the end its BatchNorm statistics
   are measured again on unlabeled images, and it is the model that is tested and saved.
4. **A student** (``student``, default ``resnet-small``; None = off): self-training
   (:func:`~mnistlab.pretraining.selftrain.self_train`): the run's model labels the unlabeled
   images, and a CNN of ``mnistlab train`` learns from those labels and the true few, for
   ``student_epochs`` epochs of its default recipe, into ``<run>/student``: the final model.

Which images are labelled: a stratified, seeded draw of ``labels`` images of the training
split (:func:`~mnistlab.pretraining.finetune.label_subset`), or, when the training data given
has labels of -1 (scikit-learn's convention for "unlabeled"), exactly the images whose label
is not -1. Only the labels of the labelled images are ever read after the draw.

The run folder is an ordinary CNN run (``model/`` in the ``mnistlab train`` format), and so is
its ``student/`` folder, so ``evaluate``, ``robustness``, ``export``, ``compress`` and ``serve``
take either. The test split is used once per model, at its end.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.evaluation.report import ReportSection, html_table, write_report
from mnistlab.features.augment import augment_batch
from mnistlab.models.cnn import build_model, count_parameters, write_cnn_model
from mnistlab.models.files import PRETRAINED_FORMAT, read_model_file
from mnistlab.models.hub import resolve_pretrained
from mnistlab.models.inference import predict_proba
from mnistlab.pretraining.config import FewshotConfig
from mnistlab.pretraining.figures import plot_history
from mnistlab.pretraining.finetune import (
    align_distribution,
    alignment_factors,
    balance_classes,
    label_subset,
)
from mnistlab.pretraining.selftrain import train_student
from mnistlab.runs import (
    check_out_dir,
    new_run_dir,
    prepare_out_dir,
    read_json,
    write_json,
    write_run_record,
)
from mnistlab.training.callbacks import Hooks, ProgressBar
from mnistlab.training.config import TrainConfig
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

UNLABELED = -1  # a label of -1 marks an unlabeled image (scikit-learn's semi-supervised rule)
RECALIBRATION_IMAGES = 8192  # unlabeled images that measure the averaged model's BN statistics
ALIGN_MOMENTUM = 0.999  # the running mean prediction of distribution alignment


class LabeledImages(Protocol):
    """What :func:`fewshot` reads from a training split: uint8 ``images`` ``(N, 28, 28)``,
    ``labels`` ``(N,)`` (-1 = unlabeled) and ``class_names``."""

    images: np.ndarray
    labels: np.ndarray
    class_names: Sequence[str]


class TeacherStudent(nn.Module):
    """The trained net (``student``), its moving average (``teacher``, not trained by the
    optimizer) and the running mean prediction of distribution alignment (``mean_prediction``):
    one module, so that a checkpoint holds all three and a resumed run is exact."""

    def __init__(self, student: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean_prediction", torch.full((num_classes,), 1.0 / num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    @torch.no_grad()
    def update_teacher(self, decay: float) -> None:
        """``teacher = decay * teacher + (1 - decay) * student``, parameter by parameter."""
        for t, s in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
            t.lerp_(s, 1 - decay)


@dataclass
class FewshotResult:
    """What :func:`fewshot` returns (``test_accuracy`` is NaN when ``max_rounds`` stopped it)."""

    run_dir: Path
    test_accuracy: float
    train_seconds: float
    num_labeled: int
    history: list[dict[str, Any]]
    report: dict[str, Any]
    model: nn.Module = field(repr=False)
    student_dir: Path | None = None  # the student's run folder (the final model), if any
    student_accuracy: float | None = None
    method: str = "consistency"  # FewshotConfig.method

    @property
    def final_dir(self) -> Path:
        """The run folder of the final model: the student's when there is one."""
        return self.student_dir or self.run_dir

    @property
    def final_accuracy(self) -> float:
        """The test accuracy of the final model."""
        return self.test_accuracy if self.student_accuracy is None else self.student_accuracy


def load_backbone(
    ref: str | os.PathLike[str], architecture: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``features`` weights of a pretrained CNN backbone.

    Args:
        ref: ``pretrained:NAME`` (shipped) or a ``mnistlab pretrain --objective simclr`` run
            folder or model folder.
        architecture: the CNN the weights must fit (``FewshotConfig.model``).

    Returns:
        ``(state, info)``: tensors for ``net.features.load_state_dict`` and what the run
        records about the backbone (reference, objective, weights SHA-256).

    Raises:
        MnistlabError: no such model, changed weights, not a CNN backbone, another architecture.
    """
    model_file = read_model_file(
        resolve_pretrained(ref),
        [PRETRAINED_FORMAT],
        wanted="a pretrained CNN backbone",
        hint="pass pretrained:NAME (`mnistlab models list`) or a run folder of "
        "`mnistlab pretrain --objective simclr`",
    )
    meta = model_file.manifest
    if meta.get("objective") != "simclr" or meta.get("backbone") != architecture:
        what = meta.get("backbone") or f"transformer ({meta.get('objective')})"
        raise MnistlabError(
            f"{ref}: a pretrained {what}, not a {architecture} backbone",
            hint=f"pretrain one with `mnistlab pretrain --objective simclr --set "
            f"backbone={architecture}`, or pass --set model=<its backbone>",
        )
    state = {
        k.removeprefix("features."): v
        for k, v in model_file.tensors().items()
        if k.startswith("features.")
    }
    info = {
        "ref": os.fspath(ref),
        "objective": meta["objective"],
        "architecture": architecture,
        "weights_sha256": meta["weights_sha256"],
    }
    return state, info


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, images: torch.Tensor, precision: str = "fp32", batch_size: int = 1024
) -> None:
    """Measure every BatchNorm layer's running statistics again, as the plain mean over
    ``images`` (uint8 ``(N, 1, 28, 28)``, fed as ``x / 255``): what a moving average of weights
    needs, since the statistics it carries belong to no single set of its weights."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        with autocast(device, precision):
            model(images[start : start + batch_size].float() / 255)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def split_labels(
    labels: np.ndarray, n: int, seed: int
) -> tuple[np.ndarray, str]:
    """The indices of the labelled images: those not marked -1 when any is, else a stratified
    draw of ``n`` (:func:`label_subset`). Returns ``(indices, how)``."""
    marked = labels == UNLABELED
    if marked.any():
        return np.flatnonzero(~marked), "the images not labelled -1"
    if n == 0 or n >= len(labels):
        return label_subset(labels, n, seed), "all of them"
    return label_subset(labels, n, seed), f"a stratified draw of {n} (seed {seed})"


def _check_labelled(
    labelled: np.ndarray, total: int, class_names: list[str], config: FewshotConfig
) -> None:
    """Every class needs a labelled image, and a student needs unlabeled ones; both are
    checked before minutes of training."""
    counts = np.bincount(labelled.astype(np.int64), minlength=len(class_names))
    missing = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if missing:
        raise MnistlabError(
            f"{len(labelled)} labelled images leave class(es) {', '.join(missing)} without one: "
            "a class the labels never show cannot be learned",
            hint=f"pass --labels {len(class_names)} or more (the draw takes labels / "
            f"{len(class_names)} per class)",
        )
    if config.student and len(labelled) >= total:
        raise MnistlabError(
            "every training image is labelled: a student has nothing to pseudo-label",
            hint="pass --method consistency --student none --set unlabeled_ratio=0 --set "
            "weak=mnist-sota --set steps=20000 (fine-tuning the backbone on all labels), or "
            "--labels N",
        )


def fewshot(
    config: FewshotConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    data: LabeledImages | None = None,
    max_rounds: int | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> FewshotResult:
    """Train a CNN from few labels (the recipe in this module's docstring); write its run.

    Args:
        config: the settings (default ``FewshotConfig()``); with ``resume``, leave it None.
        out, runs_root, overwrite: where the run folder goes (as in ``train_model``).
        resume: a run folder to continue from its last checkpoint.
        home: dataset cache root.
        data: the training split to use instead of ``config.dataset``'s (labels of -1 mark the
            unlabeled images; then ``config.labels`` is not used). A resumed run needs it again.
        max_rounds: stop after this many rounds in this call (resume later).
        progress: print progress.
        callbacks: more hooks into the loop; loggers are bound to the run.

    Returns:
        A :class:`FewshotResult`.

    Raises:
        MnistlabError: bad config, a missing or unfitting backbone, no labelled image, ...
    """
    from rich.console import Console

    console = Console(quiet=not progress, highlight=False)
    if resume is not None:
        run_dir = Path(resume).expanduser()
        config = FewshotConfig.from_run(run_dir)  # checks the kind, drops the run's facts
    config = config or FewshotConfig()
    config_dict = config.to_dict()
    threads, _ = run_threads(config.num_threads, resume)
    backbone, backbone_info = (
        load_backbone(config.pretrained, config.model) if config.pretrained else (None, None)
    )
    if resume is None and out is not None:
        check_out_dir(out, overwrite)
    device = resolve_device(config.device)
    if data is not None and config.student and config.method == "consistency":
        raise MnistlabError(
            "the student stage pseudo-labels a registered dataset, not training data given here",
            hint="pass a config with student=None (then self-train separately if you wish)",
        )
    train = data if data is not None else load_dataset(config.dataset, "train", home=home)
    test = load_dataset(config.dataset, "test", home=home)
    all_labels = np.asarray(train.labels)
    labeled_idx, how = split_labels(all_labels, config.labels, config.seed)
    class_names = list(train.class_names)
    lab_y_np = all_labels[labeled_idx].astype(np.int64)  # the only labels read after the draw
    _check_labelled(lab_y_np, len(all_labels), class_names, config)
    generated = config.generated_count(class_names)
    if generated:  # other classes than the digits 0-9 fail here, before any folder is made
        from mnistlab.data.synthetic import require_digits

        require_digits(class_names, config.dataset)
    used = announce_precision(device, config.precision, console)
    if resume is None:
        run_dir = (
            prepare_out_dir(out, overwrite)
            if out is not None
            else new_run_dir(f"fewshot-{len(lab_y_np)}-{config.dataset}", runs_root)
        )
        write_run_record(run_dir, {
            "kind": "fewshot", **config_dict, "num_labeled": len(lab_y_np), "threads": threads,
            "num_unlabeled": len(all_labels) - len(lab_y_np), "num_test": len(test.labels),
            "class_names": class_names, "backbone": backbone_info, "precision_used": used,
        }, [config.dataset], home)  # fmt: skip
    if config.method == "propagate":
        extra = f" and {generated:,} generated digits" * bool(generated)
        console.print(
            f"[bold]few-label training[/]: labels of {len(lab_y_np):,} {config.dataset} images "
            f"({how}){extra} spread over a {config.neighbors}-neighbour graph of "
            f"{config.pretrained}'s features, then a {config.student} student -> {run_dir}"
        )
        assert backbone is not None and backbone_info is not None  # FewshotConfig.validate
        return _propagate_and_teach(
            run_dir, config, train, labeled_idx, class_names, backbone, backbone_info,
            generated=generated, drawn=data is None, threads=threads, device=device, home=home,
            console=console, callbacks=callbacks,
        )  # fmt: skip
    images = torch.from_numpy(np.ascontiguousarray(train.images)).unsqueeze(1).to(device)
    lab_x = images[torch.from_numpy(labeled_idx).to(device)]
    lab_y = torch.from_numpy(lab_y_np).to(device)
    n_lab, n_all = len(lab_y), len(images)

    torch.manual_seed(config.seed)
    net = build_model(config.model, num_classes=len(class_names))
    if backbone is not None:
        try:
            net.features.load_state_dict(backbone)
        except RuntimeError as exc:
            raise MnistlabError(f"{config.pretrained}: the backbone does not fit ({exc})") from None
    model = TeacherStudent(net, len(class_names)).to(device)
    console.print(
        f"[bold]few-label training[/] {config.model} from {config.pretrained or 'scratch'} on "
        f"{n_lab:,} labelled ({how}) and {n_all if config.unlabeled_ratio else 0:,} unlabeled "
        f"{config.dataset} images, {config.steps:,} steps, {threads} threads -> {run_dir}"
    )
    prior = torch.bincount(lab_y, minlength=len(class_names)).float() / n_lab
    n_unl = config.batch_size * config.unlabeled_ratio

    def step_fn(rnd: int, b: int, generator: torch.Generator) -> StepOutput:
        pick = torch.randint(n_lab, (config.batch_size,), generator=generator).to(device)
        views = [augment_batch(lab_x[pick], config.weak, generator)]
        if n_unl:
            u = images[torch.randint(n_all, (n_unl,), generator=generator).to(device)]
            views += [augment_batch(u, config.weak, generator),
                      augment_batch(u, config.strong, generator)]  # fmt: skip
        with autocast(device, config.precision):
            logits = model(torch.cat(views).float() / 255).float()
        y = lab_y[pick]
        loss = F.cross_entropy(logits[: len(y)], y)
        sums = {"acc": (logits[: len(y)].detach().argmax(1) == y).sum()}
        if n_unl:
            weak_logits, strong_logits = logits[len(y) :].split(n_unl)
            probs = torch.softmax(weak_logits.detach(), 1)
            if config.align:
                model.mean_prediction.lerp_(probs.mean(0), 1 - ALIGN_MOMENTUM)
                probs = align_distribution(
                    probs, alignment_factors(prior, model.mean_prediction)
                )
            if config.balance:
                probs = balance_classes(probs, prior, config.balance_iterations)
            confidence, pseudo = probs.max(1)
            keep = (confidence >= config.threshold).float()
            u_loss = (F.cross_entropy(strong_logits, pseudo, reduction="none") * keep).mean()
            loss = loss + config.unlabeled_weight * u_loss
            sums.update(unlabeled_loss=u_loss.detach() * len(y), kept=keep.mean() * len(y))
        return StepOutput(loss, len(y), sums)

    rounds = config.rounds
    total = rounds * config.eval_every
    optimizer = make_optimizer(
        model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = Schedule(config.lr, total, kind=config.schedule, warmup=config.warmup)
    extra = bind_loggers(callbacks, run_dir, config_dict)
    hooks: list[Callback] = [*extra, ProgressBar(progress)]
    if config.ema:
        hooks.insert(0, Hooks(step=lambda loop: model.update_teacher(config.ema)))
    with torch_threads(threads):
        result = fit(
            model,
            optimizer,
            step_fn,
            schedule=schedule,
            epochs=rounds,
            steps_per_epoch=config.eval_every,
            seed=config.seed,
            device=device,
            run_dir=run_dir,
            checkpoint_config=config_dict,
            resume=resume is not None,
            callbacks=hooks,
            label="round",
            max_epochs=max_rounds,
            resume_hint=f"mnistlab fewshot --resume {run_dir}",
            console=console,
        )
        if not result.finished:
            return FewshotResult(run_dir, float("nan"), result.train_seconds, n_lab,
                                 result.history, {}, model)  # fmt: skip
        final = model.teacher if config.ema else model.student
        if config.ema:
            pick = torch.randperm(n_all, generator=torch.Generator().manual_seed(config.seed))
            recalibrate_batchnorm(
                final, images[pick[:RECALIBRATION_IMAGES].to(device)], config.precision
            )
        probabilities = predict_proba(
            final, test.images, {"mean": 0.0, "std": 1.0}, device=device,
            precision=config.precision,
        )  # fmt: skip
    final = final.cpu().eval()
    accuracy = float((probabilities.argmax(1) == test.labels).mean())
    report = _finish(
        run_dir, config, final, class_names, test, probabilities, accuracy, result, n_lab,
        backbone_info,
    )  # fmt: skip
    finish_loggers(extra)
    console.print(
        f"[bold]test accuracy {accuracy:.4f}[/]  train {result.train_seconds:.1f}s "
        f"({n_lab} labels) -> {run_dir}"
    )
    out = FewshotResult(run_dir, accuracy, result.train_seconds, n_lab, result.history, report,
                        final)  # fmt: skip
    if config.student:
        out.student_dir, out.student_accuracy = train_student(
            run_dir, config, threads=threads, home=home, progress=progress
        )
    return out


def _propagate_and_teach(
    run_dir: Path,
    config: FewshotConfig,
    train: LabeledImages,
    labeled_idx: np.ndarray,
    class_names: list[str],
    backbone: dict[str, torch.Tensor],
    backbone_info: dict[str, Any],
    *,
    generated: int,
    drawn: bool,
    threads: int,
    device: torch.device,
    home: str | os.PathLike[str] | None,
    console: Any,
    callbacks: Sequence[Callback],
) -> FewshotResult:
    """The ``propagate`` method: pseudo-labels by label propagation over the backbone's
    feature graph (with ``generated`` generated digits as more labelled nodes), then
    ``config.student`` learns them into ``<run>/student`` (continued if interrupted, reused if
    done). ``drawn``: the labels came from a draw, so the hidden ones exist and may be read,
    after the pseudo-labels are fixed, for the report."""
    from mnistlab.data import DatasetSplit
    from mnistlab.pretraining.propagate import embed_images, knn_graph, propagate_labels
    from mnistlab.training.engine import train_model
    from mnistlab.training.recipes import get_deep_recipe

    folder = run_dir / "student"
    if (folder / "metrics.json").is_file():  # finished before: reused, not redone
        from mnistlab.training import load_trained_model

        done = read_json(folder, "metrics.json")
        return FewshotResult(run_dir, float(done["test_accuracy"]), float(done["train_seconds"]),
                             len(labeled_idx), [], {}, load_trained_model(folder)[0], folder,
                             float(done["test_accuracy"]), "propagate")  # fmt: skip
    all_labels = np.asarray(train.labels)
    images, n = np.asarray(train.images), len(all_labels)
    seeds, seed_labels = labeled_idx, all_labels[labeled_idx].astype(np.int64)
    started = time.perf_counter()
    made: dict[str, Any] | None = None
    if generated:  # labelled nodes beside the drawn ones (after the draw)
        from mnistlab.data.synthetic import digits_for, fonts_record

        extra, extra_labels = digits_for(class_names, config.dataset, generated, seed=config.seed)
        images = np.concatenate([images, extra])
        seeds = np.concatenate([seeds, n + np.arange(len(extra))])
        seed_labels = np.concatenate([seed_labels, extra_labels])
        made = {"count": len(extra), **fonts_record()}
    with torch_threads(threads):
        net = build_model(config.model, num_classes=len(class_names))
        net.features.load_state_dict(backbone)
        z = embed_images(
            net.features.to(device), images, precision=config.precision, seed=config.seed
        )
        neighbours, similarities = knn_graph(z, min(config.neighbors, len(z) - 1))
        probs = propagate_labels(
            neighbours, similarities, torch.from_numpy(seeds).to(device),
            torch.from_numpy(seed_labels).to(device), len(class_names),
        )[:n]  # fmt: skip
    pseudo = probs.argmax(1).cpu().numpy().astype(np.int64)
    pseudo[labeled_idx] = all_labels[labeled_idx]
    seconds = time.perf_counter() - started
    unlabeled = np.ones(len(pseudo), dtype=bool)
    unlabeled[labeled_idx] = False
    # Only now, with the pseudo-labels fixed, the hidden labels are read: for the report.
    right = float((pseudo[unlabeled] == all_labels[unlabeled]).mean()) if drawn else None
    facts = {
        "source": "label-propagation",
        "labels": config.labels if drawn else None,  # a draw that `self-train` can repeat
        "label_seed": config.seed,
        "backbone": backbone_info,
        "neighbors": config.neighbors,
        "generated_digits": made,
        "num_labeled": len(labeled_idx),
        "num_pseudo": int(unlabeled.sum()),
        "propagation_seconds": round(seconds, 2),
        "pseudo_label_accuracy": right,
        "resume_hint": f"mnistlab fewshot --resume {run_dir}",
    }
    write_json(run_dir, "propagation.json", facts)
    shown = f", {right:.2%} of them right (the hidden labels, read after)" if right else ""
    progress = not console.quiet
    console.print(
        f"{int(unlabeled.sum()):,} pseudo-labels in {seconds:.1f}s{shown}"
    )
    split = DatasetSplit(
        images=np.asarray(train.images), labels=pseudo, dataset=config.dataset, split="train",
        class_names=tuple(class_names),
    )  # fmt: skip
    given = {"home": home, "progress": progress, "train_split": split, "train_source": facts,
             "callbacks": callbacks}  # fmt: skip
    if (folder / "checkpoint").is_dir():
        result = train_model(resume=folder, **given)
    else:
        student = get_deep_recipe(
            config.student or "", dataset=config.dataset, epochs=config.student_epochs,
            seed=config.seed, num_threads=threads, device=config.device,
        )  # fmt: skip
        result = train_model(student, out=folder, overwrite=True, **given)
    write_json(run_dir, "metrics.json", {
        "method": "propagate", "test_accuracy": result.test_accuracy,
        "train_seconds": seconds + result.train_seconds, "propagation_seconds": seconds,
        "pseudo_label_accuracy": right, "num_labeled": len(labeled_idx),
    })  # fmt: skip
    return FewshotResult(run_dir, result.test_accuracy, seconds + result.train_seconds,
                         len(labeled_idx), result.history, result.report, result.model, folder,
                         result.test_accuracy, "propagate")  # fmt: skip


def _finish(
    run_dir: Path,
    config: FewshotConfig,
    model: nn.Module,
    class_names: list[str],
    test: Any,
    probabilities: np.ndarray,
    accuracy: float,
    result: Any,
    n_lab: int,
    backbone: dict[str, Any] | None,
) -> dict[str, Any]:
    """Write ``model/``, ``metrics.json``, the curves and the report."""
    metrics = {
        "test_accuracy": accuracy,
        "train_seconds": result.train_seconds,
        "num_labeled": n_lab,
        "steps": result.step,
    }
    as_train = TrainConfig(
        model=config.model, dataset=config.dataset, seed=config.seed, precision=config.precision
    ).to_dict()
    write_cnn_model(
        run_dir / "model", model, architecture=config.model, class_names=class_names,
        normalization=(0.0, 1.0), config=as_train, metrics=metrics,
        extra={"fewshot_config": config.to_dict(), "backbone": backbone},
    )  # fmt: skip
    curves = plot_history(
        result.history, ["train_loss", "train_acc", "train_kept"], run_dir / "training_curves.png"
    )
    rows = [
        ["labelled images", n_lab],
        ["backbone", (backbone or {}).get("ref", "none (from scratch)")],
        ["steps", result.step],
        ["unlabeled images per step", config.batch_size * config.unlabeled_ratio],
        ["threshold", config.threshold],
        ["distribution alignment", config.align],
        ["class balancing", config.balance],
        ["saved weights", f"moving average ({config.ema})" if config.ema else "last step"],
        ["parameters", count_parameters(model)],
    ]
    sections = [
        ReportSection("Few-label recipe", html=html_table(["", "value"], rows)),
        ReportSection(
            "Training curves",
            figure=curves,
            caption="Per round: loss and accuracy on the labelled batches (weak views), and "
            "kept = the share of unlabeled images whose pseudo-label passed the threshold.",
        ),
    ]
    report = write_report(
        run_dir,
        images=test.images,
        labels=test.labels,
        probabilities=probabilities,
        class_names=class_names,
        dataset=config.dataset,
        model=config.model,
        train_seconds=result.train_seconds,
        extra={
            "kind": "fewshot",
            "num_labeled": n_lab,
            "seed": config.seed,
            "backbone": backbone,
        },
        sections=sections,
    )
    write_json(run_dir, "metrics.json", metrics)
    return report
