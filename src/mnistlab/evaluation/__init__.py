"""The evaluation stage: classification metrics (checked against scikit-learn), the report of
a run (``report.json``, ``report.html`` and its figures), and re-evaluation of any run."""

from mnistlab.evaluation.figures import (
    misclassified_indices,
    misclassified_title,
    plot_confusion_matrix,
    plot_misclassified,
    plot_per_class_accuracy,
    plot_training_curves,
)
from mnistlab.evaluation.metrics import (
    ClassificationMetrics,
    check_probabilities,
    classification_metrics,
    confusion_matrix,
    most_confused_pairs,
)
from mnistlab.evaluation.report import (
    FIGURE_FILES,
    REPORT_FILES,
    Report,
    ReportSection,
    as_section,
    html_table,
    read_report,
    render_report_html,
    write_report,
)
from mnistlab.evaluation.rerun import RUN_KINDS, carried_sections, evaluate_run

__all__ = [
    "FIGURE_FILES",
    "REPORT_FILES",
    "RUN_KINDS",
    "ClassificationMetrics",
    "Report",
    "ReportSection",
    "as_section",
    "carried_sections",
    "check_probabilities",
    "classification_metrics",
    "confusion_matrix",
    "evaluate_run",
    "html_table",
    "misclassified_indices",
    "misclassified_title",
    "most_confused_pairs",
    "plot_confusion_matrix",
    "plot_misclassified",
    "plot_per_class_accuracy",
    "plot_training_curves",
    "read_report",
    "render_report_html",
    "write_report",
]
