"""Hyper-parameter search for classic models: cross-validated on the training split only,
seeded, within a time budget."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import ParameterGrid, StratifiedKFold, cross_validate

from mnistlab.data import load_dataset, stratified_indices
from mnistlab.errors import MnistlabError
from mnistlab.models.classic import get_recipe


@dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`search_classic`; ``rows`` are sorted best first."""

    model: str
    dataset: str
    cv: int
    subsample: int
    seed: int
    budget_seconds: float
    elapsed_seconds: float
    candidates_total: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.rows[0]["params"]) if self.rows else {}

    def to_markdown(self) -> str:
        """The result as a Markdown table (best first)."""
        keys = sorted({k for row in self.rows for k in row["params"]})
        head = "| " + " | ".join([*keys, "cv accuracy", "± std", "fit s"]) + " |"
        lines = [head, "|" + "---|" * (len(keys) + 3)]
        for row in self.rows:
            cells = [str(row["params"].get(k, "")) for k in keys]
            cells += [
                f"{row['mean_accuracy']:.4f}",
                f"{row['std_accuracy']:.4f}",
                f"{row['fit_seconds']:.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def search_classic(
    model: str,
    *,
    dataset: str = "mnist",
    space: dict[str, list[Any]] | None = None,
    cv: int = 3,
    budget_seconds: float = 60.0,
    subsample: int = 10000,
    seed: int = 0,
    home: str | os.PathLike[str] | None = None,
    log: Any = print,
) -> SearchResult:
    """Cross-validate a grid of hyper-parameters of a classic model within a time budget.

    Args:
        model: ``logreg``, ``knn``, ``svm`` or ``rf``.
        dataset: the dataset; only its training split is used.
        space: ``{pipeline_param: [values]}``; default the recipe's ``search_space``.
        cv: stratified folds (shuffled with ``seed``).
        budget_seconds: no new candidate starts after this many seconds (the running one
            finishes, so the total can exceed the budget by one candidate's time; the first
            candidate always runs, so there is always a result).
        subsample: a stratified, seeded subset of the training split this large (0 = all).
        seed: fixes the subsample, the folds and the order candidates are tried in.

    Returns:
        A :class:`SearchResult` with one row per evaluated candidate, best first.
    """
    recipe = get_recipe(model, "default")
    space = space or recipe.search_space
    if not space:
        raise MnistlabError(f"model {model!r} has no search space; pass one")
    if cv < 2:
        raise MnistlabError(f"cv must be at least 2, got {cv}")
    train = load_dataset(dataset, "train", home=home)
    images, labels = train.images, train.labels
    if subsample and subsample < len(labels):
        _, keep = stratified_indices(labels, subsample, seed)
        images, labels = images[keep], labels[keep]
    candidates = list(ParameterGrid(space))
    order = np.random.default_rng(seed).permutation(len(candidates))
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    rows = []
    start = time.perf_counter()
    for k, i in enumerate(order):
        if k and time.perf_counter() - start > budget_seconds:  # the first always runs
            log(f"time budget of {budget_seconds:.0f}s reached after {k} of {len(candidates)}")
            break
        params = candidates[i]
        pipeline = recipe.build(seed).set_params(**params)
        scores = cross_validate(pipeline, images, labels, cv=folds, scoring="accuracy")
        row = {
            "params": {key: _plain(v) for key, v in params.items()},
            "mean_accuracy": float(np.mean(scores["test_score"])),
            "std_accuracy": float(np.std(scores["test_score"])),
            "fit_seconds": float(np.mean(scores["fit_time"])),
        }
        rows.append(row)
        log(
            f"[{k + 1}/{len(candidates)}] {row['params']}: {row['mean_accuracy']:.4f} "
            f"± {row['std_accuracy']:.4f}"
        )
    rows.sort(key=lambda r: -r["mean_accuracy"])
    return SearchResult(
        model=model,
        dataset=dataset,
        cv=cv,
        subsample=len(labels),
        seed=seed,
        budget_seconds=budget_seconds,
        elapsed_seconds=time.perf_counter() - start,
        candidates_total=len(candidates),
        rows=rows,
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
