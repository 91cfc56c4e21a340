"""``mnistlab robustness RUN_DIR`` and ``mnistlab label-issues``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mnistlab.cli.common import HomeOption, console, handle_errors
from mnistlab.errors import MnistlabError


def _csv(text: str | None, kind: type, what: str) -> list | None:
    """``"0.1,0.2"`` -> ``[0.1, 0.2]``; None stays None; ``""`` / ``"none"`` -> ``[]``."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MnistlabError(
            f"{what}: cannot read {text!r}", hint="a comma-separated list"
        ) from None


def robustness_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A deep run folder written by `mnistlab train`.")],
    corruptions: Annotated[
        str | None,
        typer.Option(help="Comma-separated corruptions, or none. [default: all 17]"),
    ] = None,
    severities: Annotated[str, typer.Option(help="Comma-separated severities (1-5).")] = (
        "1,2,3,4,5"
    ),
    attacks: Annotated[str, typer.Option(help="fgsm,pgd or a subset, or none.")] = "fgsm,pgd",
    eps: Annotated[str, typer.Option(help="L∞ budgets on the [0, 1] pixel scale.")] = (
        "0.1,0.2,0.3"
    ),
    pgd_steps: Annotated[int, typer.Option(min=1, help="PGD steps per random start.")] = 40,
    restarts: Annotated[int, typer.Option(min=1, help="PGD random restarts.")] = 1,
    attack_limit: Annotated[
        int, typer.Option(min=0, help="Attack the first N test images (0 = all).")
    ] = 1000,
    calibrate: Annotated[
        bool, typer.Option(help="Fit a temperature; write model/calibration.json.")
    ] = True,
    calibrate_on: Annotated[
        str, typer.Option(help="auto (val if the run has one, else test-half), val, test-half.")
    ] = "auto",
    ood_dataset: Annotated[
        str,
        typer.Option(
            help="Out-of-distribution test set: auto (fashion-mnist/mnist), a name, none."
        ),
    ] = "auto",
    limit: Annotated[
        int, typer.Option(min=0, help="Corrupt only the first N test images (0 = all).")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the corruptions and PGD starts.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto.")] = "cpu",
    home: HomeOption = None,
) -> None:
    """Accuracy under an MNIST-C-style corruption suite, FGSM/PGD attacks, calibration with
    temperature scaling (saved with the model) and out-of-distribution detection for a deep run.

    Writes RUN_DIR/robustness/ (robustness.json and figures), RUN_DIR/model/calibration.json
    and a Robustness section in RUN_DIR/report.html; earlier robustness results are replaced.
    See docs/robustness.md."""
    from mnistlab.robustness.suite import evaluate_robustness
    from mnistlab.training.runtime import resolve_device

    result = evaluate_robustness(
        run_dir,
        corruptions=_csv(corruptions, str, "--corruptions"),
        severities=_csv(severities, int, "--severities") or [],
        attacks=_csv(attacks, str, "--attacks") or [],
        eps=_csv(eps, float, "--eps") or [],
        pgd_steps=pgd_steps,
        pgd_restarts=restarts,
        attack_limit=attack_limit or None,
        calibrate=calibrate,
        calibrate_on=calibrate_on,
        ood_dataset=None if ood_dataset.lower() == "none" else ood_dataset,
        limit=limit or None,
        seed=seed,
        home=home,
        device=str(resolve_device(device)),
        log=lambda msg: console.print(escape(msg), highlight=False),
    )
    _print_result(result, run_dir)


