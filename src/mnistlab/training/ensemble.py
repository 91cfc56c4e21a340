"""Test-time augmentation (TTA) and ensembles of deep-learning runs.

``predict_proba`` gives a trained model's class probabilities on uint8 images, optionally
averaged over a few fixed transformed copies of each image (TTA). ``ensemble_runs`` averages
the test-split probabilities of several deep runs on the same dataset and writes the result as
a run folder of kind ``"ensemble"`` with its own report. See ``docs/training.md``.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.errors import MnistlabError
from mnistlab.models.inference import TTA_MODES as TTA_MODES  # re-exported
from mnistlab.models.inference import predict_proba, tta_views
from mnistlab.runs import environment_info, new_run_dir, prepare_out_dir, read_json, write_json
from mnistlab.training.engine import load_trained_model


def _member(run: Path) -> dict[str, Any]:
    """A member run's config and metrics, after checking it is a deep run."""
    config = read_json(run, "config.json")
    kind = config.get("kind")
    if kind != "deep":
        what = {"classic": "a classic (scikit-learn) run", "ensemble": "an ensemble"}.get(
            str(kind), f"a run of kind {kind!r}"
        )
        raise MnistlabError(
            f"{run} is {what}; ensembles combine deep-learning runs only",
            hint="pass run folders written by `mnistlab train --model <deep model>`",
        )
    metrics = read_json(run, "metrics.json") if (run / "metrics.json").is_file() else {}
    return {"run": run, "config": config, "metrics": metrics}


