"""``evaluate_robustness``: the whole robustness check of a deep run, and its report section.

For a run folder written by ``mnistlab train --model <CNN>`` it measures, on the run's test
split: accuracy under every corruption of :mod:`~mnistlab.features.corruptions` at every
severity; FGSM and PGD accuracy at several L∞ budgets; calibration before and after temperature
scaling (saving ``model/calibration.json``); and how well the model's scores tell its test
images from another dataset's (Fashion-MNIST for digit models). Results go to
``<run>/robustness/robustness.json`` with figures next to it, and a "Robustness" section is
added to the run's ``report.html`` (earlier sections are kept as they were).
"""

from __future__ import annotations

import datetime as dt
import html
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.evaluation.report import (
    FIGURE_FILES,
    ReportSection,
    html_table,
    render_report_html,
)
from mnistlab.evaluation.rerun import carried_sections
from mnistlab.features.corruptions import CORRUPTIONS, SEVERITIES, corrupt, get_corruption
from mnistlab.io import atomic_write_bytes, atomic_write_json
from mnistlab.plotting import pyplot, save_figure
from mnistlab.robustness.attacks import ATTACKS, robust_accuracy
from mnistlab.robustness.calibration import (
    calibrate_run,
    load_run_model,
    predict_logits,
)
from mnistlab.robustness.ood import ood_from_logits, plot_confidence_histogram
from mnistlab.runs import read_json

__all__ = [
    "ROBUSTNESS_DIR",
    "add_report_sections",
    "evaluate_robustness",
    "plot_corruption_examples",
    "robustness_sections",
]

ROBUSTNESS_DIR = "robustness"
RESULT_FILE = "robustness.json"
SECTION_PREFIX = "Robustness"
FILES = {
    "corruption_examples": "corruption_examples.png",
    "corruption_accuracy": "corruption_accuracy.png",
    "adversarial_accuracy": "adversarial_accuracy.png",
    "adversarial_examples": "adversarial_examples.png",
    "reliability": "reliability_diagram.png",
    "ood": "ood_histogram.png",
}


# ---------------------------------------------------------------------------- figures


def plot_corruption_examples(
    images: np.ndarray,
    path: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    predictions: dict[tuple[str, int], int] | None = None,
    labels: np.ndarray | None = None,
    panels: dict[tuple[str, int], np.ndarray] | None = None,
) -> Path:
    """A grid: one row per corruption (row ``r`` shows image ``r % len(images)``), the clean
    image then each severity. With ``predictions[(name, severity)]`` (the model's class for
    that row's image) and ``labels``, each panel is titled with it, red when wrong;
    ``panels[(name, severity)]`` gives an already corrupted image to show instead of
    corrupting the row's image alone (the random draws depend on the batch).

    Args:
        images: uint8 ``(N, 28, 28)``, at least one.
        path: PNG to write.
        names: corruptions (default: all); severities: columns.
        seed: the corruptions' seed.

    Returns:
        ``path``.
    """

    plt = pyplot()
    chosen = list(names or CORRUPTIONS)
    cols = 1 + len(severities)
    fig, axes = plt.subplots(
        len(chosen), cols, figsize=(1.05 * cols + 1.2, 1.1 * len(chosen) + 0.5), squeeze=False
    )
    for r, name in enumerate(chosen):
        image = images[r % len(images)][None]
        row = axes[r]
        row[0].imshow(image[0], cmap="gray", vmin=0, vmax=255)
        row[0].set_ylabel(name.replace("_", " "), fontsize=8, rotation=0, ha="right", va="center")
        if r == 0:
            row[0].set_title("clean", fontsize=8)
        for c, severity in enumerate(severities, 1):
            ax = row[c]
            if r == 0:
                ax.set_title(f"severity {severity}", fontsize=8)
            if severity not in get_corruption(name).severities:
                ax.axis("off")
                continue
            shown = (panels or {}).get((name, severity))
            if shown is None:
                shown = corrupt(image, name, severity, seed)[0]
            ax.imshow(shown, cmap="gray", vmin=0, vmax=255)
            if predictions is not None and labels is not None:
                pred = predictions.get((name, severity))
                if pred is not None:
                    wrong = pred != int(labels[r % len(labels)])
                    ax.set_xlabel(f"→ {pred}", fontsize=7, color="#b2182b" if wrong else "#333")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_corruption_accuracy(
    table: dict[str, dict[str, float]], clean: float, path: Path, title: str
) -> Path:

    plt = pyplot()
    names = list(table)
    means = [table[n]["mean"] for n in names]
    order = np.argsort(means)
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1.2))
    y = np.arange(len(names))
    ax.barh(y, [means[i] for i in order], color="#4393c3", zorder=2)
    for k, i in enumerate(order):
        ax.text(means[i] + 0.005, k, f"{means[i]:.3f}", va="center", fontsize=7)
    ax.axvline(clean, color="#333333", linestyle="--", linewidth=1)
    ax.text(clean, -0.9, f" clean {clean:.3f}", fontsize=7, ha="right")
    ax.set_yticks(y, [names[i].replace("_", " ") for i in order], fontsize=8)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("accuracy, mean over severities")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_adversarial(rows: list[dict[str, Any]], clean: float, path: Path) -> Path:

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for attack in ATTACKS:
        pts = sorted((r["eps"], r["accuracy"]) for r in rows if r["attack"] == attack)
        if pts:
            xs, ys = zip(*[(0.0, clean), *pts], strict=True)
            ax.plot(xs, ys, "o-", label=attack.upper())
    ax.set_xlabel("ε (L∞, pixel scale [0, 1])")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Accuracy under white-box attacks", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_adversarial_examples(
    clean: np.ndarray, examples: dict[str, np.ndarray], path: Path
) -> Path:

    plt = pyplot()
    rows = [("clean", clean[:8]), *examples.items()]
    cols = min(8, len(clean))
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.95 + 1, len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- evaluation


