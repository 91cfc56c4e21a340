"""Training a classic model into a run folder: data, fit, model file, evaluation report.

Re-evaluation of any run (classic ones included) lives in :mod:`mnistlab.evaluation.rerun`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from mnistlab.data.splits import recipe_split
from mnistlab.errors import MnistlabError
from mnistlab.models.classic import ClassicRecipe, get_recipe
from mnistlab.models.inference import predict_scores
from mnistlab.runs import (
    check_out_dir,
    new_run_dir,
    prepare_out_dir,
    write_json,
    write_run_record,
)


@dataclass(frozen=True)
class ClassicRunResult:
    """What :func:`train_classic` returns."""

    run_dir: Path
    test_accuracy: float
    train_seconds: float
    predict_seconds: float
    report: dict[str, Any]

    def _repr_html_(self) -> str:  # Jupyter: the run's summary and figures
        from mnistlab.runs import open_run

        return open_run(self.run_dir)._repr_html_()


def describe_estimator(estimator: Any) -> Any:
    """A JSON-ready description of an estimator: class and parameters, recursively."""
    if isinstance(estimator, BaseEstimator):
        params = {}
        for key, value in estimator.get_params(deep=False).items():
            if key in ("steps", "estimators") and isinstance(value, list):
                params[key] = [[name, describe_estimator(est)] for name, est in value]
            else:
                params[key] = describe_estimator(value)
        return {
            "class": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
            "params": params,
        }
    if isinstance(estimator, (str, int, float, bool)) or estimator is None:
        return estimator
    if isinstance(estimator, (list, tuple)):
        return [describe_estimator(v) for v in estimator]
    if isinstance(estimator, np.generic):
        return estimator.item()
    return repr(estimator)


def _components(estimator: Any, name: str = "") -> list[tuple[str, Any]]:
    """``(parameter prefix, estimator)`` for ``estimator`` and every estimator inside it."""
    found = [(name, estimator)]
    for key, value in estimator.get_params(deep=False).items():
        if isinstance(value, list) and key == "steps":
            for step, inner in value:
                found += _components(inner, f"{name}{step}__")
        elif isinstance(value, BaseEstimator):
            found += _components(value, f"{name}{key}__")
    return found


def check_params(pipeline: Any, params: dict[str, Any] | None = None) -> None:
    """Apply ``params`` to ``pipeline`` and check every hyper-parameter before any data is
    loaded or any file written: scikit-learn's own parameter constraints (checked at ``fit``
    otherwise) and mnistlab's estimators' ``check_params``.

    Raises:
        MnistlabError: an unknown key, or a value of the wrong type or out of range, with the
            key and the pipeline's parameters.
    """
    before = pipeline.get_params(deep=True)
    if params:
        _set_params(pipeline, params)
    for prefix, estimator in _components(pipeline):
        if getattr(estimator, "algorithm", None) in ("kd_tree", "ball_tree", "auto") and hasattr(
            estimator, "kneighbors"
        ):
            raise MnistlabError(
                f"{prefix}algorithm={estimator.algorithm!r}: mnistlab saves neighbours models "
                "with brute-force search only (a KD or ball tree is an index the model file "
                "cannot check when it is loaded)",
                hint=f"use --set {prefix}algorithm=brute",
            )
        checks = [getattr(estimator, "check_params", None)]
        if hasattr(estimator, "_parameter_constraints"):
            # scikit-learn's validation, run by fit() in every estimator since 1.2.
            checks.append(getattr(estimator, "_validate_params", None))
        for check in checks:
            if not callable(check):
                continue
            try:
                check()
            except (TypeError, ValueError) as exc:
                mine = [k for k in params or {} if k.startswith(prefix)] or list(params or {})
                example = " ".join(f"--set {k}={_json_or_repr(before.get(k))}" for k in mine)
                raise MnistlabError(
                    f"invalid hyper-parameter of {prefix.rstrip('_') or 'the model'} "
                    f"({type(estimator).__name__}): {exc}",
                    hint=f"values are JSON; the recipe's: {example}" if example else None,
                ) from None


def _json_or_repr(value: Any) -> str:
    import json

    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def _set_params(pipeline: Any, params: dict[str, Any]) -> None:
    valid = pipeline.get_params(deep=True)
    unknown = [k for k in params if k not in valid]
    if unknown:
        names = ", ".join(k for k in valid if "__" in k and not k.endswith("steps"))
        raise MnistlabError(
            f"unknown hyper-parameter(s) {', '.join(unknown)}",
            hint=f"this model's parameters: {names}",
        )
    pipeline.set_params(**params)


def train_classic(
    model: str = "logreg",
    *,
    recipe: str = "default",
    dataset: str = "mnist",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    home: str | os.PathLike[str] | None = None,
    log: Any = print,
    num_threads: int = 0,
) -> ClassicRunResult:
    """Train a classic model, save it, evaluate it on the test split, and write its run folder.

    Args:
        model: ``logreg``, ``knn``, ``svm`` or ``rf``.
        recipe: ``default`` or a named recipe (``seed`` reproduces the tutorial's logreg).
        dataset: any registered or imported dataset.
        seed: seeds every random choice of the model (PCA, forests, ...).
        params: pipeline hyper-parameter overrides, e.g. ``{"clf__C": 10.0}``.
        out: the run folder (default: a new folder under ``runs_root``).
        runs_root: root of new run folders (default ``$MNISTLAB_RUNS`` or ``./runs``).
        overwrite: allow ``out`` to replace an existing run.
        home: dataset cache root.
        log: where progress lines go (``print`` by default; ``lambda *_: None`` silences).
        num_threads: threads of the BLAS and OpenMP pools that fit and predict (0: auto, the
            CPUs free when the run starts, as for deep runs: docs/training.md, "Threads").

    Raises:
        MnistlabError: an unknown model or recipe, a bad hyper-parameter or ``num_threads``,
            an existing ``out`` without ``overwrite``.

    Returns:
        The run folder, test accuracy, fit and predict times, and the report dict.
        ``train_seconds`` is the wall time of ``fit`` on the training split (feature
        extraction inside the pipeline included, data loading excluded).
    """
    from threadpoolctl import threadpool_limits

    from mnistlab.evaluation import write_report
    from mnistlab.models.estimator_files import save_estimator
    from mnistlab.training.runtime import choose_threads, torch_threads

    threads, why = choose_threads(num_threads)  # checks num_threads before any work
    spec: ClassicRecipe = get_recipe(model, recipe)
    pipeline = spec.build(seed)
    check_params(pipeline, params)
    if out is not None:
        check_out_dir(out, overwrite)  # before the data is loaded
    train, test = recipe_split(dataset, spec.split, home)
    run_dir = (
        prepare_out_dir(out, overwrite)
        if out is not None
        else new_run_dir(f"{model}-{dataset}", runs_root)
    )
    config = {
        "kind": "classic",
        "model": model,
        "recipe": recipe,
        "recipe_description": spec.description,
        "dataset": dataset,
        "split": spec.split,
        "seed": seed,
        "params": params or {},
        "estimator": describe_estimator(pipeline),
        "num_train": len(train),
        "num_test": len(test),
        "num_threads": num_threads,
        "threads": threads,
    }
    write_run_record(run_dir, config, [dataset], home)
    log(f"training {model} ({recipe}) on {dataset}: {len(train):,} images, {threads} "
        f"thread(s) ({why}) -> {run_dir}")  # fmt: skip

    # BLAS (numpy's, scikit-learn's) and OpenMP pools spin-wait like torch's (the default
    # logreg is fitted by torch): with another process on one of two cores, the tutorial's
    # logreg took 3x as long on two threads (docs/benchmarks.md, "Classic models").
    with threadpool_limits(limits=threads), torch_threads(threads):
        start = time.perf_counter()
        pipeline.fit(train.images, train.labels)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        probabilities = predict_scores(pipeline, test.images)
        predict_seconds = time.perf_counter() - start
    save_estimator(
        pipeline,
        run_dir / "model",
        metadata={
            "model": model,
            "recipe": recipe,
            "dataset": dataset,
            "class_names": list(train.class_names),
            "input": "uint8 images (N, 28, 28)",
        },
    )
    report = write_report(
        run_dir,
        images=test.images,
        labels=test.labels,
        probabilities=probabilities,
        class_names=train.class_names,
        dataset=dataset,
        model=f"{model} ({recipe})",
        train_seconds=train_seconds,
        extra={
            "predict_seconds": predict_seconds,
            "split": spec.split,
            "seed": seed,
            "recipe": recipe,
            "num_train": len(train),
        },
    )
    metrics = {
        "test_accuracy": report["test_accuracy"],
        "train_seconds": train_seconds,
        "predict_seconds": predict_seconds,
        "num_train": len(train),
        "num_test": len(test),
        "threads": threads,
    }
    write_json(run_dir, "metrics.json", metrics)
    log(
        f"test accuracy {report['test_accuracy']:.4f}  fit {train_seconds:.2f}s  "
        f"predict {predict_seconds:.2f}s"
    )
    return ClassicRunResult(
        run_dir, report["test_accuracy"], train_seconds, predict_seconds, report
    )