def ensemble_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] | None = None,
    tta: str | None = None,
    home: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Average the test-split probabilities of deep runs and write an ``"ensemble"`` run.

    Every member predicts the same test images (its dataset's ``"test"`` split) with
    :func:`predict_proba` (same ``tta`` for all); the ensemble's probabilities are the mean of
    the members' (summed in the order given, then divided by their number), its prediction
    their argmax.

    Args:
        run_dirs: one or more deep run folders, all trained on the same dataset.
        out: the ensemble's run folder (default: a new ``<time>-ensemble-<dataset>`` folder
            under ``runs_root``); it may not be one of the members.
        runs_root: root of new run folders (default ``$MNISTLAB_RUNS`` or ``./runs``).
        tta: test-time augmentation for every member (see :func:`predict_proba`).
        home: dataset cache root.
        overwrite: allow ``out`` to replace an existing run.
        device: where the members predict.

    Writes:
        ``config.json`` (``kind: "ensemble"``, ``members``: absolute paths, ``tta``),
        ``environment.json``, ``metrics.json`` (each member's and the ensemble's test accuracy)
        and the report (``report.json``, ``report.html``, figures) with a table of the members.

    Returns:
        The report dict (``report.json``'s content) plus ``"run_dir"`` (a string).

    Raises:
        MnistlabError: no runs, a repeated run, a classic (or ensemble) run, runs on different
            datasets or with different classes, an unknown ``tta``, ``out`` holding a run
            (without ``overwrite``) or being a member, ...
    """
    from mnistlab.data import load_dataset
    from mnistlab.evaluation.report import ReportSection, html_table, write_report

    if not run_dirs:
        raise MnistlabError("an ensemble needs at least one run folder")
    tta_views(tta)  # fail early on an unknown mode
    runs = [Path(r).expanduser().resolve() for r in run_dirs]
    repeated = sorted({str(r) for r in runs if runs.count(r) > 1})
    if repeated:
        raise MnistlabError(f"run folder(s) given more than once: {', '.join(repeated)}")
    if out is not None and Path(out).expanduser().resolve() in runs:
        raise MnistlabError(f"--out {out} is one of the members; choose another folder")
    members = [_member(run) for run in runs]
    datasets = sorted({m["config"].get("dataset") for m in members}, key=str)
    if len(datasets) != 1:
        listing = "; ".join(f"{m['run']}: {m['config'].get('dataset')}" for m in members)
        raise MnistlabError(
            f"the runs were trained on different datasets ({listing})",
            hint="an ensemble averages runs on one dataset",
        )
    dataset = str(datasets[0])
    for m in members:
        m["model"], m["meta"] = load_trained_model(m["run"])
    classes = {tuple(m["meta"]["class_names"]) for m in members}
    if len(classes) != 1:
        raise MnistlabError("the runs predict different classes; cannot average them")
    test = load_dataset(dataset, "test", home=home)
    if list(test.class_names) != list(next(iter(classes))):
        raise MnistlabError(f"the runs' classes differ from those of {dataset}'s test split")

    run_dir = (
        prepare_out_dir(out, overwrite)
        if out is not None
        else new_run_dir(f"ensemble-{dataset}", runs_root)
    )
    architectures = [str(m["meta"]["architecture"]) for m in members]
    name = f"ensemble of {len(members)} ({', '.join(architectures)})"
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_json(
        run_dir,
        "config.json",
        {
            "kind": "ensemble",
            "model": name,
            "dataset": dataset,
            "members": [str(m["run"]) for m in members],
            "member_models": architectures,
            "tta": tta,
            "combine": "mean of the members' softmax probabilities",
            "device": device,
            "num_test": len(test),
            "created": created,
        },
    )
    write_json(run_dir, "environment.json", environment_info([dataset], home))

    start = time.perf_counter()
    total: np.ndarray | None = None
    labels = np.asarray(test.labels)
    for m in members:
        config = m["meta"].get("config", {})  # as the member trained: its report's numbers
        probs = predict_proba(
            m["model"],
            test.images,
            m["meta"]["normalization"],
            tta=tta,
            device=device,
            precision=config.get("precision", "fp32"),
            channels_last=config.get("channels_last", False),
        )
        m["test_accuracy"] = float((probs.argmax(1) == labels).mean())
        total = probs if total is None else total + probs
    assert total is not None
    probabilities = total / len(members)
    predict_seconds = time.perf_counter() - start
    accuracy = float((probabilities.argmax(1) == labels).mean())

    seconds = [m["metrics"].get("train_seconds") for m in members]
    train_seconds = None if any(s is None for s in seconds) else float(sum(seconds))
    rows = [
        {
            "run": str(m["run"]),
            "model": m["meta"]["architecture"],
            "seed": m["config"].get("seed"),
            "test_accuracy": m["test_accuracy"],
            "recorded_test_accuracy": m["metrics"].get("test_accuracy"),
            "train_seconds": m["metrics"].get("train_seconds"),
        }
        for m in members
    ]
    table = html_table(
        ["run", "model", "seed", f"test accuracy ({tta or 'no'} TTA)", "in its report"],
        [
            [
                Path(r["run"]).name,
                r["model"],
                "" if r["seed"] is None else r["seed"],
                r["test_accuracy"],
                "" if r["recorded_test_accuracy"] is None else r["recorded_test_accuracy"],
            ]
            for r in rows
        ]
        + [["ensemble", name, "", accuracy, ""]],
        numeric_columns=[2, 3, 4],
    )
    report = write_report(
        run_dir,
        images=test.images,
        labels=labels,
        probabilities=probabilities,
        class_names=test.class_names,
        dataset=dataset,
        model=name,
        train_seconds=train_seconds,
        extra={
            "kind": "ensemble",
            "tta": tta,
            "members": [r["run"] for r in rows],
            "member_test_accuracy": [r["test_accuracy"] for r in rows],
            "predict_seconds": predict_seconds,
        },
        sections=[ReportSection("Ensemble members", html=table)],
    )
    write_json(
        run_dir,
        "metrics.json",
        {
            "test_accuracy": accuracy,
            "log_loss": report["log_loss"],
            "members": rows,
            "member_test_accuracy": [r["test_accuracy"] for r in rows],
            "train_seconds": train_seconds,
            "predict_seconds": predict_seconds,
            "tta": tta,
            "num_test": len(test),
        },
    )
    return {**report, "run_dir": str(run_dir)}
