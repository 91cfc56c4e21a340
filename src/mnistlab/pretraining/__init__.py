"""The large-model workflow in miniature: a transformer written from scratch, pretrained
without labels (MAE, GPT-style), fine-tuned with few labels (full, linear probe, LoRA),
self-training of a student on its pseudo-labels, and a class-conditional digit generator.
See ``docs/pretraining.md``."""

from mnistlab.pretraining.finetune import (
    FinetuneConfig,
    FinetuneResult,
    evaluate_finetune_run,
    finetune,
    load_classifier,
    merge_adapter,
    predict_proba,
)
from mnistlab.pretraining.generate import generate_digits, save_generated_grid
from mnistlab.pretraining.lora import LoRALinear, apply_lora, merge_lora
from mnistlab.pretraining.pretrain import PretrainConfig, PretrainResult, load_pretrained, pretrain
from mnistlab.pretraining.selftrain import PseudoLabels, pseudo_label, self_train
from mnistlab.pretraining.transformer import PRESETS, Classifier, GPTModel, TransformerConfig

__all__ = [
    "PRESETS",
    "Classifier",
    "FinetuneConfig",
    "FinetuneResult",
    "GPTModel",
    "LoRALinear",
    "PretrainConfig",
    "PretrainResult",
    "PseudoLabels",
    "TransformerConfig",
    "apply_lora",
    "evaluate_finetune_run",
    "finetune",
    "generate_digits",
    "load_classifier",
    "load_pretrained",
    "merge_adapter",
    "merge_lora",
    "predict_proba",
    "pretrain",
    "pseudo_label",
    "save_generated_grid",
    "self_train",
]
