"""Evaluate a finished run again: reload its model, predict its test split, rewrite its report.

One table (:data:`RUN_KINDS`) says, for each kind of run, how its model is loaded and which
test split it is scored on; the model itself is loaded through the models stage's one
loader table (:func:`mnistlab.models.inference.load_predictor`), so this stage depends on
models and data only. What other stages added to the report (training curves, a fine-tuning
table, robustness results) is carried over as it was.
"""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.data import DatasetSplit, load_dataset
from mnistlab.data.splits import recipe_split
from mnistlab.errors import MnistlabError
from mnistlab.evaluation.report import _CORE_KEYS, ReportSection, write_report
from mnistlab.runs import read_json

_SECTION = re.compile(r'<section id="[^"]*"><h2>(.*?)</h2>(.*?)</section>', re.DOTALL)


def carried_sections(run_dir: str | os.PathLike[str], drop_prefix: str = "") -> list[ReportSection]:
    """The sections that stages other than evaluation added to a run's ``report.html`` (the
    titles ``report.json`` lists under ``sections``), verbatim; titles starting with
    ``drop_prefix`` (when given) are left out. Empty when the run has no report yet.

    Raises:
        MnistlabError: ``report.json`` lists a section the page lacks (a hand-edited page).
    """
    run = Path(run_dir)
    if not (run / "report.json").is_file() or not (run / "report.html").is_file():
        return []
    report = read_json(run, "report.json")
    page = (run / "report.html").read_text(encoding="utf-8")
    bodies = {html.unescape(title): body for title, body in _SECTION.findall(page)}
    kept = []
    for title in report.get("sections", []):
        if drop_prefix and title.startswith(drop_prefix):
            continue
        if title not in bodies:
            raise MnistlabError(
                f"{run / 'report.html'} lacks its section {title!r}",
                hint="rewrite the report first with `mnistlab evaluate RUN_DIR`",
            )
        kept.append(ReportSection(title, html=bodies[title]))
    return kept


@dataclass
class Scored:
    """What a run kind's entry of :data:`RUN_KINDS` gives: the test split and the model's
    probabilities on it, with the names for the report."""

    test: DatasetSplit
    probabilities: np.ndarray
    dataset: str
    model: str


def _classic(run: Path, config: dict[str, Any], home: Any) -> Scored:
    from mnistlab.models.estimator_files import load_estimator
    from mnistlab.models.inference import predict_scores

    _, test = recipe_split(config["dataset"], config["split"], home)
    # load_estimator (not the generic loader): it also explains a file of the older format
    probabilities = predict_scores(load_estimator(run), test.images)
    label = f"{config['model']} ({config.get('recipe', 'default')})"
    return Scored(test, probabilities, config["dataset"], label)


def _single(run: Path, config: dict[str, Any], home: Any) -> Scored:
    """A deep run or a fine-tuning run (LoRA: its adapter on its base model, unmerged)."""
    from mnistlab.models.inference import load_predictor

    test = load_dataset(config["dataset"], "test", home=home)
    probabilities = load_predictor(run).predict_proba(test.images)
    label = config.get("model") or f"transformer-{config.get('mode', 'full')}"
    return Scored(test, probabilities, config["dataset"], label)


def _ensemble(run: Path, config: dict[str, Any], home: Any) -> Scored:
    """The members' probabilities, each with the ensemble's test-time augmentation,
    averaged in the members' order."""
    from mnistlab.models.inference import load_predictor

    test = load_dataset(config["dataset"], "test", home=home)
    total = None
    for member in config["members"]:
        p = load_predictor(member).predict_proba(test.images, tta=config.get("tta"))
        total = p if total is None else total + p
    if total is None:
        raise MnistlabError(f"{run}: an ensemble without members")
    probabilities = total / len(config["members"])
    return Scored(test, probabilities, config["dataset"], f"ensemble of {len(config['members'])}")


# Run kind (config.json's "kind") -> how its model is scored on its test split.
RUN_KINDS: dict[str, Callable[[Path, dict[str, Any], Any], Scored]] = {
    "classic": _classic,
    "deep": _single,
    "finetune": _single,
    "fewshot": _single,
    "ensemble": _ensemble,
}


def evaluate_run(
    run_dir: str | os.PathLike[str], *, home: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Reload a run's model, predict its test split again, and rewrite its report.

    Works for every kind in :data:`RUN_KINDS`: classic and deep training runs, fine-tuning
    runs (LoRA: base model + adapter), ensembles (members and test-time augmentation again).
    The report keeps what the run's earlier report held beyond the metrics (its details and
    the sections other stages added).

    Returns:
        The report dict (also written as ``report.json`` / ``report.html`` in ``run_dir``).

    Raises:
        MnistlabError: not a run folder, an unknown kind, or a model that cannot be loaded.
    """
    run = Path(run_dir)
    config = read_json(run, "config.json")
    kind = config.get("kind")
    if kind not in RUN_KINDS:
        raise MnistlabError(
            f"{run}: runs of kind {kind!r} have no test-set model to evaluate",
            hint="pass a folder written by `mnistlab train`, `ensemble` or `finetune`",
        )
    if not (run / "metrics.json").is_file() and kind in ("deep", "finetune", "fewshot"):
        command = {"deep": "train", "finetune": "finetune", "fewshot": "fewshot"}[kind]
        resumable = (run / "checkpoint").is_dir()
        raise MnistlabError(
            f"{run} did not finish training: it has no final model yet",
            hint=f"resume it first: mnistlab {command} --resume {run}"
            if resumable
            else f"train it again: mnistlab {command} --config {run}",
        )
    before = read_json(run, "report.json") if (run / "report.json").is_file() else {}
    metrics = read_json(run, "metrics.json") if (run / "metrics.json").is_file() else {}
    start = time.perf_counter()
    scored = RUN_KINDS[kind](run, config, home)
    predict_seconds = time.perf_counter() - start
    extra = {k: v for k, v in before.items() if k not in _CORE_KEYS}
    extra.update(predict_seconds=predict_seconds, evaluated_again=True)
    return write_report(
        run,
        images=scored.test.images,
        labels=scored.test.labels,
        probabilities=scored.probabilities,
        class_names=scored.test.class_names,
        dataset=scored.dataset,
        model=before.get("model", scored.model),
        train_seconds=metrics.get("train_seconds", before.get("train_seconds")),
        extra=extra,
        sections=carried_sections(run) or None,
    )
