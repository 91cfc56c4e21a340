"""Run folders: where every training run keeps its config, environment, model and report.

Layout of a run folder (``<root>/<YYYYmmdd-HHMMSS>-<model>-<dataset>``, never reused)::

    config.json        the full config, defaults included, and the seed
    environment.json   versions (python, numpy, torch, scikit-learn, mnistlab), platform,
                       and the SHA-256 of every data file used
    metrics.json       the numbers the run produced (accuracy, timings, ...)
    model/             the trained model: model.json + its weights (model.safetensors, or
                       model.skops for classic models; no pickle)
    report.json, report.html, *.png   the evaluation report

The default root is ``$MNISTLAB_RUNS`` or ``./runs``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mnistlab.data.cache import files_dir, get_spec
from mnistlab.errors import MnistlabError
from mnistlab.io import atomic_write_json

RUNS_ENV = "MNISTLAB_RUNS"
_SLUG = re.compile(r"[^a-z0-9._-]+")


def default_runs_root() -> Path:
    """``$MNISTLAB_RUNS`` if set, else ``./runs``."""
    return Path(os.environ.get(RUNS_ENV) or "runs").expanduser()


def new_run_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Create a fresh, empty run folder ``<root>/<timestamp>-<name>`` and return it.

    An existing folder is never reused: a numeric suffix is added instead.
    """
    base = Path(root).expanduser() if root is not None else default_runs_root()
    base.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = _SLUG.sub("-", name.lower()).strip("-") or "run"
    for k in range(1000):
        path = base / (f"{stamp}-{slug}" + (f"-{k}" if k else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise MnistlabError(f"could not create a new run folder in {base}")


def check_out_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Check that ``out`` can take a new run, without creating anything: missing, an empty
    folder, or (with ``overwrite``) a run or any folder.

    Raises:
        OverwriteError: ``out`` is a file, or holds a run (``config.json``) or other files and
            ``overwrite`` is false.
    """
    from mnistlab.errors import OverwriteError

    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise OverwriteError(
            f"--out {path} is a file, not a folder", hint="choose a folder for the run"
        )
    if (path / "config.json").exists() and not overwrite:
        raise OverwriteError(
            f"{path} already holds a run", hint="pass --overwrite, or choose another --out"
        )
    if path.is_dir() and not overwrite and any(path.iterdir()):
        # Never write a run among a user's own files unasked.
        raise OverwriteError(
            f"{path} is not empty and holds no run",
            hint="choose a new or empty folder for --out, or pass --overwrite to write there",
        )
    return path


def prepare_out_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Use ``out`` as a run folder (:func:`check_out_dir`, then created if missing).

    Raises:
        OverwriteError: see :func:`check_out_dir`.
    """
    path = check_out_dir(out, overwrite)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_info(
    datasets: list[str] | None = None, home: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Versions, platform and the SHA-256 of every data file of ``datasets``."""
    from mnistlab import __version__

    data: dict[str, dict[str, str | None]] = {}
    for name in datasets or []:
        spec = get_spec(name, home)
        data[name] = {
            f.local_name: f.payload_sha256 or _recorded_sha(files_dir(spec, home), f.local_name)
            for f in spec.files
        }
    return {
        "mnistlab": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": {
            p: _version(p) for p in ("numpy", "torch", "scikit-learn", "safetensors", "matplotlib")
        },
        "data_sha256": data,
    }


def _recorded_sha(directory: Path, file: str) -> str | None:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    for split in manifest.get("splits", {}).values():
        for entry in split.values():
            if isinstance(entry, dict) and entry.get("file") == file:
                return entry.get("sha256")
    return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), recorded with every figure."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_run_record(
    run_dir: Path,
    config: dict[str, Any],
    datasets: list[str],
    home: str | os.PathLike[str] | None = None,
) -> None:
    """Start a run folder's record: ``config.json`` (``config`` and ``created``, the time in
    UTC) and ``environment.json`` (:func:`environment_info` of ``datasets``)."""
    import datetime as dt

    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_json(run_dir, "config.json", {**config, "created": created})
    write_json(run_dir, "environment.json", environment_info(datasets, home))


def write_json(run_dir: Path, name: str, obj: Any) -> Path:
    """Write ``obj`` as ``<run_dir>/<name>`` atomically; returns the path."""
    path = Path(run_dir) / name
    atomic_write_json(path, obj)
    return path


def read_json(run_dir: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Read ``<run_dir>/<name>``.

    Raises:
        MnistlabError: the file is missing or not JSON (with a hint about run folders).
    """
    path = Path(run_dir) / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MnistlabError(
            f"{path} not found: {Path(run_dir)} is not a complete run folder",
            hint="pass a folder written by `mnistlab train` (see `mnistlab runs list`)",
        ) from None
    except (OSError, ValueError) as exc:
        raise MnistlabError(f"{path}: unreadable ({exc})") from exc


@dataclass(frozen=True)
class RunSummary:
    """One row of ``mnistlab runs list``."""

    path: Path
    model: str
    dataset: str
    test_accuracy: float | None
    train_seconds: float | None
    created: str


RUN_SEARCH_DEPTH = 3  # runs/<group>/<subgroup>/<run>: how deep list_runs looks


def run_model_label(config: dict[str, Any]) -> str:
    """What ``runs list`` shows as a run's model: the architecture of a training run, the
    transformer and objective of a pretraining run, the mode of a fine-tuning run, the net
    and number of labels of a few-label run, the kind of a GAN or number reader run."""
    kind = config.get("kind")
    if kind == "pretrain":
        return f"vit-{config.get('preset', '?')} {config.get('objective', '?')}"
    if kind == "finetune":
        labels = config.get("labels") or 0
        return f"vit-{config.get('preset', '?')} {config.get('mode', '?')}" + (
            f" {labels}L" if labels else ""
        )
    if kind == "fewshot":
        return f"{config.get('model', '?')} {config.get('labels', '?')}L"
    if kind == "ensemble":
        return f"ensemble of {len(config.get('members', []))}"
    if kind == "reader":
        return "number-reader"
    if kind == "gan":
        return "dcgan" + (" conditional" if config.get("conditional") else "")
    return str(config.get("model", "?"))


def find_run_dirs(root: Path, depth: int = RUN_SEARCH_DEPTH) -> list[Path]:
    """Run folders (a ``config.json`` with a ``kind``) under ``root``, ``depth`` levels down
    at most, sorted by path; a run's own sub-folders are not searched."""
    found: list[Path] = []
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return found
    for child in children:
        if (child / "config.json").is_file():
            found.append(child)
        elif depth > 1:
            found += find_run_dirs(child, depth - 1)
    return found


def list_runs(root: str | os.PathLike[str] | None = None) -> list[RunSummary]:
    """Every run folder under ``root`` (default :func:`default_runs_root`), up to
    :data:`RUN_SEARCH_DEPTH` levels down, sorted by path (names start with their time)."""
    base = Path(root).expanduser() if root is not None else default_runs_root()
    rows = []
    if not base.is_dir():
        return rows
    for path in find_run_dirs(base):
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(config, dict) or "kind" not in config:
            continue
        report: dict[str, Any] = {}
        if (path / "report.json").is_file():
            try:
                report = json.loads((path / "report.json").read_text())
            except (OSError, ValueError):
                report = {}
        rows.append(
            RunSummary(
                path=path,
                model=run_model_label(config),
                dataset=str(config.get("dataset", "?")),
                test_accuracy=report.get("test_accuracy"),
                train_seconds=report.get("train_seconds"),
                created=str(config.get("created", "")),
            )
        )
    return rows


# The figures a run's inline view shows, the first two of these it finds (PNGs written by
# training, pretraining or the report): curves first, then the confusion matrix, an MAE's
# reconstructions or a GPT's samples.
RUN_FIGURES = (
    "training_curves.png",
    "pretraining_curves.png",
    "confusion_matrix.png",
    "reconstructions.png",
    "samples.png",
)


@dataclass(frozen=True)
class Run:
    """A run folder read back: its config, results, report and epoch history. In Jupyter it
    shows itself as a summary table and its figures (:meth:`_repr_html_`); see
    :func:`open_run`."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]  # metrics.json ({} when missing)
    report: dict[str, Any]  # report.json ({} when missing)
    history: list[dict[str, Any]]  # the lines of metrics.jsonl ([] for classic runs)

    @property
    def figures(self) -> list[Path]:
        """The run's PNG figures, by name."""
        return sorted(self.path.glob("*.png"))

    def summary(self) -> dict[str, Any]:
        """Model, dataset, test accuracy, train time, epochs (None: not recorded)."""
        results = {**self.report, **self.metrics}
        return {
            "model": run_model_label(self.config),
            "dataset": self.config.get("dataset"),
            "test_accuracy": results.get("test_accuracy"),
            "train_seconds": results.get("train_seconds"),
            "epochs": len(self.history) or None,
            "created": self.config.get("created"),
        }

    def _repr_html_(self) -> str:
        import base64
        import html

        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(key.replace('_', ' '))}</th>"
            f"<td style='text-align:left'>{html.escape(_shown(value))}</td></tr>"
            for key, value in self.summary().items()
            if value is not None
        )
        images = []
        for name in [n for n in RUN_FIGURES if (self.path / n).is_file()][:2]:
            data = base64.b64encode((self.path / name).read_bytes()).decode("ascii")
            images.append(
                f"<img src='data:image/png;base64,{data}' alt='{html.escape(name)}' "
                "style='max-width:48%;vertical-align:top'>"
            )
        return (
            f"<div><b>run {html.escape(self.path.name)}</b><table>{rows}</table>"
            f"{''.join(images)}</div>"
        )


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1 else f"{value:.2f}"
    return str(value)


