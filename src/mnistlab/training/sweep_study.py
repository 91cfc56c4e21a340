"""The Optuna study behind a sweep: where it is stored (an SQLite file in the sweep folder, or
a database server), how it is opened by many processes at once, and how a lost worker's trial
is noticed (Optuna's heartbeat). :mod:`mnistlab.training.sweep` runs the trials.

Optuna and SQLAlchemy are imported inside the functions: ``mnistlab --help`` never needs them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistlab.errors import MnistlabError

if TYPE_CHECKING:
    from mnistlab.training.sweep import SweepSettings

SQLITE_FILE = "study.db"
HEARTBEAT_SECONDS = 10  # a running trial's heartbeat (database storages only)
GRACE_SECONDS = 60  # a trial without a heartbeat this long is failed (and retried)
MAX_RETRIES = 1  # a failed trial of a lost worker runs again this many times at most
SURPLUS = "surplus"  # a trial's user attribute: made past the budget, never run (sweep.py)


def budget_taken(study: Any, before: int | None = None) -> int:
    """How many of a study's trials hold a place in the sweep's budget: the complete, pruned
    and running ones, less those marked :data:`SURPLUS`; with ``before``, only the trials
    numbered below it (trial numbers follow the order the storage made them in)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False, states=states)
    return sum(not t.user_attrs.get(SURPLUS) and (before is None or t.number < before)
               for t in trials)  # fmt: skip


def sqlite_url(sweep_dir: Path) -> str:
    """The default storage: ``study.db`` in the sweep folder."""
    return f"sqlite:///{(sweep_dir / SQLITE_FILE).resolve()}"


def shown_url(url: str) -> str:
    """A storage URL without its password, for files and messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: open_study reports it
        return url.split("@")[-1]


def _rdb_storage(url: str, **kwargs: Any) -> Any:
    """Optuna's ``RDBStorage(url, **kwargs)``, tried again when another process initialised the same
    fresh database at the same moment: Optuna creates its tables and writes its schema
    version row on first open, and the loser of that race gets "table already exists" or a
    unique-constraint error although the database is fine once the winner is done.
    """
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import DBAPIError

    for attempt in range(6):
        try:
            return RDBStorage(url, **kwargs)
        except DBAPIError as exc:
            message = str(exc).lower()
            raced = any(s in message for s in ("already exists", "unique", "duplicate"))
            if not raced or attempt == 5:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(
    url: str, settings: SweepSettings | None, worker: int = 0, create: bool = False
) -> Any:
    """The Optuna study at ``url`` (created with ``settings`` when ``create``), with a TPE
    sampler seeded per worker and the median pruner.

    Raises:
        MnistlabError: the storage cannot be reached, or the study is missing/exists already.
    """
    import warnings

    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    for plain in ("postgresql://", "postgres://"):  # psycopg 3, whatever SQLAlchemy's default
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain):]

    # Optuna logs a failed trial with its traceback; the workers print one line per trial.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # The heartbeat and its retry callback are marked experimental; they are what makes a
    # lost worker's trial fail and run again, so they are used on purpose.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}  # two workers wait for the write lock
    else:
        engine = {"pool_pre_ping": True}
    try:
        storage = _rdb_storage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(MAX_RETRIES),
        )
    except Exception as exc:  # sqlalchemy and driver errors of every kind
        raise MnistlabError(
            f"cannot open the study storage {shown_url(url)}: {str(exc).splitlines()[0]}",
            hint="check the URL, that the server runs and that the database exists; "
            "PostgreSQL needs `pip install \"mnistlab[postgres]\"` (psycopg)",
        ) from None
    name = settings.study if settings else None
    kwargs: dict[str, Any] = {}
    if settings is not None and settings.space:
        trials = settings.trials
        kwargs["sampler"] = optuna.samplers.TPESampler(
            seed=settings.sampler_seed * 1000 + worker,
            n_startup_trials=min(10, max(2, trials // 3)),
            constant_liar=settings.workers > 1,
        )
        kwargs["pruner"] = (
            optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, trials // 4)))
            if settings.prune
            else optuna.pruners.NopPruner()
        )
    try:
        if create:
            study = optuna.create_study(
                storage=storage, study_name=name, direction="maximize", **kwargs
            )
            study.set_user_attr("settings", settings.to_dict() if settings else None)
            study.set_user_attr("started", time.time())
            return study
        return optuna.load_study(storage=storage, study_name=name, **kwargs)
    except optuna.exceptions.DuplicatedStudyError:
        raise MnistlabError(
            f"the storage already holds a study named {name!r}",
            hint="choose another --study name, or --join it from another machine",
        ) from None
    except KeyError:
        raise MnistlabError(
            f"no study named {name!r} in {shown_url(url)}",
            hint="start it with `mnistlab sweep --storage URL --study NAME ...` first",
        ) from None
