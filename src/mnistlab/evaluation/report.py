"""The evaluation report of a run: figures, ``report.json`` and a self-contained ``report.html``.

A report is a header (model, dataset, accuracy, train time) followed by a list of
:class:`ReportSection` blocks. :func:`write_report` builds the standard ones (per-class metrics,
most-confused pairs, confusion matrix, per-class accuracy, misclassified images); later stages
append their own (training curves, calibration, ...) through its ``sections`` argument.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mnistlab.evaluation.figures import (
    plot_confusion_matrix,
    plot_misclassified,
    plot_per_class_accuracy,
)
from mnistlab.evaluation.metrics import (
    check_probabilities,
    classification_metrics,
    selective_accuracy,
)
from mnistlab.io import atomic_write_bytes, atomic_write_json

FIGURE_FILES = {
    "confusion_matrix": "confusion_matrix.png",
    "per_class_accuracy": "per_class_accuracy.png",
    "misclassified": "misclassified.png",
}
REPORT_FILES = (*FIGURE_FILES.values(), "report.json", "report.html")

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


# ---------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ReportSection:
    """One titled block of ``report.html``.

    Attributes:
        title: heading (plain text; escaped).
        html: an HTML fragment inserted as is: the caller escapes its own text (see
            :func:`html_table`). It must not load external resources.
        figure: an image file (PNG, JPEG or SVG) embedded as a data URI after ``html``.
        caption: plain text under the figure (escaped).
    """

    title: str
    html: str = ""
    figure: Path | None = None
    caption: str = ""


SectionLike = ReportSection | tuple[str, "str | os.PathLike[str]"]


def as_section(section: SectionLike) -> ReportSection:
    """A :class:`ReportSection` from itself or from ``(title, content)``: a ``str`` content is an
    HTML fragment, a path (``pathlib.Path``) is a figure."""
    if isinstance(section, ReportSection):
        return section
    title, content = section
    if isinstance(content, str):
        return ReportSection(str(title), html=content)
    return ReportSection(str(title), figure=Path(content))


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    numeric_columns: Collection[int] | None = None,
) -> str:
    """A ``<table>`` with every cell escaped, for the ``html`` of a :class:`ReportSection`.

    Floats are written with 4 significant digits, everything else with ``str``. The
    ``numeric_columns`` (default: all but the first) are right-aligned.
    """
    right = set(range(1, len(header))) if numeric_columns is None else set(numeric_columns)

    def cell(tag: str, value: Any, col: int) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        cls = ' class="num"' if col in right else ""
        return f"<{tag}{cls}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", h, i) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", v, i) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------------------- report


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.3g} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _data_uri(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: cannot embed a {path.suffix!r} file (use PNG, JPEG or SVG)")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _slug(title: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    slug, k = base, 1
    while slug in taken:
        k += 1
        slug = f"{base}-{k}"
    taken.add(slug)
    return slug


def _bar_cell(value: float, weak: bool) -> str:
    cls = "bar weak" if weak else "bar"
    return (  # a bar of up to 70 px drawn in CSS, then the number
        f'<td class="num"><span class="{cls}" style="width:{70 * value:.1f}px"></span>'
        f"{value:.3f}</td>"
    )


def _per_class_html(report: Mapping[str, Any]) -> str:
    acc = float(report["test_accuracy"])
    rows = []
    for name, row in report["per_class"].items():
        rows.append(
            f"<tr><td>{html.escape(name)}</td>"
            + _bar_cell(row["precision"], row["precision"] < acc)
            + _bar_cell(row["recall"], row["recall"] < acc)
            + _bar_cell(row["f1"], row["f1"] < acc)
            + f'<td class="num">{row["support"]:,}</td></tr>'
        )
    n = int(report["num_test"])
    foot = (
        f'<tr><th>macro average</th><td class="num">{report["macro_precision"]:.3f}</td>'
        f'<td class="num">{report["macro_recall"]:.3f}</td>'
        f'<td class="num">{report["macro_f1"]:.3f}</td><td class="num">{n:,}</td></tr>'
    )
    if {"weighted_precision", "weighted_recall", "weighted_f1"} <= report.keys():
        foot += (
            "<tr><th>weighted average</th>"
            + "".join(
                f'<td class="num">{report[key]:.3f}</td>'
                for key in ("weighted_precision", "weighted_recall", "weighted_f1")
            )
            + f'<td class="num">{n:,}</td></tr>'
        )
    return (
        '<table class="metrics"><thead><tr><th>class</th><th class="num">precision</th>'
        '<th class="num">recall (accuracy)</th><th class="num">F1</th>'
        '<th class="num">support</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody><tfoot>{foot}</tfoot></table>"
        '<p class="note">Red bars: below the overall accuracy.</p>'
    )


def _confused_html(report: Mapping[str, Any]) -> str:
    pairs = report.get("most_confused") or []
    if not pairs:
        return "<p>No misclassified examples.</p>"
    support = {name: row["support"] for name, row in report["per_class"].items()}
    rows = [
        (
            k,
            pair["true"],
            pair["predicted"],
            f"{pair['count']:,}",
            f"{pair['count'] / support[pair['true']]:.1%}" if support.get(pair["true"]) else "",
        )
        for k, pair in enumerate(pairs, 1)
    ]
    header = ("#", "true class", "predicted as", "count", "% of true class")
    return html_table(header, rows, numeric_columns=(0, 3, 4))


# Run details: labels a reader understands for the keys runs put there.
_DETAIL_LABELS = {
    "predict_seconds": "prediction time (test split)",
    "split": "train/test split",
    "seed": "seed",
    "recipe": "recipe",
    "num_train": "training images",
    "num_val": "validation images",
    "epochs_run": "epochs run",
    "stopped_early": "stopped early",
    "best_epoch": "best validation epoch",
    "final_train_loss": "final training loss",
    "final_train_accuracy": "final training accuracy",
    "train_accuracy": "training accuracy",
    "world_size": "processes (DDP)",
    "tta": "test-time augmentation",
}


def _details_html(details: Mapping[str, Any]) -> str:
    rows = []
    for key, value in details.items():
        if value is None:  # e.g. best_epoch without validation: nothing to say
            continue
        label = _DETAIL_LABELS.get(key, str(key).replace("_", " "))
        if isinstance(value, bool):
            value = "yes" if value else "no"
        if isinstance(value, (dict, list, tuple)):
            text = f"<pre>{html.escape(json.dumps(value, indent=2, default=str))}</pre>"
        elif isinstance(value, float):
            text = html.escape(f"{value:.6g}")
        else:
            text = html.escape(str(value))
        rows.append(f"<tr><th>{html.escape(label)}</th><td>{text}</td></tr>")
    return f'<table class="details"><tbody>{"".join(rows)}</tbody></table>'


# Keys of report.json that write_report sets itself; everything else came from ``extra``.
_CORE_KEYS = (
    "dataset",
    "model",
    "test_accuracy",
    "train_seconds",
    "num_test",
    "num_classes",
    "class_names",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
    "log_loss",
    "selective_accuracy",
    "per_class",
    "most_confused",
    "confusion_matrix",
    "created",
    "mnistlab_version",
    "files",
    "sections",
)

_CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --blue: #4393c3; --red: #d6604d; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--fg); background: #f6f8fa; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.7em; margin: 0 0 2px; }
h2 { font-size: 1.25em; margin: 36px 0 10px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
.sub, .note, figcaption, footer { color: var(--muted); font-size: 0.88em; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0 6px; }
.card { flex: 1 1 140px; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 0.8em; text-transform: uppercase;
               letter-spacing: 0.04em; }
.card .value { font-size: 1.45em; font-weight: 600; font-variant-numeric: tabular-nums; }
nav { font-size: 0.9em; margin-top: 10px; }
nav a { color: #0969da; text-decoration: none; margin-right: 14px; white-space: nowrap; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 6px 0; }
th, td { padding: 4px 12px; border-bottom: 1px solid #eaeef2; text-align: left;
         vertical-align: top; }
thead th { border-bottom: 2px solid var(--line); }
tfoot th, tfoot td { border-top: 2px solid var(--line); font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
.num { text-align: right; }
td.num .bar { display: inline-block; height: 8px; background: var(--blue); opacity: 0.55;
              margin-right: 8px; border-radius: 2px; vertical-align: middle; }
table.metrics td.num { min-width: 150px; }
td.num .bar.weak { background: var(--red); }
figure { margin: 10px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
pre { margin: 0; font-size: 0.85em; white-space: pre-wrap; }
table.details th { color: var(--muted); font-weight: 500; }
footer { margin-top: 40px; }
"""


