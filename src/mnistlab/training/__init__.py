"""The training stage: fitting models on a dataset into a run folder, with its report."""

from mnistlab.training.classic import (
    ClassicRunResult,
    evaluate_run,
    load_recipe_data,
    predict_scores,
    train_classic,
)
from mnistlab.training.engine import TrainConfig, TrainResult, load_trained_model, train_model
from mnistlab.training.ensemble import TTA_MODES, ensemble_runs, predict_proba
from mnistlab.training.recipes import DEEP_MODELS, DEEP_RECIPES, get_deep_recipe
from mnistlab.training.search import SearchResult, search_classic

__all__ = [
    "DEEP_MODELS",
    "DEEP_RECIPES",
    "TTA_MODES",
    "ClassicRunResult",
    "SearchResult",
    "TrainConfig",
    "TrainResult",
    "ensemble_runs",
    "evaluate_run",
    "get_deep_recipe",
    "load_recipe_data",
    "load_trained_model",
    "predict_proba",
    "predict_scores",
    "search_classic",
    "train_classic",
    "train_model",
]
