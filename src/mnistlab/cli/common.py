"""Shared pieces of the command line: the console, error handling, common options."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from mnistlab.config import RunConfig, parse_sets
from mnistlab.errors import MnistlabError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="MNISTLAB_HOME",
        help="Cache root for datasets. [default: the user cache directory, e.g. ~/.cache/mnistlab]",
        show_default=False,
    ),
]


def refresh_width() -> None:
    """Take the terminal width from ``$COLUMNS`` as it is now (rich reads it once, when a
    console is made; a program that calls the CLI twice, such as a test, may change it)."""
    columns = os.environ.get("COLUMNS", "")
    for c in (console, err_console):
        c.width = int(columns) if columns.isdigit() and int(columns) > 0 else None  # type: ignore[assignment]


def setup_logging(verbose: bool = False) -> None:
    """Send mnistlab's log records (retries, mirror failures) to stderr through rich."""
    logger = logging.getLogger("mnistlab")
    logger.handlers[:] = [RichHandler(console=err_console, show_time=False, show_path=False)]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def print_error(message: str, hint: str | None = None) -> None:
    """``error: MESSAGE`` and ``hint: HINT`` on stderr. Printed literally (messages hold user
    paths and data, never rich markup) and never hard-wrapped: a user copies these lines, and
    the terminal wraps them anyway."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[bold]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)


def _os_error_message(exc: OSError) -> tuple[str, str]:
    import errno

    where = f": {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return f"no space left on device{where}", (
            "free some disk space, or move the cache with --home DIR (or MNISTLAB_HOME) and "
            "runs with --out"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{reason.lower()}{where}", "choose a folder you can write to (--out, --home)"
    if exc.errno == errno.ENOENT:
        return f"no such file or folder{where}", "check the path (tab completion helps)"
    return f"{reason}{where}", (
        "check that the path exists and is writable, and that the disk has space; --home DIR "
        "(or MNISTLAB_HOME) moves the cache"
    )


def handle_errors(fn: F) -> F:
    """Turn mnistlab's errors into a clear message and exit status 1 (130 on Ctrl-C), without
    a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MnistlabError as exc:
            print_error(exc.message, exc.hint)
            raise typer.Exit(1) from None
        except OSError as exc:  # permissions, full disk, ...: not a bug, a fixable situation
            print_error(*_os_error_message(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            # A trainer's interruption says where its checkpoint is and how to resume.
            message = getattr(exc, "message", None)
            err_console.print(
                f"[yellow]interrupted[/]{': ' + escape(message) if message else ''}",
                highlight=False,
                soft_wrap=True,
            )
            hint = getattr(exc, "hint", None)
            if hint:
                err_console.print(f"[bold]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def resolve_resume(
    resume: Path | None, out: Path | None, command: str
) -> tuple[Path | None, bool, bool]:
    """``--resume RUN`` as given, or ``--resume auto``: continue the ``--out`` run when it has a
    checkpoint, start it otherwise (so a restarted job, e.g. under ``torchrun --max-restarts``
    or a cluster requeue, runs the same command again). Returns ``(run to resume or None,
    auto, overwrite)``; ``overwrite`` is true when auto restarts a run folder that never
    reached its first checkpoint.

    Raises:
        typer.Exit(0): auto, and the run finished already (nothing to do).
        MnistlabError: auto without ``--out``.
    """
    if resume is None or str(resume) != "auto":
        return resume, False, False
    if out is None:
        raise MnistlabError(
            "--resume auto needs --out RUN_DIR: the run to continue, or to start",
            hint=f"e.g. mnistlab {command} --out runs/job --resume auto",
        )
    run = out.expanduser()
    if (run / "report.json").is_file():
        console.print(f"{escape(str(run))} finished already: nothing to resume", soft_wrap=True)
        raise typer.Exit(0)
    if (run / "checkpoint" / "state.json").is_file():
        return run, True, False
    return None, True, (run / "config.json").is_file()


# -- the options and config of the commands that start runs (pretrain, gan, train-reader, ...)

OutOption = Annotated[
    Path | None,
    typer.Option(help="Run folder. [default: a new folder under runs/]", show_default=False),
]
OverwriteOption = Annotated[
    bool, typer.Option(help="Let --out replace an existing run or use a non-empty folder.")
]
ResumeOption = Annotated[
    Path | None,
    typer.Option(
        help="Continue this run from its last checkpoint; `auto` (with --out) continues the "
        "--out run if it has a checkpoint and starts it otherwise."
    ),
]


def field_option(cls: type, name: str, help: str, *flags: str, **kwargs: Any) -> Any:
    """A typer option for config field ``name`` that defaults to None (= the config's value,
    shown in --help from the dataclass, the one place defaults live)."""
    default = next(f.default for f in fields(cls) if f.name == name)
    shown = (
        "none" if default is None else str(default).lower() if default in (True, False) else default
    )
    return typer.Option(*flags, help=f"{help} [default: {shown}]", show_default=False, **kwargs)


# The options of the fields every run has (RunConfig: the same defaults for every command).
PrecisionOption = Annotated[
    str | None,
    field_option(RunConfig, "precision", "auto (bf16 where the device has fast bf16), fp32, bf16."),
]
DeviceOption = Annotated[str | None, field_option(RunConfig, "device", "auto, cpu, cuda, mps.")]
SeedOption = Annotated[int | None, field_option(RunConfig, "seed", "Seed of every random choice.")]
ThreadsOption = Annotated[
    int | None,
    field_option(
        RunConfig, "num_threads", "CPU threads (0 = auto: the CPUs free when the run starts)."
    ),
]


def command_config(
    cls: Any,
    command: str,
    resume: Path | None,
    out: Path | None,
    overwrite: bool,
    replay: Path | None,
    options: dict[str, Any],
    sets: list[str] | None,
) -> tuple[Any, Path | None, bool]:
    """``(config, run to resume, overwrite)``. The config: the class's defaults, or the
    replayed run's config, then the options given, then ``--set`` (last wins); None when a
    run is resumed (it keeps its own). ``--resume auto`` is resolved here
    (:func:`resolve_resume`)."""
    resume, auto, restart = resolve_resume(resume, out, command)
    if auto and resume is not None:
        return None, resume, overwrite
    overrides = {**{k: v for k, v in options.items() if v is not None}, **parse_sets(sets)}
    if resume is not None:
        if overrides or replay is not None:
            raise MnistlabError(
                "--resume continues a run with its own config: pass no other settings",
                hint=f"e.g. --resume {resume} (and --out/--home only)",
            )
        return None, resume, overwrite
    if replay is not None:
        return cls.from_run(replay, overrides), None, overwrite or restart
    return cls().with_overrides(overrides), None, overwrite or restart


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="RUN",
        help="Replay a run: its folder or config.json; options and --set given too override "
        "its values.",
        show_default=False,
    ),
]
LogOption = Annotated[
    list[str] | None,
    typer.Option(
        "--log",
        metavar="TRACKER",
        help="Also log the run to tensorboard (RUN/tensorboard/) or mlflow (repeatable; pip "
        "install mnistlab[tensorboard] / mnistlab[mlflow]; docs/ecosystem.md).",
        show_default=False,
    ),
]
LogUriOption = Annotated[
    str | None,
    typer.Option(
        "--log-uri",
        metavar="URI",
        help="MLflow tracking URI, e.g. sqlite:///mlflow.db or http://HOST:5000. [default: "
        "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here]",
        show_default=False,
    ),
]


