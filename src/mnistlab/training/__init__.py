"""The training stage: fitting models on a dataset into a run folder, with its report.

Names load on first use (:mod:`mnistlab._lazy`): ``from mnistlab.training import
train_model`` imports the engine and torch, ``mnistlab.training.recipes`` alone does not.
"""

from mnistlab._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    globals(),
    {
        "classic": ("ClassicRunResult", "train_classic"),
        "mnistlab.evaluation.rerun": ("evaluate_run",),  # re-exported: evaluation's
        "mnistlab.models.inference": ("predict_scores",),
        "config": ("TrainConfig",),
        "engine": ("TrainResult", "load_trained_model", "train_model"),
        "ensemble": ("TTA_MODES", "ensemble_runs", "predict_proba"),
        "recipes": ("DEEP_MODELS", "DEEP_RECIPES", "get_deep_recipe", "recipe_owner"),
        "search": ("SearchResult", "search_classic"),
    },
)
