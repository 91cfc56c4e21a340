"""The models stage: classic (scikit-learn) recipes and hand-written estimators, the CNNs
(seed-cnn to resnet-small), and saving models without pickle (safetensors + JSON)."""

from mnistlab.models.classic import CLASSIC_MODELS, RECIPES, ClassicRecipe, get_recipe
from mnistlab.models.cnn import CNN_MODELS, build_model, count_parameters, flops_per_image
from mnistlab.models.logistic import TorchLogisticRegression

__all__ = [
    "CLASSIC_MODELS",
    "CNN_MODELS",
    "RECIPES",
    "ClassicRecipe",
    "TorchLogisticRegression",
    "build_model",
    "count_parameters",
    "flops_per_image",
    "get_recipe",
]
