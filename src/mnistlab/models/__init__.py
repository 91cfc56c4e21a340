"""The models stage: classic (scikit-learn) recipes, hand-written estimators, and saving
models without pickle (safetensors + JSON)."""

from mnistlab.models.classic import CLASSIC_MODELS, RECIPES, ClassicRecipe, get_recipe
from mnistlab.models.logistic import TorchLogisticRegression

__all__ = [
    "CLASSIC_MODELS",
    "RECIPES",
    "ClassicRecipe",
    "TorchLogisticRegression",
    "get_recipe",
]
