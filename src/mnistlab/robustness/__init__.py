"""The robustness stage: how a trained model holds up off the clean test set.

- the MNIST-C-style corruption suite lives in :mod:`mnistlab.features.corruptions` (it shares
  its geometric ops with augmentation); ``CORRUPTIONS``, ``SEVERITIES``, ``corrupt``,
  ``corruption_names`` and ``random_corruptions`` are re-exported here for compatibility;
- :mod:`~mnistlab.robustness.attacks`: FGSM and PGD (L∞, random restarts) in pixel space, and
  the hook for PGD adversarial training (``TrainConfig.adversarial_eps``);
- :mod:`~mnistlab.robustness.calibration`: ECE, reliability diagrams, temperature scaling saved
  as ``<run>/model/calibration.json``;
- :mod:`~mnistlab.robustness.ood`: max-softmax and energy scores, AUROC against another dataset;
- :mod:`~mnistlab.robustness.label_quality`: likely mislabeled training images;
- :mod:`~mnistlab.robustness.suite`: ``evaluate_robustness(run_dir)``, all of it for one run,
  with a section in the run's report.

See ``docs/robustness.md``.
"""

from mnistlab.features.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    corrupt,
    corruption_names,
    random_corruptions,
)
from mnistlab.robustness.attacks import (
    ATTACKS,
    PixelSpaceModel,
    RobustAccuracy,
    fgsm,
    pgd,
    robust_accuracy,
)
from mnistlab.robustness.calibration import (
    calibrate_run,
    expected_calibration_error,
    fit_temperature,
    plot_reliability_diagram,
    predict_logits,
    read_calibration,
    write_calibration,
)
from mnistlab.robustness.label_quality import LabelIssues, find_label_issues, write_label_issues
from mnistlab.robustness.ood import (
    OOD_SCORES,
    auroc,
    energy_score,
    evaluate_ood,
    max_softmax_score,
)
from mnistlab.robustness.suite import evaluate_robustness, plot_corruption_examples

__all__ = [
    "ATTACKS",
    "CORRUPTIONS",
    "OOD_SCORES",
    "SEVERITIES",
    "LabelIssues",
    "PixelSpaceModel",
    "RobustAccuracy",
    "auroc",
    "calibrate_run",
    "corrupt",
    "corruption_names",
    "energy_score",
    "evaluate_ood",
    "evaluate_robustness",
    "expected_calibration_error",
    "fgsm",
    "find_label_issues",
    "fit_temperature",
    "max_softmax_score",
    "pgd",
    "plot_corruption_examples",
    "plot_reliability_diagram",
    "predict_logits",
    "random_corruptions",
    "read_calibration",
    "robust_accuracy",
    "write_calibration",
    "write_label_issues",
]
