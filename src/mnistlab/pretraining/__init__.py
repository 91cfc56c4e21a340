"""The large-model workflow in miniature: a transformer written from scratch, pretrained
without labels (MAE, GPT-style), fine-tuned with few labels (full, linear probe, LoRA),
a CNN backbone pretrained contrastively (SimCLR) and the few-label recipe that starts from it
(``fewshot``: FixMatch), self-training of a student on its pseudo-labels, and a
class-conditional digit generator.
See ``docs/pretraining.md``. Names load on first use (:mod:`mnistlab._lazy`)."""

from mnistlab._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    globals(),
    {
        "config": ("FewshotConfig", "FinetuneConfig", "PretrainConfig"),
        "fewshot": ("FewshotResult", "fewshot", "load_backbone"),
        "finetune": (
            "FinetuneResult",
            "finetune",
            "merge_adapter",
        ),
        "generate": ("generate_digits", "save_generated_grid"),
        "mnistlab.models.inference": ("vit_predict_proba",),
        "mnistlab.models.lora": ("LoRALinear", "apply_lora", "merge_lora"),
        "mnistlab.models.vit_files": ("load_classifier",),
        "pretrain": ("PretrainResult", "load_pretrained", "pretrain"),
        "selftrain": ("PseudoLabels", "pseudo_label", "self_train"),
        "mnistlab.models.transformer": ("PRESETS", "Classifier", "GPTModel", "TransformerConfig"),
    },
)
