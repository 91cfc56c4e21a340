"""The models stage: classic (scikit-learn) recipes and hand-written estimators, the CNNs
(seed-cnn to resnet-small), the transformer (ViT encoder, GPT, classifier) and LoRA, and the
one home of model files (safetensors, ONNX or skops weights + a JSON manifest, no pickle).

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
        "files": ("FORMATS", "ModelFile", "read_model_file", "write_model_file"),
        "logistic": ("TorchLogisticRegression",),
        "lora": ("LoRALinear", "apply_lora", "merge_lora"),
        "transformer": ("Classifier", "GPTModel", "ViTEncoder"),
        "transformer_config": ("PRESETS", "TransformerConfig", "get_preset"),
    },
)