def _print_result(result: dict, run_dir: Path) -> None:
    if "corruptions" in result:
        c = result["corruptions"]
        severities = [str(s) for s in result["settings"]["severities"]]
        table = Table(title="Accuracy under corruptions", title_justify="left")
        table.add_column("corruption")
        for s in severities:
            table.add_column(f"sev {s}", justify="right")
        table.add_column("mean", justify="right")
        for name, row in c["per_corruption"].items():
            table.add_row(
                name,
                *[f"{row[s]:.4f}" if s in row else "" for s in severities],
                f"{row['mean']:.4f}",
            )
        console.print(table)
        console.print(
            f"clean {result['clean_accuracy']:.4f}  [bold]mean corrupted "
            f"{c['mean_accuracy']:.4f}[/]"
        )
    if "adversarial" in result:
        table = Table(title="Accuracy under attack", title_justify="left")
        for column in ("attack", "eps", "accuracy", "images"):
            table.add_column(column, justify="right" if column != "attack" else "left")
        for r in result["adversarial"]["results"]:
            table.add_row(
                r["attack"], f"{r['eps']:g}", f"{r['accuracy']:.4f}", str(r["num_images"])
            )
        console.print(table)
    if "calibration" in result:
        cal = result["calibration"]
        console.print(
            f"temperature {cal['temperature']:.4f} ({cal['fitted_on']}): ECE "
            f"{cal['ece_before']:.4f} → {cal['ece_after']:.4f}"
        )
    if "ood" in result:
        raw = result["ood"]["raw"]
        console.print(
            f"OOD AUROC ({escape(raw['in_dataset'])} vs {escape(raw['out_dataset'])}): "
            f"max-softmax {raw['auroc']['max_softmax']:.4f}, energy {raw['auroc']['energy']:.4f}"
        )
    console.print(f"report: {escape(str(run_dir / 'report.html'))}")


def label_issues_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name.")] = "mnist",
    split: Annotated[str, typer.Option(help="Split to audit: train or test.")] = "train",
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 4,
    model: Annotated[str, typer.Option("--model", "-m", help="Deep model per fold.")] = (
        "fast-cnn"
    ),
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per fold.")] = 2,
    min_confidence: Annotated[
        float, typer.Option(help="Flag disagreements at least this confident.")
    ] = 0.9,
    limit: Annotated[int, typer.Option(min=0, help="Audit the first N images (0 = all).")] = 0,
    show: Annotated[int, typer.Option(min=1, help="Images in the gallery.")] = 48,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder. [default: runs/TIME-label-issues-DATASET]"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier result in --out.")] = False,
    home: HomeOption = None,
) -> None:
    """Find likely mislabeled images: train a CNN on all folds but one, predict the held-out
    fold, and flag images whose label the model confidently disagrees with. Writes
    label_issues.json and a gallery, label_issues.png."""
    from mnistlab.data import load_dataset
    from mnistlab.robustness.label_quality import find_label_issues, write_label_issues
    from mnistlab.runs import new_run_dir

    issues = find_label_issues(
        dataset,
        split=split,
        folds=folds,
        model=model,
        epochs=epochs,
        min_confidence=min_confidence,
        limit=limit or None,
        seed=seed,
        home=home,
        log=lambda msg: console.print(escape(msg)),
    )
    folder = out if out is not None else new_run_dir(f"label-issues-{dataset}")
    images = load_dataset(dataset, split, home=home).images[: issues.num_images]
    path = write_label_issues(issues, folder, images=images, show=show, overwrite=overwrite)
    table = Table(
        title=f"{len(issues.indices)} likely label issues in {dataset} {split} "
        f"({issues.num_images:,} images, out-of-fold accuracy {issues.out_of_fold_accuracy:.4f})",
        title_justify="left",
    )
    for column in ("index", "given", "predicted", "p(predicted)", "p(given)"):
        table.add_column(column, justify="right")
    for k in range(min(15, len(issues.indices))):
        table.add_row(
            str(issues.indices[k]),
            escape(issues.class_names[int(issues.given[k])]),
            escape(issues.class_names[int(issues.predicted[k])]),
            f"{issues.confidence[k]:.3f}",
            f"{issues.given_probability[k]:.4f}",
        )
    console.print(table)
    console.print(
        f"results: {escape(str(path))}  gallery: {escape(str(path.parent))}/label_issues.png"
    )


def register(app: typer.Typer) -> None:
    """Add ``robustness`` and ``label-issues`` to ``app``."""
    app.command("robustness")(handle_errors(robustness_cmd))
    app.command("label-issues")(handle_errors(label_issues_cmd))
