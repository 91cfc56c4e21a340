"""``mnistlab finetune``: adapt a pretrained transformer encoder to classification.

Modes (``FinetuneConfig.mode``):

- ``full``: every weight is trained (with ``pretrained=None``: the same model from scratch);
- ``probe``: linear probe; the encoder is frozen, only the linear head is trained (on features
  computed once, so it is fast);
- ``lora``: the encoder is frozen and LoRA adapters (:mod:`mnistlab.models.lora`) are
  trained with the head; only they are saved (``adapter/``), merged later by ``mnistlab merge``.

Few labels: ``labels=N`` keeps a stratified, seeded subset of N labelled training images
(:func:`mnistlab.data.splits.stratified_indices`); the rest of the split is unlabeled. With
``semi_steps > 0`` a semi-supervised stage follows the supervised steps: each step adds a batch
of unlabeled images, pseudo-labelled by the model itself on the clean image, kept when the
confidence reaches ``semi_threshold``, and learned on a strongly augmented view (consistency
under augmentation, as in FixMatch).

Transfer: ``dataset`` may differ from the pretraining dataset (e.g. pretrained on
Fashion-MNIST, fine-tuned on MNIST).

The test split is used once, at the end, for the report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.data import DatasetSplit, load_dataset
from mnistlab.data.splits import stratified_indices
from mnistlab.errors import MnistlabError
from mnistlab.evaluation.report import ReportSection, html_table
from mnistlab.features.augment import augment_batch
from mnistlab.models.inference import EVAL_BATCH, vit_predict_proba
from mnistlab.models.lora import (
    apply_lora,
    merge_lora,
    save_adapter,
)
from mnistlab.models.transformer import (
    Classifier,
    TransformerConfig,
    count_parameters,
    get_preset,
)
from mnistlab.models.vit_files import (
    load_classifier,
    pretrained_encoder,
    pretrained_path,
    write_classifier,
)
from mnistlab.pretraining.config import FinetuneConfig
from mnistlab.pretraining.figures import plot_history
from mnistlab.runs import (
    check_out_dir,
    new_run_dir,
    prepare_out_dir,
    read_json,
    write_json,
    write_run_record,
)
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

# Distribution alignment (ReMixMatch, Berthelot et al. 2020): before thresholding, the model's
# class probabilities on unlabeled images are multiplied by (class frequencies of the labelled
# set) / (the model's mean prediction on unlabeled images) and renormalised, which stops one
# class from absorbing a look-alike cluster of another (the failure mode of confident
# pseudo-labels). The mean prediction is measured at the start of every round on this many
# unlabeled images, a fixed seeded sample: a pure function of the weights, so a resumed run
# computes exactly what the uninterrupted one did.
ALIGN_SAMPLE = 2048


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns."""

    run_dir: Path
    test_accuracy: float
    train_seconds: float
    trainable_parameters: int
    total_parameters: int
    adapter_bytes: int | None  # LoRA only: size of adapter.safetensors
    history: list[dict[str, Any]]
    report: dict[str, Any]
    model: nn.Module = field(repr=False)


