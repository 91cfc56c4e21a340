"""A sweep's results, read back from its Optuna study: a table (Markdown and CSV), a figure,
what pruning saved, and the best trial's config, which ``mnistlab train --config`` replays."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistlab.io import atomic_write_bytes
from mnistlab.runs import write_json
from mnistlab.training.sweep import STORAGE_ENV, SweepSettings, read_settings
from mnistlab.training.sweep_study import SURPLUS, open_study, sqlite_url

RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
FIGURE = "sweep.png"
BEST_DIR = "best"


@dataclass
class SweepResult:
    """A sweep's trials (``rows``, in trial order), the best one, and what pruning saved.

    ``steps_full`` is how many epochs (deep) or folds (classic) the trials would have trained
    without pruning; ``steps_run`` how many they did. ``seconds_saved`` estimates the time
    the skipped steps would have taken, at each pruned trial's own pace.
    """

    sweep_dir: Path
    settings: SweepSettings
    rows: list[dict[str, Any]] = field(default_factory=list)
    steps_full: int = 0
    steps_run: int = 0
    seconds: float = 0.0
    seconds_saved: float = 0.0
    best_config: Path | None = None
    figure: Path | None = None

    @property
    def best(self) -> dict[str, Any] | None:
        done = [r for r in self.rows if r["state"] == "complete"]
        return max(done, key=lambda r: r["value"]) if done else None

    def count(self, state: str) -> int:
        return sum(r["state"] == state for r in self.rows)

    def pruning_summary(self) -> str:
        """One sentence on what pruning saved."""
        unit = "epochs" if self.settings.kind == "deep" else "folds"
        if not self.settings.prune:
            return "pruning was off"
        skipped = self.steps_full - self.steps_run
        share = skipped / self.steps_full if self.steps_full else 0.0
        return (
            f"pruning stopped {self.count('pruned')} of {len(self.rows)} trials early: "
            f"{skipped} of {self.steps_full} {unit} not trained ({share:.0%}), about "
            f"{self.seconds_saved:.0f} s of {self.seconds + self.seconds_saved:.0f} s saved"
        )

    def to_markdown(self) -> str:
        """The trials as a Markdown table, best first; failed trials last."""
        names = [p.name for p in self.settings.params]
        head = ["trial", *names, "score", "± std", "state", "steps", "seconds"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        order = sorted(self.rows, key=lambda r: (r["value"] is None, -(r["value"] or 0.0)))
        for r in order:
            cells = [str(r["trial"]), *(_cell(r["params"].get(n)) for n in names)]
            cells += [
                "" if r["value"] is None else f"{r['value']:.4f}",
                "" if r["std"] is None else f"{r['std']:.4f}",
                r["state"],
                str(r["steps"]),
                f"{r['seconds']:.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def sweep_results(
    sweep_dir: str | os.PathLike[str], storage: str | None = None, write: bool = True
) -> SweepResult:
    """Read a sweep's trials from its study; with ``write``, (re)write ``results.md``,
    ``results.csv``, ``sweep.png`` and ``best/config.json`` in the sweep folder.

    Args:
        sweep_dir: a folder written by :func:`mnistlab.training.sweep.run_sweep`.
        storage: the study's URL when it is not the folder's SQLite file (a database server).

    Raises:
        MnistlabError: not a sweep folder, or the study cannot be read.
    """
    from optuna.trial import TrialState

    sweep_dir = Path(sweep_dir).expanduser()
    settings = read_settings(sweep_dir)
    url = storage or os.environ.get(STORAGE_ENV) or sqlite_url(sweep_dir)
    study = open_study(url, settings)
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
             TrialState.FAIL: "failed", TrialState.RUNNING: "running",
             TrialState.WAITING: "waiting"}  # fmt: skip
    per_seed = settings.steps_per_seed
    result = SweepResult(sweep_dir, settings)
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS):  # made past the budget and never run
            continue
        state = names[t.state]
        values = t.user_attrs.get("values") or []
        steps = (max(t.intermediate_values) + 1) if t.intermediate_values else 0
        if state == "complete":
            steps = per_seed * settings.seeds
        seconds = float(t.user_attrs.get("seconds", 0.0))
        row = {
            "trial": t.number,
            "state": state,
            "params": dict(t.params),
            "value": t.value if state == "complete" else None,
            "std": _std(values) if state == "complete" and settings.seeds > 1 else None,
            "steps": steps,
            "seconds": seconds,
            "curve": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],
            "runs": t.user_attrs.get("runs", []),
            "worker": t.user_attrs.get("worker"),
            "host": t.user_attrs.get("host"),
            "retry_of": t.system_attrs.get("failed_trial"),
        }
        result.rows.append(row)
        if state in ("complete", "pruned"):
            full = per_seed * settings.seeds
            result.steps_full += full
            result.steps_run += steps
            result.seconds += seconds
            if state == "pruned" and steps:
                result.seconds_saved += seconds / steps * (full - steps)
    if write:
        _write(result)
    return result


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def best_config(result: SweepResult) -> dict[str, Any] | None:
    """The best trial's full config: a deep run's ``config.json`` (replay it with
    ``mnistlab train --config``), or a classic model's pipeline parameters."""
    best = result.best
    if best is None:
        return None
    settings = result.settings
    if settings.kind == "deep":
        return {"kind": "deep", **settings.base, **best["params"]}
    base = settings.base
    return {"kind": "classic", "model": base["model"], "recipe": base.get("recipe", "default"),
            "dataset": base.get("dataset", "mnist"), "seed": base.get("seed", 0),
            "params": {**base.get("params", {}), **best["params"]}}  # fmt: skip


