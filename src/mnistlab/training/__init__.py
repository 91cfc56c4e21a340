"""The training stage: fitting models on a dataset into a run folder, with its report."""

from mnistlab.training.classic import (
    ClassicRunResult,
    evaluate_run,
    load_recipe_data,
    predict_scores,
    train_classic,
)
from mnistlab.training.search import SearchResult, search_classic

__all__ = [
    "ClassicRunResult",
    "SearchResult",
    "evaluate_run",
    "load_recipe_data",
    "predict_scores",
    "search_classic",
    "train_classic",
]