def label_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` labelled images, stratified by class and fixed by ``seed``
    (all indices when ``n`` is 0 or at least the split's size)."""
    total = len(labels)
    if n == 0 or n >= total:
        return np.arange(total, dtype=np.int64)
    return stratified_indices(labels, n, seed)[1]


def alignment_factors(target: torch.Tensor, mean_prediction: torch.Tensor) -> torch.Tensor:
    """Per-class factors of distribution alignment: ``target / mean_prediction`` (both class
    distributions, shape ``(classes,)``; the mean is clamped away from 0)."""
    return target / mean_prediction.clamp_min(1e-6)


def align_distribution(probs: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Distribution alignment (ReMixMatch): ``probs * factors`` renormalised per row.

    A class the model predicts more often than the target has a factor below 1, so an image
    it is torn on goes to the under-predicted class; a confident row barely moves."""
    aligned = probs * factors
    return aligned / aligned.sum(1, keepdim=True)


def balance_classes(
    probs: torch.Tensor, target: torch.Tensor, iterations: int = 3
) -> torch.Tensor:
    """Class-balanced pseudo-label probabilities for one batch (Sinkhorn-Knopp, as in SwAV).

    ``probs`` (batch, classes) is rescaled, alternately per class and per image, until the
    classes' shares of the batch come near ``target`` (classes,) and each row still sums to 1.
    A class the model gives more than its share of the batch loses its least certain
    images to the classes they were torn with; a confident row barely moves. This stops a
    look-alike cluster (nines read as sevens) from being learnt as the other class at a few
    labels per class, where the running alignment of :func:`align_distribution` is too slow.
    """
    batch = len(probs)
    q = probs.double().clamp_min(1e-12)  # in double: the row scalings multiply
    q = q / q.sum()
    target = target.double() / target.sum()
    for _ in range(iterations):
        q = q * (target / q.sum(0))  # each class its share of the batch
        q = q / (q.sum(1, keepdim=True) * batch)  # each image 1/batch of the mass
    return (q * batch).to(probs.dtype)


def _scratch_transformer(config: FinetuneConfig) -> TransformerConfig:
    tc = get_preset(config.preset)
    if config.patch_size is not None:
        tc = TransformerConfig(**{**tc.to_dict(), "patch_size": config.patch_size})
    return tc


def build_classifier(
    config: FinetuneConfig, num_classes: int
) -> tuple[Classifier, dict[str, Any] | None]:
    """The classifier to train: its encoder loaded from ``config.pretrained`` (see
    :func:`pretrained_encoder`) or freshly initialised; returns ``(model, info or None)``."""
    if config.pretrained is None:
        return Classifier(_scratch_transformer(config), num_classes), None
    tc, state, info = pretrained_encoder(config.pretrained, _scratch_transformer(config))
    model = Classifier(tc, num_classes)
    model.encoder.load_state_dict(state)
    return model, info


def _saved_config(run_dir: Path) -> tuple[dict[str, Any], FinetuneConfig]:
    """A fine-tuning run's ``config.json`` and the :class:`FinetuneConfig` it holds."""
    saved = read_json(run_dir, "config.json")
    if saved.get("kind") != "finetune":
        raise MnistlabError(f"{run_dir} is not a fine-tuning run (kind {saved.get('kind')!r})")
    config = FinetuneConfig.from_dict(
        {k: v for k, v in saved.items() if k not in FinetuneConfig.run_keys}
    )
    return saved, config


def finetune(
    config: FinetuneConfig | None,
    *,
    out: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    max_rounds: int | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    misclassified: int = 36,
) -> FinetuneResult:
    """Fine-tune (or train from scratch) a transformer classifier and write its run folder.

    Args:
        config: the settings; with ``resume``, pass None (the run's config.json is used).
        out, runs_root, overwrite: where the run folder goes (as in ``train_model``).
        resume: a run folder to continue from its last checkpoint.
        home: dataset cache root.
        max_rounds: stop after this many rounds in this call (resume later).
        progress: print progress.
        callbacks: more hooks into the loop, before the progress bar; loggers
            (:mod:`mnistlab.training.loggers`) are bound to the run and log its folder.
        misclassified: most images in the report's gallery of mistakes.

    Returns:
        A :class:`FinetuneResult` (``test_accuracy`` is NaN when ``max_rounds`` stopped it).

    Raises:
        MnistlabError: bad config, a pretrained run that is missing or not an MAE, ...
    """
    from rich.console import Console

    console = Console(quiet=not progress, highlight=False)
    if resume is not None:
        run_dir = Path(resume).expanduser()
        _, config = _saved_config(run_dir)
    if config is None:
        raise MnistlabError("finetune() needs a config (or resume=RUN_DIR)")
    config_dict = config.to_dict()
    threads, _ = run_threads(config.num_threads, resume)  # kept when resuming: bit-exact
    if config.pretrained is not None:  # before minutes of data loading
        pretrained_path(config.pretrained)
    if resume is None and out is not None:
        check_out_dir(out, overwrite)
    device = resolve_device(config.device)
    train = load_dataset(config.dataset, "train", home=home)
    test = load_dataset(config.dataset, "test", home=home)
    labeled_idx = label_subset(train.labels, config.labels, config.seed)
    unlabeled_mask = np.ones(len(train.labels), dtype=bool)
    unlabeled_mask[labeled_idx] = False
    images = torch.from_numpy(np.ascontiguousarray(train.images)).unsqueeze(1).to(device)
    lab_x = images[torch.from_numpy(labeled_idx).to(device)]
    lab_y = torch.from_numpy(train.labels[labeled_idx].astype(np.int64)).to(device)
    unl_x = images[torch.from_numpy(np.flatnonzero(unlabeled_mask)).to(device)]
    n_lab, n_unl = len(lab_y), len(unl_x)
    class_names = list(train.class_names)
    if config.semi_steps and n_unl == 0:
        raise MnistlabError(
            "the semi-supervised stage needs unlabeled images",
            hint="use --labels N smaller than the training split",
        )

    torch.manual_seed(config.seed)
    model, pre_meta = build_classifier(config, len(class_names))  # a bad --from fails here
    if resume is None:  # ... before the run folder exists
        run_dir = (
            prepare_out_dir(out, overwrite)
            if out is not None
            else new_run_dir(f"finetune-{config.mode}-{config.dataset}", runs_root)
        )
    lora_layers: list[str] = []
    if config.mode == "lora":
        lora_layers = apply_lora(
            model, rank=config.lora_rank, alpha=config.lora_alpha, targets=config.lora_targets
        )
    elif config.mode == "probe":
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    model.to(device)
    trainable = count_parameters(model, trainable_only=True)
    total = count_parameters(model)
    used = announce_precision(device, config.precision, console)
    if resume is None:
        write_run_record(run_dir, {
            "kind": "finetune", **config_dict, "num_labeled": n_lab, "threads": threads,
            "precision_used": used,
            "num_unlabeled": n_unl, "num_test": len(test.labels), "class_names": class_names,
        }, [config.dataset], home)  # fmt: skip
    source = config.pretrained or "scratch"
    console.print(
        f"[bold]fine-tuning[/] ({config.mode}) {source} on {n_lab:,} labelled "
        f"{config.dataset} images; {trainable:,} of {total:,} parameters trainable -> {run_dir}"
    )

    # Linear probe: the frozen encoder's features are computed once.
    lab_features = None
    if config.mode == "probe":
        with torch_threads(threads), torch.no_grad():
            parts = []
            for start in range(0, n_lab, EVAL_BATCH):
                with autocast(device, config.precision):
                    parts.append(model.features(lab_x[start : start + EVAL_BATCH].float() / 255))
            lab_features = torch.cat(parts).float()

    batch = min(config.batch_size, n_lab)
    perms: dict[int, torch.Tensor] = {}

    def labeled_batch(step: int) -> torch.Tensor:
        """Indices into the labelled set: consecutive slices of seeded permutations."""
        positions = torch.arange(step * batch, (step + 1) * batch)
        out = torch.empty(batch, dtype=torch.long)
        for k in positions.div(n_lab, rounding_mode="floor").unique().tolist():
            if k not in perms:
                if len(perms) > 4:
                    perms.clear()
                perms[k] = epoch_permutation(n_lab, config.seed, k)
            sel = positions.div(n_lab, rounding_mode="floor") == k
            out[sel] = perms[k][positions[sel] % n_lab]
        return out.to(device)

    align: dict[str, Any] = {}

    def alignment(rnd: int) -> torch.Tensor:
        """Per-class factors of distribution alignment for round ``rnd`` (see ALIGN_SAMPLE)."""
        if "images" not in align:  # first use: the fixed sample and the labelled prior
            pick = torch.randperm(
                n_unl, generator=torch.Generator().manual_seed(config.seed + 7919)
            )
            align["images"] = unl_x[pick[:ALIGN_SAMPLE].to(device)]
            align["prior"] = torch.bincount(lab_y, minlength=len(class_names)).float() / n_lab
        if align.get("round") != rnd:
            mean = vit_predict_proba(model, align["images"], config.precision).mean(0)
            model.train()
            align["round"] = rnd
            align["factor"] = alignment_factors(
                align["prior"], torch.from_numpy(mean).float().to(device)
            )
        return align["factor"]

    def step_fn(rnd: int, b: int, generator: torch.Generator) -> StepOutput:
        step = rnd * config.eval_every + b
        idx = labeled_batch(step)
        y = lab_y[idx]
        if lab_features is not None:
            logits = model.head(lab_features[idx])
            correct = (logits.detach().argmax(1) == y).sum()
            return StepOutput(F.cross_entropy(logits, y), len(y), {"acc": correct})
        x = lab_x[idx]
        if config.augment:
            x = augment_batch(x, config.augment)
        with autocast(device, config.precision):
            logits = model(x.float() / 255).float()
        loss = F.cross_entropy(logits, y)
        sums = {"acc": (logits.detach().argmax(1) == y).sum()}
        if step >= config.steps:  # semi-supervised stage
            u = unl_x[torch.randint(n_unl, (batch * config.semi_ratio,), device=device)]
            with torch.no_grad(), autocast(device, config.precision):
                probs = torch.softmax(model(u.float() / 255).float(), 1)
            if config.semi_align:
                probs = align_distribution(probs, alignment(rnd))
            confidence, pseudo = probs.max(1)
            keep = (confidence >= config.semi_threshold).float()
            strong = augment_batch(u, config.semi_augment)
            with autocast(device, config.precision):
                u_logits = model(strong.float() / 255).float()
            u_loss = (F.cross_entropy(u_logits, pseudo, reduction="none") * keep).mean()
            loss = loss + config.semi_weight * u_loss
            # Per-batch means, weighted like the labelled batch in the round's means.
            sums.update(unlabeled_loss=u_loss.detach() * len(y), kept=keep.mean() * len(y))
        return StepOutput(loss, len(y), sums)

    rounds = config.total_steps // config.eval_every
    optimizer = make_optimizer(
        model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = Schedule(
        config.lr, config.total_steps, kind=config.schedule, warmup=config.warmup
    )
    extra = bind_loggers(callbacks, run_dir, config_dict)
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
            callbacks=[*extra, ProgressBar(progress)],
            label="round",
            max_epochs=max_rounds,
            resume_hint=f"mnistlab finetune --resume {run_dir}",
            console=console,
        )
        if not result.finished:
            return FinetuneResult(
                run_dir,
                float("nan"),
                result.train_seconds,
                trainable,
                total,
                None,
                result.history,
                {},
                model,
            )
        probabilities = vit_predict_proba(model, test.images, config.precision)
    accuracy = float((probabilities.argmax(1) == test.labels).mean())
    adapter_bytes = _write_outputs(
        run_dir, model, config, class_names, pre_meta, lora_layers, accuracy, result.train_seconds
    )
    plot_history(
        result.history, ["train_loss", "train_acc", "train_kept"], run_dir / "training_curves.png"
    )
    report = _write_finetune_report(
        run_dir,
        config,
        test,
        probabilities,
        train_seconds=result.train_seconds,
        num_labeled=n_lab,
        trainable=trainable,
        total=total,
        adapter_bytes=adapter_bytes,
        misclassified=misclassified,
    )
    write_json(
        run_dir,
        "metrics.json",
        {"test_accuracy": accuracy, "train_seconds": result.train_seconds, "num_labeled": n_lab},
    )
    finish_loggers(extra)
    console.print(
        f"[bold]test accuracy {accuracy:.4f}[/]  train {result.train_seconds:.1f}s -> {run_dir}"
    )
    return FinetuneResult(
        run_dir,
        accuracy,
        result.train_seconds,
        trainable,
        total,
        adapter_bytes,
        result.history,
        report,
        model,
    )


def _write_finetune_report(
    run_dir: Path,
    config: FinetuneConfig,
    test: DatasetSplit,
    probabilities: np.ndarray,
    *,
    train_seconds: float | None,
    num_labeled: int,
    trainable: int,
    total: int,
    adapter_bytes: int | None,
    misclassified: int = 36,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's ``report.json`` / ``report.html``: metrics, a fine-tuning table, curves."""
    from mnistlab.evaluation.report import write_report

    source = config.pretrained or "scratch"
    rows = [
        ["mode", config.mode],
        ["pretrained", source],
        ["labelled images", num_labeled],
        ["trainable parameters", trainable],
        ["total parameters", total],
    ]
    if adapter_bytes is not None:
        rows.append(["adapter bytes", adapter_bytes])
        rows.append(["full weights bytes (fp32)", 4 * total])
    sections = [ReportSection("Fine-tuning", html=html_table(["", "value"], rows))]
    curves = run_dir / "training_curves.png"
    if curves.is_file():
        sections.append(
            ReportSection(
                "Training curves",
                figure=curves,
                caption="Per round: mean loss and accuracy on the (augmented) labelled batches; "
                "kept = share of unlabeled images whose pseudo-label passed the threshold.",
            )
        )
    return write_report(
        run_dir,
        images=test.images,
        labels=test.labels,
        probabilities=probabilities,
        class_names=list(test.class_names),
        dataset=config.dataset,
        model=f"transformer-{config.mode}",
        train_seconds=train_seconds,
        misclassified=misclassified,
        extra={
            "kind": "finetune",
            "mode": config.mode,
            "pretrained": source,
            "num_labeled": num_labeled,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "adapter_bytes": adapter_bytes,
            "seed": config.seed,
            **(extra or {}),
        },
        sections=sections,
    )


def _write_outputs(
    run_dir: Path,
    model: nn.Module,
    config: FinetuneConfig | None,
    class_names: list[str],
    pre_meta: dict[str, Any] | None,
    lora_layers: list[str],
    accuracy: float,
    train_seconds: float,
) -> int | None:
    """``adapter/`` (LoRA) or ``model/`` (full, probe); returns the adapter's bytes or None."""
    transformer = model.encoder.config.to_dict()
    common = {
        "transformer": transformer,
        "num_classes": len(class_names),
        "class_names": class_names,
        "input": "uint8 pixels / 255 as float (N, 1, 28, 28)",
        "finetune_config": config.to_dict(),
        "metrics": {"test_accuracy": accuracy, "train_seconds": train_seconds},
    }
    if config.mode == "lora":
        meta = {
            **common,
            "rank": config.lora_rank,
            "alpha": config.lora_alpha,
            "targets": list(config.lora_targets),
            "layers": lora_layers,
            "base_model": pre_meta["base_model"] if pre_meta else None,
            "base_weights_sha256": pre_meta["weights_sha256"] if pre_meta else None,
        }
        _, size = save_adapter(run_dir / "adapter", model, meta)
        return size
    write_classifier(run_dir / "model", model, common)
    return None


def merge_adapter(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
    check_images: np.ndarray | None = None,
) -> tuple[Path, float]:
    """Fold a LoRA run's adapter into its base weights and write a plain classifier.

    Args:
        run_dir: a ``mnistlab finetune --mode lora`` run folder.
        out: where the merged ``model/`` goes (default ``<run_dir>/merged``).
        overwrite: replace an existing merged model there.
        check_images: uint8 images on which the merged and unmerged models are compared
            (default: 256 zero-to-random images made from a fixed seed).

    Returns:
        ``(model folder, max |merged - unmerged| over the check images' logits)``.

    Raises:
        MnistlabError: not a LoRA run, or ``out`` holds a model and ``overwrite`` is false.
    """
    folder = Path(run_dir).expanduser()
    if not (folder / "adapter" / "adapter.json").is_file():
        raise MnistlabError(
            f"{folder} has no LoRA adapter (adapter/adapter.json)",
            hint="pass a run folder written by `mnistlab finetune --mode lora`",
        )
    target = Path(out).expanduser() if out is not None else folder / "merged"
    if (target / "model" / "model.json").exists() and not overwrite:
        raise MnistlabError(f"{target / 'model'} exists", hint="pass --overwrite")
    model, meta = load_classifier(folder)
    if check_images is None:
        gen = torch.Generator().manual_seed(0)
        check = torch.randint(0, 256, (256, 1, 28, 28), generator=gen, dtype=torch.uint8)
    else:
        check = torch.as_tensor(np.asarray(check_images)).reshape(-1, 1, 28, 28)
    with torch.no_grad():
        before = model(check.float() / 255)
        merge_lora(model)
        after = model(check.float() / 255)
    diff = float((before - after).abs().max())
    keep = {k: v for k, v in meta.items() if k in ("transformer", "num_classes", "class_names")}
    write_classifier(
        target / "model",
        model,
        {
            **keep,
            "input": "uint8 pixels / 255 as float (N, 1, 28, 28)",
            "merged_from": str(folder.resolve()),
            "merge_max_abs_logit_diff": diff,
        },
    )
    return target / "model", diff