def _write(result: SweepResult) -> None:
    sweep_dir = result.sweep_dir
    text = f"# Sweep {result.settings.study}\n\n{result.to_markdown()}\n\n"
    text += result.pruning_summary() + ".\n"
    atomic_write_bytes(sweep_dir / RESULTS_MD, text.encode())
    buffer = io.StringIO()
    names = [p.name for p in result.settings.params]
    writer = csv.writer(buffer)
    writer.writerow(["trial", *names, "score", "std", "state", "steps", "seconds", "worker",
                     "host", "retry_of"])  # fmt: skip
    for r in result.rows:
        writer.writerow([r["trial"], *(r["params"].get(n) for n in names), r["value"], r["std"],
                         r["state"], r["steps"], r["seconds"], r["worker"], r["host"],
                         r["retry_of"]])  # fmt: skip
    atomic_write_bytes(sweep_dir / RESULTS_CSV, buffer.getvalue().encode())
    config = best_config(result)
    if config is not None:
        folder = sweep_dir / BEST_DIR
        folder.mkdir(exist_ok=True)
        result.best_config = write_json(folder, "config.json", config)
        best = result.best
        assert best is not None
        write_json(folder, "sweep.json", {
            "trial": best["trial"], "score": best["value"], "std": best["std"],
            "scored_on": "validation" if result.settings.kind == "deep" else "cross-validation",
            "runs": best["runs"],
        })  # fmt: skip
    if result.rows:
        result.figure = plot_sweep(result, sweep_dir / FIGURE)


def _position(param: Any, value: Any) -> Any:
    """Where a value sits on its axis: a choice at its index in the choices, in their order."""
    if param.kind != "choice":
        return value
    return list(param.choices).index(value) if value in param.choices else -1


def _axis(axis: Any, param: Any, set_scale: Any) -> None:
    from matplotlib.ticker import NullFormatter

    if param.kind == "choice":
        axis.set_ticks(range(len(param.choices)), [str(c) for c in param.choices])
    elif param.kind in ("log", "int-log"):
        set_scale("log")
        axis.set_minor_formatter(NullFormatter())


def plot_sweep(result: SweepResult, path: Path) -> Path:
    """The figure: each trial's score in trial order with the best so far; every trial's
    validation curve (pruned ones grey); and, with two or more settings, the first two
    settings against each other coloured by score."""
    from mnistlab.plotting import pyplot, save_figure

    plt = pyplot()
    params = result.settings.params
    panels = 3 if len(params) >= 2 else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    done = [r for r in result.rows if r["state"] == "complete"]
    pruned = [r for r in result.rows if r["state"] == "pruned"]
    ax = axes[0]
    ax.scatter([r["trial"] for r in done], [r["value"] for r in done], label="complete", s=18)
    ax.scatter([r["trial"] for r in pruned], [r["curve"][-1] if r["curve"] else 0 for r in pruned],
               marker="x", color="grey", label="pruned (last value)")  # fmt: skip
    best, line = None, []
    for r in sorted(done, key=lambda r: r["trial"]):
        best = r["value"] if best is None else max(best, r["value"])
        line.append((r["trial"], best))
    if line:
        ax.step(*zip(*line, strict=True), where="post", color="black", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("score (validation)" if result.settings.kind == "deep" else "score (CV)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for r in result.rows:
        if r["curve"]:
            steps = range(1, len(r["curve"]) + 1)
            grey = r["state"] != "complete"
            ax.plot(steps, r["curve"], color="grey" if grey else None, alpha=0.5 if grey else 0.9,
                    linestyle="--" if grey else "-", marker="o", markersize=3)  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch" if result.settings.kind == "deep" else "fold")
    ax.set_ylabel("reported score")
    ax.set_title("curves (grey: pruned or failed)", fontsize=9)
    if panels == 3:
        ax = axes[2]
        a, b = params[0], params[1]
        xs = [_position(a, r["params"].get(a.name)) for r in done]
        ys = [_position(b, r["params"].get(b.name)) for r in done]
        dots = ax.scatter(xs, ys, c=[r["value"] for r in done], cmap="viridis")
        _axis(ax.xaxis, a, ax.set_xscale)
        _axis(ax.yaxis, b, ax.set_yscale)
        ax.set_xlabel(a.name)
        ax.set_ylabel(b.name)
        if done:
            fig.colorbar(dots, ax=ax, label="score")
    fig.suptitle(f"sweep {result.settings.study}: {result.pruning_summary()}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return path