def render_report_html(
    report: Mapping[str, Any],
    figures: Mapping[str, str | os.PathLike[str]],
    sections: Sequence[SectionLike] = (),
) -> str:
    """The report as one self-contained HTML page (inline CSS, images as data URIs, no script).

    Args:
        report: the dict :func:`write_report` returns (``dataset``, ``model``,
            ``test_accuracy``, ``train_seconds``, ``num_test``, ``per_class``, ...).
        figures: image files by key; the keys of :data:`FIGURE_FILES` get their standard
            sections, missing ones are left out.
        sections: more sections, after the standard ones (see :func:`as_section`).

    Returns:
        The page. Every piece of text from ``report`` is escaped; only ``html`` fragments of
        ``sections`` are inserted as they are.
    """
    esc = html.escape
    model, dataset = str(report.get("model", "?")), str(report.get("dataset", "?"))
    acc = float(report["test_accuracy"])
    figs = {key: Path(p) for key, p in figures.items()}

    built: list[ReportSection] = []
    if "per_class" in report:
        built.append(ReportSection("Per-class metrics", _per_class_html(report)))
    if "most_confused" in report:
        built.append(ReportSection("Most-confused pairs", _confused_html(report)))
    captions = {
        "confusion_matrix": (
            "Confusion matrix",
            "Rows: true class; columns: predicted class. Blue: correct; red: errors, shaded "
            "by their share of the true class.",
        ),
        "per_class_accuracy": (
            "Per-class accuracy",
            "Share of each class predicted correctly; the dashed line is the overall accuracy.",
        ),
        "misclassified": (
            "Misclassified test images",
            "Titled true → predicted (confidence); the most confident mistakes first; "
            "#k is the index in the test set.",
        ),
    }
    for key, (title, caption) in captions.items():
        if key in figs:
            built.append(ReportSection(title, figure=figs[key], caption=caption))
    built.extend(as_section(s) for s in sections)
    details = {k: v for k, v in report.items() if k not in _CORE_KEYS}
    if details:
        built.append(ReportSection("Run details", _details_html(details)))

    taken: set[str] = set()
    anchors = [_slug(s.title, taken) for s in built]
    body = []
    for section, anchor in zip(built, anchors, strict=True):
        parts = [f'<section id="{anchor}"><h2>{esc(section.title)}</h2>']
        if section.html:
            parts.append(section.html)
        if section.figure is not None:
            parts.append(
                f'<figure><img src="{_data_uri(Path(section.figure))}" alt="{esc(section.title)}">'
                + (f"<figcaption>{esc(section.caption)}</figcaption>" if section.caption else "")
                + "</figure>"
            )
        elif section.caption:
            parts.append(f'<p class="note">{esc(section.caption)}</p>')
        parts.append("</section>")
        body.append("".join(parts))

    log_loss = report.get("log_loss")
    cards = [
        ("Test accuracy", f"{acc:.2%}"),
        ("Macro F1", f"{report['macro_f1']:.4f}" if "macro_f1" in report else "n/a"),
        ("Log loss", f"{log_loss:.4f}" if log_loss is not None else "n/a"),
        ("Train time", _format_seconds(report.get("train_seconds"))),
        ("Test images", f"{int(report.get('num_test', 0)):,}"),
    ]
    cards_html = "".join(
        f'<div class="card"><div class="label">{esc(label)}</div>'
        f'<div class="value">{esc(value)}</div></div>'
        for label, value in cards
    )
    nav = "".join(f'<a href="#{a}">{esc(s.title)}</a>' for s, a in zip(built, anchors, strict=True))
    created = str(report.get("created", ""))
    version = str(report.get("mnistlab_version", ""))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(model)} on {esc(dataset)}: {esc(f'{acc:.2%}')} | mnistlab report</title>"
        f"<style>{_CSS}</style></head>\n<body><main>\n"
        f"<header><h1>{esc(model)} on {esc(dataset)}</h1>"
        f'<div class="sub">Evaluation report{(", " + esc(created)) if created else ""}</div>'
        f'<div class="cards">{cards_html}</div><nav>{nav}</nav></header>\n'
        + "\n".join(body)
        + f"\n<footer>Written by mnistlab {esc(version)}.</footer>\n</main></body></html>\n"
    )


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    images: ArrayLike,
    labels: ArrayLike,
    probabilities: ArrayLike,
    class_names: Sequence[str],
    dataset: str,
    model: str,
    train_seconds: float | None,
    extra: Mapping[str, Any] | None = None,
    sections: Sequence[SectionLike] | None = None,
    misclassified: int = 36,
) -> dict[str, Any]:
    """Evaluate predictions on a labelled test set and write the report to ``out_dir``.

    Args:
        out_dir: the run folder (created if missing); files there of the same name are replaced.
        images: (N, H, W) test images, for the gallery of mistakes.
        labels: (N,) true labels.
        probabilities: (N, num_classes) predicted class probabilities; the prediction is the
            argmax, the confidence the max.
        class_names: one name per class (unique).
        dataset, model: names shown in the report.
        train_seconds: training time, or None when unknown.
        extra: more JSON-ready entries for ``report.json`` (e.g. ``predict_seconds``, a config
            summary); shown under "Run details". They may not reuse a standard key.
        sections: more sections for ``report.html`` (see :func:`as_section`), after the
            standard ones.
        misclassified: most images in ``misclassified.png``.

    Writes:
        ``confusion_matrix.png``, ``per_class_accuracy.png``, ``misclassified.png``,
        ``report.html`` and, last, ``report.json``; each atomically.

    Returns:
        The content of ``report.json`` (see ``docs/evaluation.md``).

    Raises:
        ValueError: arrays of inconsistent shapes, labels out of range, probabilities that are
            not probabilities, duplicate class names, or ``extra`` that reuses a standard key or
            is not JSON-ready.
    """
    names = [str(c) for c in class_names]
    k = len(names)
    if len(set(names)) != k:
        raise ValueError(f"class names must be unique; got {names}")
    y = np.asarray(labels)
    imgs = np.asarray(images)
    if imgs.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W); got {imgs.shape}")
    if len(imgs) != len(y):
        raise ValueError(f"images and labels differ in length: {len(imgs)} vs {len(y)}")
    probs = check_probabilities(probabilities, len(y), k)
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_CORE_KEYS))
    if clash:
        raise ValueError(f"extra may not set standard report keys: {clash}")
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra must be JSON-ready: {exc}") from exc
    extra_sections = [as_section(s) for s in sections or ()]

    pred = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    m = classification_metrics(y, pred, k, probs)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {key: out / name for key, name in FIGURE_FILES.items()}
    plot_confusion_matrix(m.confusion, names, figures["confusion_matrix"])
    plot_per_class_accuracy(m.recall, names, figures["per_class_accuracy"], accuracy=m.accuracy)
    plot_misclassified(imgs, y, pred, confidence, names, figures["misclassified"], n=misclassified)

    from mnistlab import __version__

    report: dict[str, Any] = {
        "dataset": dataset,
        "model": model,
        "test_accuracy": m.accuracy,
        "train_seconds": None if train_seconds is None else float(train_seconds),
        "num_test": m.num_samples,
        "num_classes": k,
        "class_names": names,
        "macro_precision": m.macro_precision,
        "macro_recall": m.macro_recall,
        "macro_f1": m.macro_f1,
        "weighted_precision": m.weighted_precision,
        "weighted_recall": m.weighted_recall,
        "weighted_f1": m.weighted_f1,
        "log_loss": m.log_loss,
        "selective_accuracy": [asdict(point) for point in selective_accuracy(probs, y)],
        "per_class": {
            name: {
                "precision": m.precision[c],
                "recall": m.recall[c],
                "f1": m.f1[c],
                "support": m.support[c],
            }
            for c, name in enumerate(names)
        },
        "most_confused": [
            {"true": names[t], "predicted": names[p], "count": count}
            for t, p, count in m.most_confused
        ],
        "confusion_matrix": m.confusion,
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mnistlab_version": __version__,
        "files": list(REPORT_FILES),
        "sections": [s.title for s in extra_sections],
        **extra,
    }
    page = render_report_html(report, figures, extra_sections)
    atomic_write_bytes(out / "report.html", page.encode("utf-8"))
    atomic_write_json(out / "report.json", report)
    return report