def open_run(path: str | os.PathLike[str]) -> Run:
    """Read the run folder at ``path`` (anything ``mnistlab train``, ``pretrain`` or
    ``finetune`` wrote).

    Raises:
        MnistlabError: ``path`` has no ``config.json``.
    """
    run = Path(path).expanduser()
    return Run(
        run,
        read_json(run, "config.json"),
        _read_optional(run, "metrics.json"),
        _read_optional(run, "report.json"),
        _history(run),
    )


# Keys of config.json that say when or where, not how: left out of a comparison.
_NOT_SETTINGS = ("created", "threads", "train_data", "normalization", "world_size")


@dataclass(frozen=True)
class RunComparison:
    """What :func:`compare_runs` returns."""

    runs: list[Path]
    # config key -> its value in each run, for the keys that differ; nested records are spread
    # into dotted keys ("generated.fonts")
    differences: dict[str, list[Any]]
    results: list[dict[str, Any]]  # per run: test_accuracy, train_seconds, epochs (None: unknown)
    figure: Path | None  # the curves of every run on one plot


def compare_runs(
    runs: list[str | os.PathLike[str]],
    plot: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> RunComparison:
    """Put runs side by side: the config keys whose values differ, their results, and (with
    ``plot``) their training curves on one figure (loss every few steps or per epoch, and the
    validation accuracy per epoch where there is one).

    Raises:
        MnistlabError: fewer than two runs, a folder that is no run, or ``plot`` exists and
            ``overwrite`` is false.
    """
    paths = [Path(r).expanduser() for r in runs]
    if len(paths) < 2:
        raise MnistlabError("compare needs at least two runs", hint="mnistlab runs compare A B")
    configs = [_flat(read_json(p, "config.json")) for p in paths]
    keys = sorted({k for c in configs for k in c if k.split(".")[0] not in _NOT_SETTINGS})
    differences = {
        k: [c.get(k) for c in configs]
        for k in keys
        if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1
    }
    results, histories = [], []
    for path in paths:
        metrics = _read_optional(path, "metrics.json") or _read_optional(path, "report.json")
        lines = _history(path)
        histories.append(lines)
        results.append(
            {
                "test_accuracy": metrics.get("test_accuracy"),
                "train_seconds": metrics.get("train_seconds"),
                "epochs": len(lines) or None,
            }
        )
    figure = None
    if plot is not None:
        target = Path(plot).expanduser()
        if target.exists() and not overwrite:
            raise MnistlabError(f"{target} exists", hint="pass --overwrite or another --plot")
        figure = _plot_comparison(paths, histories, target)
    return RunComparison(paths, differences, results, figure)


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` with nested dicts spread into dotted keys ({"a": {"b": 1}} -> {"a.b": 1}), so
    that a comparison names the one entry that differs, not the whole record around it."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_optional(run: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads((run / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _history(run: Path) -> list[dict[str, Any]]:
    try:
        text = (run / "metrics.jsonl").read_text()
    except OSError:
        return []
    lines = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            lines.append(record)
    return lines


def _plot_comparison(paths: list[Path], histories: list[list[dict[str, Any]]], out: Path) -> Path:
    from mnistlab.plotting import pyplot, save_figure

    plt = pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for path, lines in zip(paths, histories, strict=True):
        if not lines:
            continue
        label_key = "epoch" if "epoch" in lines[0] else "round"
        per = max(1, lines[0].get("step", 1) // max(1, lines[0].get(label_key, 1)))
        xs, ys = [], []
        for r in lines:
            curve = r.get("curve") or {}
            xs += [s / per for s in curve.get("step", [])]
            ys += curve.get("loss", [])
        if not xs:
            xs = [r.get(label_key) for r in lines]
            ys = [r.get("train_loss") for r in lines]
        (line,) = loss_ax.plot(xs, ys, linewidth=1, label=path.name)
        val = [(r.get(label_key), r.get("val_accuracy")) for r in lines if r.get("val_accuracy")]
        if val:
            acc_ax.plot(*zip(*val, strict=True), "o-", color=line.get_color(), label=path.name)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out)