def _accuracy(model: Any, images: np.ndarray, labels: np.ndarray, norm: Any, device: str):
    pred = predict_logits(model, images, norm, device=device).argmax(1)
    return float((pred == labels).mean()), pred


def evaluate_robustness(
    run_dir: str | os.PathLike[str],
    *,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    attacks: Sequence[str] = ATTACKS,
    eps: Sequence[float] = (0.1, 0.2, 0.3),
    pgd_steps: int = 40,
    pgd_restarts: int = 1,
    attack_limit: int | None = 1000,
    calibrate: bool = True,
    calibrate_on: str = "auto",
    ood_dataset: str | None = "auto",
    limit: int | None = None,
    seed: int = 0,
    home: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    report: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the robustness checks on a deep run and write their results into the run folder.

    Args:
        run_dir: a deep run folder.
        corruptions: names to test (default all; an empty sequence skips corruptions).
        severities: severities to test (each corruption uses those it has).
        attacks: a subset of ``("fgsm", "pgd")``; empty skips the attacks.
        eps: L∞ budgets on the [0, 1] pixel scale.
        pgd_steps, pgd_restarts: PGD's steps per start and random starts.
        attack_limit: attack only the first this many test images (attacks are the slow
            part); None = all.
        calibrate: fit a temperature and write ``model/calibration.json``.
        calibrate_on: ``"auto"``, ``"val"`` or ``"test-half"`` (see
            :func:`~mnistlab.robustness.calibration.calibration_data`).
        ood_dataset: the out-of-distribution test split: a dataset name, ``"auto"``
            (Fashion-MNIST, or MNIST for a Fashion-MNIST run) or None to skip.
        limit: use only the first this many test images for the corruptions and the OOD
            check, and as many images of the OOD dataset (None = all).
        seed: corruptions' and PGD starts' seed.
        home: dataset cache root.
        device: where the model runs.
        report: add the robustness section to the run's ``report.html``.
        log: called with progress lines.

    Writes:
        ``<run>/robustness/robustness.json`` (everything measured, with the settings) and its
        figures; ``<run>/model/calibration.json`` when calibrating; ``report.html`` and
        ``report.json`` when ``report``. Earlier robustness results are replaced.

    Returns:
        The content of ``robustness.json``.
    """

    say = log or (lambda _msg: None)
    run = Path(run_dir)
    model, meta, config = load_run_model(run)
    norm = meta["normalization"]
    test = load_dataset(config["dataset"], "test", home=home)
    n = len(test) if limit is None else min(limit, len(test))
    images, labels = test.images[:n], test.labels[:n]
    out = run / ROBUSTNESS_DIR
    out.mkdir(exist_ok=True)
    clean_logits = predict_logits(model, images, norm, device=device)
    clean = float((clean_logits.argmax(1) == labels).mean())
    result: dict[str, Any] = {
        "run": str(run.resolve()),
        "model": config["model"],
        "dataset": config["dataset"],
        "adversarial_training": {
            k: config.get(k) for k in ("adversarial_eps", "adversarial_steps")
        },
        "clean_accuracy": clean,
        "num_test": n,
        "settings": {
            "severities": list(severities),
            "attacks": list(attacks),
            "eps": list(eps),
            "pgd_steps": pgd_steps,
            "pgd_restarts": pgd_restarts,
            "attack_limit": attack_limit,
            "seed": seed,
            "device": device,
        },
        "files": {},
    }
    say(f"clean accuracy {clean:.4f} on {n:,} test images")

    # -- corruptions
    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    for name in names:
        get_corruption(name)
    if names:
        start = time.perf_counter()
        table: dict[str, dict[str, float]] = {}
        shown: dict[tuple[str, int], int] = {}
        panels: dict[tuple[str, int], np.ndarray] = {}
        for r, name in enumerate(names):
            row: dict[str, float] = {}
            for severity in severities:
                if severity not in get_corruption(name).severities:
                    continue
                corrupted = corrupt(images, name, severity, seed)
                acc, pred = _accuracy(model, corrupted, labels, norm, device)
                row[str(severity)] = acc
                shown[(name, severity)] = int(pred[r % n])
                panels[(name, severity)] = corrupted[r % n]
            if not row:
                raise MnistlabError(f"no severity of {name} among {list(severities)}")
            row["mean"] = float(np.mean(list(row.values())))
            table[name] = row
            say(f"{name:>14}: mean {row['mean']:.4f}")
        families: dict[str, list[float]] = {}
        for name, row in table.items():
            families.setdefault(CORRUPTIONS[name].family, []).append(row["mean"])
        mean_corrupted = float(np.mean([row["mean"] for row in table.values()]))
        result["corruptions"] = {
            "mean_accuracy": mean_corrupted,
            "mean_error": 1 - mean_corrupted,
            "per_corruption": table,
            "per_family": {f: float(np.mean(v)) for f, v in families.items()},
            "seconds": time.perf_counter() - start,
        }
        plot_corruption_examples(
            images,
            out / FILES["corruption_examples"],
            names=names,
            severities=severities,
            seed=seed,
            predictions=shown,
            labels=labels,
            panels=panels,
        )
        _plot_corruption_accuracy(
            table,
            clean,
            out / FILES["corruption_accuracy"],
            f"{config['model']}: mean corrupted accuracy {mean_corrupted:.4f} (clean {clean:.4f})",
        )
        result["files"].update(
            {k: FILES[k] for k in ("corruption_examples", "corruption_accuracy")}
        )

    # -- adversarial attacks
    if attacks:
        k = len(test) if attack_limit is None else min(attack_limit, len(test))
        say(f"attacks {', '.join(attacks)} at eps {list(eps)} on {k:,} test images")
        rows, examples = robust_accuracy(
            model,
            test.images[:k],
            test.labels[:k],
            norm,
            attacks=attacks,
            eps=eps,
            steps=pgd_steps,
            restarts=pgd_restarts,
            seed=seed,
            device=device,
        )
        clean_k, _ = _accuracy(model, test.images[:k], test.labels[:k], norm, device)
        result["adversarial"] = {
            "clean_accuracy": clean_k,
            "num_images": k,
            "results": [r.__dict__ for r in rows],
        }
        for r in rows:
            say(f"{r.attack} eps {r.eps:g}: accuracy {r.accuracy:.4f} ({r.seconds:.1f} s)")
        _plot_adversarial(
            result["adversarial"]["results"], clean_k, out / FILES["adversarial_accuracy"]
        )
        _plot_adversarial_examples(test.images[:8], examples, out / FILES["adversarial_examples"])
        result["files"].update(
            {k: FILES[k] for k in ("adversarial_accuracy", "adversarial_examples")}
        )

    # -- calibration
    temperature, threshold = 1.0, None
    if calibrate:
        cal = calibrate_run(
            run, fit_on=calibrate_on, figure=out / FILES["reliability"], home=home, device=device
        )
        temperature, threshold = cal["temperature"], cal["ood"]["threshold"]
        result["calibration"] = cal
        result["files"]["reliability"] = FILES["reliability"]
        say(
            f"temperature {temperature:.3f} (fitted on {cal['fitted_on']}): ECE "
            f"{cal['ece_before']:.4f} -> {cal['ece_after']:.4f}"
        )

    # -- out-of-distribution
    if ood_dataset == "auto":
        ood_dataset = "mnist" if config["dataset"] == "fashion-mnist" else "fashion-mnist"
    if ood_dataset:
        other = load_dataset(ood_dataset, "test", home=home).images[:n]
        names = {"in_dataset": config["dataset"], "out_dataset": ood_dataset}
        logits_out = predict_logits(model, other, norm, device=device)
        raw = ood_from_logits(clean_logits, logits_out, **names)
        entry: dict[str, Any] = {"raw": raw.to_dict()}
        shown_result = raw
        if calibrate and temperature != 1.0:
            shown_result = ood_from_logits(
                clean_logits, logits_out, **names, temperature=temperature
            )
            entry["calibrated"] = shown_result.to_dict()
            entry["flagged_low_confidence"] = {
                "threshold": threshold,
                **{
                    key: float((scores["max_softmax"] < threshold).mean())
                    for key, scores in (
                        ("in_distribution", shown_result.scores_in),
                        ("out_of_distribution", shown_result.scores_out),
                    )
                },
            }
        plot_confidence_histogram(shown_result, out / FILES["ood"], threshold=threshold)
        result["ood"] = entry
        result["files"]["ood"] = FILES["ood"]
        say(
            f"OOD {config['dataset']} vs {ood_dataset}: AUROC max-softmax "
            f"{raw.auroc['max_softmax']:.4f}, energy {raw.auroc['energy']:.4f}"
        )

    result["created"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    atomic_write_json(out / RESULT_FILE, result)
    if report and (run / "report.json").is_file():
        add_report_sections(run, robustness_sections(result, out))
    return result


# ---------------------------------------------------------------------------- report


def _pct(value: float) -> str:
    return f"{value:.2%}"


def robustness_sections(result: dict[str, Any], folder: Path) -> list[ReportSection]:
    """The report sections of a :func:`evaluate_robustness` result (figures from ``folder``)."""
    sections = []
    files = result.get("files", {})

    def add(name: str, figure: str, html: str = "", caption: str = "") -> None:
        title = f"{SECTION_PREFIX}: {name}"
        sections.append(ReportSection(title, html, folder / files[figure], caption))

    if "corruptions" in result:
        c = result["corruptions"]
        severities = [str(s) for s in result["settings"]["severities"]]
        header = ["corruption", "family", *[f"severity {s}" for s in severities], "mean"]
        rows = [
            [
                name.replace("_", " "),
                CORRUPTIONS[name].family,
                *[_pct(row[s]) if s in row else "" for s in severities],
                _pct(row["mean"]),
            ]
            for name, row in c["per_corruption"].items()
        ]
        rows.append(["all (mean)", "", *[""] * len(severities), _pct(c["mean_accuracy"])])
        intro = (
            f"<p>Clean accuracy {_pct(result['clean_accuracy'])} on {result['num_test']:,} test "
            f"images; <b>mean corrupted accuracy {_pct(c['mean_accuracy'])}</b> (the mean over "
            "corruptions of each one's mean over its severities).</p>"
        )
        add(
            "corruptions",
            "corruption_accuracy",
            html=intro + html_table(header, rows, numeric_columns=range(2, len(header))),
            caption="Accuracy per corruption (mean over severities); dashed: clean accuracy.",
        )
        add(
            "corruption examples",
            "corruption_examples",
            caption="Each corruption at each severity; → the model's prediction (red: wrong).",
        )
    if "adversarial" in result:
        a = result["adversarial"]
        rows = [
            [
                r["attack"].upper(),
                f"{r['eps']:g}",
                _pct(r["accuracy"]),
                _pct(r.get("single_eps_accuracy", r["accuracy"])),
                r["steps"],
                r["restarts"],
                f"{r['step_size']:.4g}",
                f"{r['seconds']:.1f}",
            ]
            for r in a["results"]
        ]
        header = [
            "attack", "ε", "accuracy", "this ε alone", "steps", "restarts", "step size", "seconds"
        ]  # fmt: skip
        adv = result.get("adversarial_training") or {}
        trained = (
            f"adversarially trained (PGD, ε {adv['adversarial_eps']:g}, "
            f"{adv['adversarial_steps']} steps)"
            if adv.get("adversarial_eps")
            else "not adversarially trained"
        )
        intro = (
            f"<p>White-box L∞ attacks on the first {a['num_images']:,} test images (clean "
            f"accuracy there {_pct(a['clean_accuracy'])}); pixels in [0, 1]; the model is "
            f"{html.escape(trained)}. An image counts as robust at ε only if the attack "
            "failed there and at every smaller ε of the table (an adversarial image found "
            "inside a smaller ball lies inside the larger one too).</p>"
        )
        add(
            "adversarial attacks",
            "adversarial_accuracy",
            html=intro + html_table(header, rows, numeric_columns=range(1, 7)),
        )
        add(
            "adversarial examples",
            "adversarial_examples",
            caption="The first test images and their adversarial versions per attack and ε.",
        )
    if "calibration" in result:
        cal = result["calibration"]
        rows = [
            ["ECE (15 bins)", f"{cal['ece_before']:.4f}", f"{cal['ece_after']:.4f}"],
            ["NLL", f"{cal['nll_before']:.4f}", f"{cal['nll_after']:.4f}"],
        ]
        intro = (
            f"<p>Temperature <b>{cal['temperature']:.4f}</b> fitted on "
            f"{html.escape(cal['description'])}; saved in model/calibration.json with the "
            f"low-confidence threshold {cal['ood']['threshold']:.4f} (max softmax).</p>"
        )
        add("calibration", "reliability", html=intro + html_table(["", "before", "after"], rows))
    if "ood" in result:
        o = result["ood"]
        rows = []
        for key, label in (("raw", "T = 1"), ("calibrated", "fitted T")):
            if key in o:
                r = o[key]
                for score in ("max_softmax", "energy"):
                    rows.append(
                        [
                            f"{score} ({label})",
                            f"{r['auroc'][score]:.4f}",
                            _pct(r["fpr_at_95_tpr"][score]),
                        ]
                    )
        first = o["raw"]
        intro = (
            f"<p>Is this a {html.escape(first['in_dataset'])} image? "
            f"{first['num_in']:,} {html.escape(first['in_dataset'])} test images against "
            f"{first['num_out']:,} {html.escape(first['out_dataset'])} test images, no labels "
            "used.</p>"
        )
        flagged = o.get("flagged_low_confidence")
        if flagged:
            intro += (
                f"<p>With the saved threshold, {_pct(flagged['in_distribution'])} of the "
                f"in-distribution and {_pct(flagged['out_of_distribution'])} of the "
                "out-of-distribution images are flagged low-confidence.</p>"
            )
        add(
            "out-of-distribution",
            "ood",
            html=intro + html_table(["score", "AUROC", "FPR at 95% TPR"], rows),
        )
    return sections


def add_report_sections(run_dir: str | os.PathLike[str], sections: Sequence[ReportSection]) -> None:
    """Add (or replace) the robustness sections of a run's ``report.html`` and ``report.json``.

    The page is rendered again from ``report.json`` and the run's figures; the extra sections
    already in the page (training curves, ...) are carried over verbatim
    (:func:`mnistlab.evaluation.rerun.carried_sections`), except earlier robustness sections,
    which ``sections`` replace.
    """

    run = Path(run_dir)
    report = read_json(run, "report.json")
    kept = carried_sections(run, drop_prefix=SECTION_PREFIX)
    report["sections"] = [s.title for s in kept] + [s.title for s in sections]
    report["robustness"] = f"{ROBUSTNESS_DIR}/{RESULT_FILE}"
    figures = {k: run / f for k, f in FIGURE_FILES.items() if (run / f).is_file()}
    html_page = render_report_html(report, figures, [*kept, *sections])
    atomic_write_bytes(run / "report.html", html_page.encode("utf-8"))
    atomic_write_json(run / "report.json", report)