# ---------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class Report:
    """A run's ``report.json`` read back (:func:`read_report`). In Jupyter it shows its
    summary, per-class metrics, most-confused pairs and the run's confusion matrix."""

    data: dict[str, Any]
    run_dir: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def _repr_html_(self) -> str:
        esc, data = html.escape, self.data
        acc = data.get("test_accuracy")
        summary = [
            ("test accuracy", f"{acc:.2%}" if isinstance(acc, (int, float)) else "n/a"),
            ("macro F1", f"{data['macro_f1']:.4f}" if "macro_f1" in data else "n/a"),
            ("train time", _format_seconds(data.get("train_seconds"))),
            ("test images", f"{int(data.get('num_test', 0)):,}"),
        ]
        parts = [
            f"<div><b>{esc(str(data.get('model', '?')))} on {esc(str(data.get('dataset', '?')))}"
            "</b>",
            html_table(("", "value"), summary),
        ]
        if "per_class" in data:
            rows = [
                (name, row["precision"], row["recall"], row["f1"], row["support"])
                for name, row in data["per_class"].items()
            ]
            parts.append(html_table(("class", "precision", "recall", "F1", "support"), rows))
        if data.get("most_confused") and "per_class" in data:
            parts.append("<p>Most-confused pairs</p>" + _confused_html(data))
        figure = self.run_dir / FIGURE_FILES["confusion_matrix"] if self.run_dir else None
        if figure is not None and figure.is_file():
            parts.append(f"<img src='{_data_uri(figure)}' alt='confusion matrix' width='420'>")
        return "".join(parts) + "</div>"


def read_report(run_dir: str | os.PathLike[str]) -> Report:
    """The :class:`Report` of the run at ``run_dir`` (its ``report.json``).

    Raises:
        FileNotFoundError: the run has no ``report.json``.
        ValueError: it is not a JSON object.
    """
    path = Path(run_dir).expanduser()
    data = json.loads((path / "report.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path / 'report.json'}: not a JSON object")
    return Report(data, path)