def build_loggers(log: list[str] | None, log_uri: str | None) -> list[Any]:
    """The callbacks ``--log`` / ``--log-uri`` ask for (built before any work: a missing
    package fails fast); tensorboard and mlflow are imported only here."""
    if not log:
        if log_uri is not None:
            raise MnistlabError("--log-uri is MLflow's tracking URI: add --log mlflow")
        return []
    from mnistlab.training.loggers import make_loggers

    return make_loggers(log, uri=log_uri)


ProfileOption = Annotated[
    bool,
    typer.Option(
        "--profile",
        help="Record a few training steps with torch.profiler into RUN/profile/ (a Chrome "
        "trace for Perfetto or chrome://tracing, and the top operators, printed at the end; "
        "docs/ecosystem.md).",
    ),
]
ProfileStepsOption = Annotated[
    int | None,
    typer.Option(
        "--profile-steps",
        metavar="N",
        min=1,
        help="Steps --profile records (after skipping one and warming up one). [default: 5]",
        show_default=False,
    ),
]


def build_profiler(profile: bool, steps: int | None) -> list[Any]:
    """The callback ``--profile`` asks for (none without it); torch.profiler is imported only
    when it runs."""
    if not profile:
        if steps is not None:
            raise MnistlabError("--profile-steps is for --profile: add --profile")
        return []
    from mnistlab.training.profiling import DEFAULT_STEPS, Profiler

    return [Profiler(steps or DEFAULT_STEPS)]


def build_callbacks(
    log: list[str] | None, log_uri: str | None, profile: bool, profile_steps: int | None
) -> list[Any]:
    """The callbacks of ``--log``/``--log-uri`` and ``--profile``/``--profile-steps``."""
    return build_loggers(log, log_uri) + build_profiler(profile, profile_steps)


def print_profile(callbacks: list[Any]) -> None:
    """The top operators of the profilers among ``callbacks`` (after training), as a table
    that fits the console, and where the trace is."""
    if not callbacks:
        return
    from rich.table import Table

    from mnistlab.training.profiling import Profiler

    for profiler in callbacks:
        if not isinstance(profiler, Profiler) or profiler.trace is None:
            continue
        table = Table(
            title=f"top operators by self CPU time, {profiler.recorded} steps from step "
            f"{profiler.first_step} (ms, summed)",
            title_justify="left",
        )
        table.add_column("operator", overflow="fold", ratio=1)
        table.add_column("calls", justify="right", no_wrap=True)
        table.add_column("self CPU", justify="right", no_wrap=True)
        table.add_column("CPU total", justify="right", no_wrap=True)
        if profiler.on_gpu:
            table.add_column("self CUDA", justify="right", no_wrap=True)
        for op in profiler.top_ops:
            cells = [escape(op.name), str(op.calls), f"{op.self_cpu_ms:.2f}", f"{op.cpu_ms:.2f}"]
            if profiler.on_gpu:
                cells.append(f"{op.self_cuda_ms or 0.0:.2f}")
            table.add_row(*cells)
        console.print(table)
        folder = profiler.trace.parent
        console.print(
            f"profile: {escape(str(profiler.trace))} (open in https://ui.perfetto.dev or "
            f"chrome://tracing), {escape(str(folder / 'top_ops.md'))}",
            soft_wrap=True,
            highlight=False,
        )
