"""The models stage: classic (scikit-learn) recipes and hand-written estimators, the CNNs
(seed-cnn to resnet-small), and saving models without pickle (safetensors + JSON).

Names load on first use (:mod:`mnistlab._lazy`), so listing recipes imports neither torch
nor scikit-learn.
"""

from mnistlab._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    globals(),
    {
        "classic": ("CLASSIC_MODELS", "RECIPES", "ClassicRecipe", "get_recipe"),
        "cnn": ("CNN_MODELS", "build_model", "count_parameters", "flops_per_image"),
        "logistic": ("TorchLogisticRegression",),
    },
)
