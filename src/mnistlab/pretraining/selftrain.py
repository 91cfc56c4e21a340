"""Self-training: a few-label teacher labels the rest of the training split, a student learns
from those pseudo-labels (Lee 2013; "Noisy Student", Xie et al. 2020).

The teacher is a run that saw only ``N`` labels: a ``mnistlab finetune --labels N`` run
(typically after its semi-supervised stage) or an earlier self-training run. The student is
any deep model of the training engine (``fast-cnn``, ``resnet-small``, ...), trained by
:func:`mnistlab.training.engine.train_model` on

* the ``N`` labelled images with their true labels, and
* every other training image with the teacher's most probable class, when the teacher's
  probability is at least ``threshold`` (0 keeps them all).

No label of the unlabeled images is read to train: the labelled subset is the teacher's own
(same ``labels`` and ``seed``, so the same stratified draw). The hidden labels are read once,
after the pseudo-labels are fixed, to *report* how many pseudo-labels are right
(``pseudo_label_accuracy`` in ``config.json``'s ``train_data``) — a diagnostic a real
unlabeled set would not have.

The student is an ordinary ``deep`` run: ``mnistlab evaluate``, ``robustness``, ``export`` and
``serve`` take it as they take any trained model. Its ``config.json`` records the teacher
(path, kind, weights SHA-256, test accuracy), the threshold, the counts and the SHA-256 of
the images and labels it trained on; a self-training run can be the teacher of the next
round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.data import DatasetSplit, load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.models.inference import load_predictor
from mnistlab.pretraining.config import FewshotConfig
from mnistlab.pretraining.finetune import label_subset
from mnistlab.runs import check_out_dir, read_json
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import TrainResult, train_model

__all__ = ["STUDENT_EPOCHS", "PseudoLabels", "pseudo_label", "self_train", "teacher_probabilities"]

# Epochs of the default student (fast-cnn's default recipe trains 1 epoch on 60,000 true
# labels; on pseudo-labels 3 did better, docs/benchmarks.md "Self-training").
STUDENT_EPOCHS = 3


@dataclass
class PseudoLabels:
    """A training split labelled by a teacher (what :func:`pseudo_label` returns).

    Attributes:
        split: images and labels to train on: the labelled images with their true labels,
            then the kept pseudo-labelled ones, in training-split order.
        teacher: facts about the teacher run (``run``, ``kind``, ``weights_sha256``,
            ``test_accuracy``, ``dataset``, ``labels``, ``label_seed``).
        num_labeled: images with their true label.
        num_pseudo: images with the teacher's label (confidence >= ``threshold``).
        num_dropped: unlabeled images below the threshold, left out.
        threshold: the confidence threshold used.
        pseudo_label_accuracy: fraction of the kept pseudo-labels equal to the hidden true
            label (a diagnostic; read after the labels were fixed, never used to train).
    """

    split: DatasetSplit
    teacher: dict[str, Any]
    num_labeled: int
    num_pseudo: int
    num_dropped: int
    threshold: float
    pseudo_label_accuracy: float

    def record(self) -> dict[str, Any]:
        """What ``config.json`` keeps under ``train_data`` (see :func:`self_train`)."""
        return {
            "source": "self-training",
            "teacher": self.teacher,
            "threshold": self.threshold,
            "labels": self.teacher["labels"],
            "label_seed": self.teacher["label_seed"],
            "num_labeled": self.num_labeled,
            "num_pseudo": self.num_pseudo,
            "num_dropped": self.num_dropped,
            "pseudo_label_accuracy": self.pseudo_label_accuracy,
            "resume_hint": "resume with `mnistlab self-train --resume RUN_DIR`",
        }


def _teacher_info(run_dir: Path) -> dict[str, Any]:
    """Kind, dataset and labelled subset (``labels``, ``label_seed``) of a teacher run."""
    if not (run_dir / "config.json").is_file():
        raise MnistlabError(
            f"{run_dir}: not a run folder (no config.json)",
            hint="pass a `mnistlab finetune --labels N` run or a `mnistlab self-train` run",
        )
    config = read_json(run_dir, "config.json")
    kind = config.get("kind")
    if kind in ("finetune", "fewshot"):
        labels, seed = int(config.get("labels", 0)), int(config.get("seed", 0))
    elif kind == "deep" and (config.get("train_data") or {}).get("labels") and config[
        "train_data"
    ].get("source") in ("self-training", "label-propagation"):
        data = config["train_data"]
        labels, seed = int(data["labels"]), int(data["label_seed"])
    elif kind == "deep":
        labels, seed = 0, 0
    else:
        raise MnistlabError(
            f"{run_dir} is a {kind!r} run; a teacher is a fine-tuning, few-label or "
            "deep-learning run",
            hint="pass a `mnistlab finetune --labels N` run or a `mnistlab self-train` run",
        )
    if not (run_dir / "metrics.json").is_file():
        raise MnistlabError(
            f"{run_dir} has not finished training (no metrics.json)",
            hint="finish it first (resume it), then use it as a teacher",
        )
    if labels == 0:
        raise MnistlabError(
            f"{run_dir} trained on every label of {config.get('dataset')}'s training split: "
            "there are no unlabeled images to pseudo-label",
            hint="self-training starts from a few-label run: `mnistlab finetune --labels N`",
        )
    model = read_json(run_dir / "model" if (run_dir / "model").is_dir() else run_dir, "model.json")
    metrics = read_json(run_dir, "metrics.json")
    return {
        "run": str(run_dir.resolve()),
        "kind": kind,
        "dataset": config["dataset"],
        "labels": labels,
        "label_seed": seed,
        "weights_sha256": model.get("weights_sha256"),
        "test_accuracy": metrics.get("test_accuracy"),
    }


def teacher_probabilities(run_dir: str | os.PathLike[str], images: np.ndarray) -> np.ndarray:
    """Class probabilities ``(N, classes)`` (float64) of a fine-tuning or deep-learning run on
    uint8 images ``(N, 28, 28)``. A deep run's ``calibration.json`` temperature is applied
    (as ``mnistlab predict`` applies it)."""
    path = Path(run_dir).expanduser()
    if read_json(path, "config.json").get("kind") == "finetune":
        return load_predictor(path).predict_proba(images)
    from mnistlab.shipping.model import load_model

    return load_model(path).probabilities(images)


def pseudo_label(
    teacher: str | os.PathLike[str],
    *,
    threshold: float = 0.0,
    home: str | os.PathLike[str] | None = None,
) -> PseudoLabels:
    """Label the teacher's unlabeled training images with its predictions.

    Args:
        teacher: a finished ``mnistlab finetune --labels N`` run, or a ``mnistlab self-train``
            run (its labelled subset is carried on).
        threshold: keep a pseudo-label when the teacher's probability is at least this, in
            [0, 1); 0 keeps every image.
        home: dataset cache root.

    Returns:
        :class:`PseudoLabels`.

    Raises:
        MnistlabError: not a finished few-label run, or a threshold outside [0, 1).
    """
    if not 0 <= threshold < 1:
        raise MnistlabError(f"threshold must be in [0, 1); got {threshold}")
    run_dir = Path(teacher).expanduser()
    info = _teacher_info(run_dir)
    train = load_dataset(info["dataset"], "train", home=home)
    labeled = np.zeros(len(train), dtype=bool)
    labeled[label_subset(train.labels, info["labels"], info["label_seed"])] = True
    unlabeled = np.flatnonzero(~labeled)
    probs = teacher_probabilities(run_dir, train.images[unlabeled])
    kept = unlabeled[probs.max(1) >= threshold]
    labels = train.labels.astype(np.int64)  # a copy; the unlabeled entries are replaced now
    labels[unlabeled] = probs.argmax(1)
    # Only now, with the pseudo-labels fixed, the hidden labels are read: for the report.
    accuracy = float((labels[kept] == train.labels[kept]).mean()) if len(kept) else float("nan")
    use = labeled.copy()
    use[kept] = True
    return PseudoLabels(
        split=replace(train.subset(np.flatnonzero(use)), labels=labels[use]),
        teacher=info,
        num_labeled=int(labeled.sum()),
        num_pseudo=len(kept),
        num_dropped=int(len(unlabeled) - len(kept)),
        threshold=threshold,
        pseudo_label_accuracy=accuracy,
    )


def self_train(
    teacher: str | os.PathLike[str] | None = None,
    config: TrainConfig | None = None,
    *,
    threshold: float = 0.0,
    out: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a student on a teacher's pseudo-labels (see the module docstring).

    Args:
        teacher: the few-label teacher run (see :func:`pseudo_label`); None with ``resume``.
        config: the student's training config (default: ``fast-cnn``'s default recipe with
            ``STUDENT_EPOCHS`` epochs); its ``dataset`` must be the teacher's. None with ``resume``.
        threshold: the teacher's confidence needed to keep a pseudo-label (0 keeps all).
        out, runs_root, overwrite: the run folder, as in ``train_model``.
        resume: an interrupted self-training run: the pseudo-labels are made again (the
            same teacher gives the same labels; their SHA-256 is checked) and training goes on.
        home: dataset cache root.
        progress: print progress.

    Returns:
        The student's :class:`~mnistlab.training.engine.TrainResult` (test accuracy on the
        teacher's dataset's test split).

    Raises:
        MnistlabError: a bad teacher, a dataset mismatch, or an unresumable run.
    """
    from rich.console import Console

    console = Console(quiet=not progress, highlight=False)
    if resume is not None:
        run_dir = Path(resume).expanduser()
        data = read_json(run_dir, "config.json").get("train_data") or {}
        if data.get("source") != "self-training":
            raise MnistlabError(
                f"{run_dir} is not a self-training run",
                hint="resume other runs with `mnistlab train --resume RUN_DIR`",
            )
        console.print(f"pseudo-labelling again with the teacher {data['teacher']['run']} ...")
        labels = pseudo_label(data["teacher"]["run"], threshold=data["threshold"], home=home)
        return train_model(
            resume=run_dir,
            home=home,
            progress=progress,
            train_split=labels.split,
            train_source=labels.record(),
        )
    if teacher is None:
        raise MnistlabError("self_train() needs a teacher run (or resume=RUN_DIR)")
    if out is not None:
        check_out_dir(out, overwrite)  # raises before the teacher labels 60,000 images
    console.print(f"pseudo-labelling the unlabeled training images with the teacher {teacher} ...")
    labels = pseudo_label(teacher, threshold=threshold, home=home)
    console.print(
        f"{labels.num_labeled:,} labelled + {labels.num_pseudo:,} pseudo-labelled images "
        f"({labels.num_dropped:,} below the threshold {threshold})"
    )
    dataset = labels.teacher["dataset"]
    if config is None:
        from mnistlab.training.recipes import get_deep_recipe

        config = get_deep_recipe("fast-cnn", dataset=dataset, epochs=STUDENT_EPOCHS)
    if config.dataset != dataset:
        raise MnistlabError(
            f"the student's dataset is {config.dataset!r} but the teacher learned {dataset!r}",
            hint=f"train the student on {dataset} (its test split scores the student)",
        )
    return train_model(
        config,
        out=out,
        runs_root=runs_root,
        overwrite=overwrite,
        home=home,
        progress=progress,
        train_split=labels.split,
        train_source=labels.record(),
    )


def train_student(
    run_dir: str | os.PathLike[str],
    config: FewshotConfig,
    *,
    threads: int = 0,
    home: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[Path, float]:
    """The recipe's last stage: self-training of ``config.student`` on a finished few-label
    run's pseudo-labels, into ``<run>/student`` (continued if interrupted, reused if done).

    Returns:
        ``(student run folder, its test accuracy)``.
    """
    run_dir = Path(run_dir)
    if not config.student:
        raise MnistlabError("the config names no student", hint="set student=resnet-small")
    from mnistlab.training.recipes import get_deep_recipe

    folder = run_dir / "student"
    if not (folder / "metrics.json").is_file():
        if (folder / "checkpoint").is_dir():
            self_train(resume=folder, home=home, progress=progress)
        else:
            student = get_deep_recipe(
                config.student, dataset=config.dataset, epochs=config.student_epochs,
                seed=config.seed, num_threads=threads,
            )  # fmt: skip
            self_train(run_dir, student, out=folder, overwrite=True, home=home, progress=progress)
    return folder, float(read_json(folder, "metrics.json")["test_accuracy"])
