"""What a newcomer meets first: a fast CLI, bad values that end in a clear error (never a
traceback, never a half-written run folder), replayable configs, and runs that are easy to
find and copy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.errors import MnistlabError
from mnistlab.models.classic import get_recipe
from mnistlab.pretraining.config import FinetuneConfig, PretrainConfig
from mnistlab.training.classic import check_params
from mnistlab.training.config import TrainConfig

HEAVY = ("torch", "sklearn", "matplotlib", "onnxruntime", "fastapi")


# ---------------------------------------------------------------------------- start-up


def test_cli_help_and_listings_import_no_heavy_library(tmp_path: Path) -> None:
    """Every --help, --version, `data list`, `data verify` and `runs list` answer without
    torch, scikit-learn, matplotlib, onnxruntime or fastapi (what made them take 5-11 s)."""
    code = """
import sys
import typer.main
from typer.testing import CliRunner
from mnistlab.cli.main import app

command = typer.main.get_command(app)
paths = [[]]
for name, sub in command.commands.items():
    paths.append([name])
    paths += [[name, inner] for inner in getattr(sub, "commands", {})]
calls = [[*p, "--help"] for p in paths]
calls += [["--version"], ["data", "list"], ["data", "verify", "mnist-mini"], ["runs", "list"]]
for args in calls:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
print(len(calls), sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:]))
"""
    env = {**os.environ, "MNISTLAB_HOME": str(tmp_path / "home"), "MNISTLAB_RUNS": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code, *HEAVY], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) > 25  # every command's help was asked for
    assert loaded.strip() == "[]", f"heavy modules imported: {loaded}"


# ---------------------------------------------------------------------------- bad values

NOT_A_NUMBER = st.sampled_from(['"abc"', "abc", "[1]", '{"a": 1}', "true", "null", "NaN", "1e999"])
NOT_A_STRING = st.sampled_from(["3", "[1, 2]", '{"a": 1}', "true", "1.5"])
NEGATIVE = st.sampled_from(["-1", "-0.5", "-1000000"])
MALFORMED = st.sampled_from(["lr", "=3", "", "=", " =1"])


def _bad_sets(config_class: type) -> st.SearchStrategy[str]:
    """``--set`` items that a config must refuse: wrong types, out-of-range numbers, unknown
    keys and malformed syntax (kept only when the config really refuses them)."""
    defaults = config_class()
    numeric = [k for k, v in defaults.to_dict().items() if isinstance(v, (int, float))]
    numeric = [k for k in numeric if not isinstance(getattr(defaults, k), bool)]
    strings = [k for k, v in defaults.to_dict().items() if isinstance(v, str)]
    wrong = st.one_of(
        st.tuples(st.sampled_from(numeric), NOT_A_NUMBER),
        st.tuples(st.sampled_from(numeric), NEGATIVE),
        st.tuples(st.sampled_from(strings), NOT_A_STRING),
        st.tuples(st.from_regex(r"[a-z]{3,12}_[a-z]{2,6}", fullmatch=True), st.just("1")),
    ).map(lambda kv: f"{kv[0]}={kv[1]}")
    return st.one_of(wrong, MALFORMED)


def _refused(config_class: type, item: str) -> bool:
    from mnistlab.config import parse_sets
    from mnistlab.training.recipes import get_deep_recipe

    base = get_deep_recipe("fast-cnn") if config_class is TrainConfig else config_class()
    try:
        base.with_overrides(parse_sets([item]))
    except MnistlabError:
        return True
    return False


def _assert_clean_failure(runner: CliRunner, args: list[str], runs: Path) -> None:
    out = runs / "run"
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code in (1, 2), (args, result.output)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert not out.exists(), f"{args} left {sorted(p.name for p in out.iterdir())}"
    assert not any(runs.iterdir()), f"{args} left {list(runs.iterdir())}"


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[CliRunner, Path]:
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("MNISTLAB_RUNS", str(runs))
    return CliRunner(), runs


COMMANDS = {
    "train": (["train", "--dataset", "mnist-mini"], TrainConfig),
    "pretrain": (["pretrain", "--dataset", "mnist-mini"], PretrainConfig),
    "finetune": (["finetune", "--dataset", "mnist-mini"], FinetuneConfig),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_set_values_end_in_a_clear_error_and_leave_nothing(command, isolated) -> None:
    runner, runs = isolated
    args, config_class = COMMANDS[command]
    strategy = _bad_sets(config_class).filter(lambda item: _refused(config_class, item))

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
    )
    @given(item=strategy)
    def check(item: str) -> None:
        _assert_clean_failure(runner, [*args, "--set", item], runs)

    check()


CLASSIC_KEYS = {
    "svm": ["clf__C", "clf__gamma", "pca__n_components"],
    "knn": ["clf__n_neighbors", "clf__weights", "pca__n_components"],
    "logreg": ["clf__alpha", "clf__max_iter", "clf__tol", "scale__dtype"],
    "rf": ["clf__n_estimators", "clf__max_depth", "clf__max_features"],
}
CLASSIC_BAD = st.sampled_from(
    ['"abc"', "abc", "-1", "-0.5", "[1]", '{"a": 1}', "null", "0", "1e999", "true"]
)


def _classic_refused(model: str, key: str, raw: str) -> bool:
    from mnistlab.config import parse_sets

    try:
        check_params(get_recipe(model).build(0), parse_sets([f"{key}={raw}"]))
    except MnistlabError:
        return True
    return False


def test_bad_classic_hyper_parameters_end_in_a_clear_error_and_leave_nothing(isolated) -> None:
    runner, runs = isolated
    pairs = st.sampled_from([(m, k) for m, keys in CLASSIC_KEYS.items() for k in keys])
    unknown = st.tuples(st.sampled_from(sorted(CLASSIC_KEYS)), st.just("clf__nope"))
    cases = st.tuples(st.one_of(pairs, unknown), CLASSIC_BAD).filter(
        lambda c: _classic_refused(c[0][0], c[0][1], c[1])
    )

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
    )
    @given(case=cases)
    def check(case: tuple[tuple[str, str], str]) -> None:
        (model, key), raw = case
        args = ["train", "--model", model, "--dataset", "mnist-mini", "--set", f"{key}={raw}"]
        _assert_clean_failure(runner, args, runs)

    check()


def test_clear_errors_for_the_mistakes_a_newcomer_makes(isolated, tmp_path: Path) -> None:
    runner, runs = isolated
    result = runner.invoke(app, ["train", "--model", "resnet_small"])
    assert result.exit_code == 1
    assert "did you mean 'resnet-small'?" in result.output
    for name in ("logreg", "svm", "fast-cnn", "resnet-small"):  # every model, classic and deep
        assert name in result.output
    result = runner.invoke(app, ["train", "--model", "svm", "--epochs", "3"])
    assert result.exit_code == 1 and "deep models only" in result.output
    result = runner.invoke(app, ["finetune", "--from", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "no such run folder or file" in result.output
    assert not any(runs.iterdir())


def test_out_never_writes_among_a_users_files(isolated, tmp_path: Path) -> None:
    runner, _ = isolated
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for args in (["train", "--model", "logreg"], ["train"], ["pretrain"], ["finetune"]):
        result = runner.invoke(app, [*args, "--dataset", "mnist-mini", "--out", str(mine)])
        assert result.exit_code == 1, result.output
        assert "not empty and holds no run" in result.output and "--overwrite" in result.output
        assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    file = tmp_path / "a-file"
    file.write_text("x")
    result = runner.invoke(app, ["train", "--model", "logreg", "--out", str(file)])
    assert result.exit_code == 1 and "is a file" in result.output


# ---------------------------------------------------------------------------- replay


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_config_replays_a_deep_run_and_takes_overrides(isolated, tmp_path: Path) -> None:
    runner, _ = isolated
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    base = ["--dataset", "mnist-mini", "--set", "epochs=2", "--set", "num_threads=1", "-q"]
    result = runner.invoke(app, ["train", *base, "--set", "precision=fp32", "--out", str(first)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["train", "--config", str(first / "config.json"), "--out", str(second), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert _metrics(second)["test_accuracy"] == _metrics(first)["test_accuracy"]
    weights = [json.loads((r / "model" / "model.json").read_text()) for r in (first, second)]
    assert weights[0]["weights_sha256"] == weights[1]["weights_sha256"]  # bit-exact replay
    result = runner.invoke(
        app, ["train", "--config", str(first), "--set", "epochs=1", "--out", str(third), "-q"]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((third / "config.json").read_text())
    original = json.loads((first / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["precision"] == "fp32"
    assert (saved["lr"], saved["warmup"]) == (original["lr"], original["warmup"])


def test_config_replays_a_classic_run(isolated, tmp_path: Path) -> None:
    runner, _ = isolated
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["train", "--model", "logreg", "--dataset", "mnist-mini", "--set", "clf__max_iter=20"]
    assert runner.invoke(app, [*args, "--out", str(first)]).exit_code == 0
    result = runner.invoke(app, ["train", "--config", str(first), "--out", str(second)])
    assert result.exit_code == 0, result.output
    assert _metrics(second)["test_accuracy"] == _metrics(first)["test_accuracy"]
    assert json.loads((second / "config.json").read_text())["params"] == {"clf__max_iter": 20}
    result = runner.invoke(app, ["pretrain", "--config", str(first)])
    assert result.exit_code == 1 and "not a pretraining config" in result.output


def test_config_replays_a_pretraining_run(isolated, tmp_path: Path) -> None:
    runner, _ = isolated
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["pretrain", "-d", "mnist-mini", "--preset", "tiny", "--patch-size", "7"]
    args += ["--epochs", "1", "--max-images", "256", "--threads", "1", "--set", "batch_size=64"]
    result = runner.invoke(app, [*args, "--out", str(first)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["pretrain", "--config", str(first), "--out", str(second)])
    assert result.exit_code == 0, result.output
    lines = [(r / "metrics.jsonl").read_text().splitlines() for r in (first, second)]
    losses = [[json.loads(line)["train_loss"] for line in ls] for ls in lines]
    assert losses[0] == losses[1] and len(losses[0]) == 1
    result = runner.invoke(app, ["train", "--config", str(first)])
    assert result.exit_code == 1 and "mnistlab pretrain --config" in result.output


# ---------------------------------------------------------------------------- runs and Ctrl-C


def test_runs_list_finds_runs_below_the_root_and_prints_whole_paths(tmp_path: Path) -> None:
    nested = tmp_path / "group" / "20261129-125208-fast-cnn-mnist-with-a-long-name"
    nested.mkdir(parents=True)
    (nested / "config.json").write_text(
        json.dumps(
            {
                "kind": "finetune",
                "preset": "tiny",
                "mode": "lora",
                "labels": 100,
                "dataset": "mnist",
            }
        )
    )
    for columns in ("80", "50"):
        result = CliRunner(env={"COLUMNS": columns}).invoke(
            app, ["runs", "list", "--root", str(tmp_path)]
        )
        assert result.exit_code == 0, result.output
        assert str(nested) in result.output  # on one line, never cut
        assert "vit-tiny lora 100L" in result.output
    result = CliRunner().invoke(app, ["runs", "list", "--root", str(tmp_path / "none")])
    assert result.exit_code == 0 and "--root" in result.output


def test_runs_list_keeps_each_cell_whole_at_80_columns(tmp_path: Path, monkeypatch) -> None:
    """A run of `mnistlab train` under runs/ at 80 columns: one line per run with every cell
    whole (the model's name and the date used to wrap into two lines); narrower, a block per
    run, still whole."""
    monkeypatch.chdir(tmp_path)  # the paths shown are runs/..., as after `mnistlab train`
    run = Path("runs") / "20261201-070652-fast-cnn-mnist"
    run.mkdir(parents=True)
    config = {"kind": "deep", "model": "fast-cnn", "dataset": "mnist",
              "created": "2026-12-01T07:06:52"}  # fmt: skip
    (run / "config.json").write_text(json.dumps(config))
    (run / "report.json").write_text(json.dumps({"test_accuracy": 0.9918, "train_seconds": 8.4}))
    for columns, table in (("80", True), ("60", False)):
        result = CliRunner(env={"COLUMNS": columns}).invoke(
            app, ["runs", "list", "--root", "runs"]
        )
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert all(len(line.rstrip()) <= int(columns) for line in lines), result.output
        found = [line for line in lines if str(run) in line]
        assert len(found) == 1, result.output
        whole = ("fast-cnn", "mnist", "0.9918", "2026-12-01")
        if table:  # the run's line holds all of it
            assert all(cell in found[0] for cell in whole), result.output
        else:  # the lines below the path, wrapped between words only
            below = " ".join(result.output.split(str(run), 1)[1].split())
            assert all(cell in below for cell in whole), result.output


def test_ctrl_c_prints_the_command_that_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "-d", "mnist-mini", "--set", "epochs=200", "--set", "num_threads=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", *args, "--out", str(run), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    assert f"mnistlab train --resume {run}" in " ".join(output.split()), output


def test_resume_auto_starts_continues_and_finishes_like_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    """The same command, run again after a crash, continues the run (what torchrun restarts
    and cluster requeues do): same final weights as a run never interrupted."""
    run, whole = tmp_path / "run", tmp_path / "whole"
    base = ["train", "-d", "mnist-mini", "--set", "epochs=3", "--set", "num_threads=1", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", *base, "--out", str(run), "--resume", "auto"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoint" / "state.json").is_file() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # a crash, not a polite Ctrl-C
    proc.wait()
    assert not (run / "report.json").exists()
    created = json.loads((run / "config.json").read_text())["created"]
    runner = CliRunner()
    again = runner.invoke(app, [*base, "--out", str(run), "--resume", "auto"])
    assert again.exit_code == 0, again.output
    assert json.loads((run / "config.json").read_text())["created"] == created  # continued
    assert runner.invoke(app, [*base, "--out", str(whole), "--resume", "auto"]).exit_code == 0
    sha = [
        json.loads((r / "model" / "model.json").read_text())["weights_sha256"] for r in (run, whole)
    ]
    assert sha[0] == sha[1]
    done = runner.invoke(app, [*base, "--out", str(run), "--resume", "auto"])
    assert done.exit_code == 0 and "nothing to resume" in done.output
    lost = runner.invoke(app, [*base, "--resume", "auto"])
    assert lost.exit_code == 1 and "--resume auto needs --out" in lost.output


def test_runs_compare_shows_what_differs_and_draws_the_curves(tmp_path: Path) -> None:
    runner = CliRunner()
    runs = [tmp_path / "a", tmp_path / "b"]
    for run, lr in zip(runs, ("0.01", "0.003"), strict=True):
        args = ["train", "-d", "mnist-mini", "--set", f"lr={lr}", "--set", "num_threads=1"]
        assert (
            runner.invoke(app, [*args, "--set", "val_size=500", "--out", str(run), "-q"]).exit_code
            == 0
        )
    plot = tmp_path / "curves.png"
    result = CliRunner(env={"COLUMNS": "80"}).invoke(
        app, ["runs", "compare", *map(str, runs), "--plot", str(plot)]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "lr" in text and "0.01" in text and "0.003" in text and "test_accuracy" in text
    assert "seed" not in text  # the same in both: not a difference
    assert plot.is_file() and plot.stat().st_size > 10_000
    again = runner.invoke(app, ["runs", "compare", *map(str, runs), "--plot", str(plot)])
    assert again.exit_code == 1 and "exists" in again.output
    one = runner.invoke(app, ["runs", "compare", str(runs[0])])
    assert one.exit_code == 1 and "at least two runs" in one.output


def test_runs_compare_names_the_nested_entry_that_differs_and_keeps_cells_short(
    tmp_path: Path,
) -> None:
    fonts = [f"font-{i:02d}.ttf" for i in range(34)]
    records = [
        {"lr": 0.01, "seed": 0, "generated": {"fonts": fonts, "fonts_sha256": "a" * 64,
                                              "train_sha256": "c" * 64}},
        {"lr": 0.01, "seed": 0, "generated": {"fonts": [*fonts[1:], "extra.ttf"],
                                              "fonts_sha256": "b" * 64, "train_sha256": "c" * 64}},
    ]  # fmt: skip
    runs = []
    for name, record in zip("ab", records, strict=True):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(record))
        runs.append(str(tmp_path / name))
    from mnistlab.runs import compare_runs

    assert set(compare_runs(runs).differences) == {"generated.fonts", "generated.fonts_sha256"}
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["runs", "compare", *runs])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80
    assert not any("font-05" in line for line in lines)  # the list is summed up, not printed
    row = next(line for line in lines if "generated.fonts " in line)
    assert row.count("34 items") == 2
    assert "generated.fonts: run 2 adds 1 (extra.ttf), drops 1 (font-00.ttf)" in result.output
    assert "train_sha256" not in result.output and "lr" not in result.output  # equal in both


def test_a_recipe_of_one_model_needs_no_model_option(isolated) -> None:
    from mnistlab.training.recipes import recipe_owner

    assert recipe_owner("speed-99.5") == "fast-cnn-wide"
    assert recipe_owner("default") is None and recipe_owner("nope") is None  # several / none
    runner, runs = isolated
    args = ["train", "--recipe", "speed-99.5", "--dataset", "mnist-mini", "--set", "epochs=1"]
    result = runner.invoke(app, [*args, "--quiet", "--out", str(runs / "r")])
    assert result.exit_code == 0, result.output
    config = json.loads((runs / "r" / "config.json").read_text())
    assert (config["model"], config["batch_size"], config["augment"]) == (
        "fast-cnn-wide",
        512,
        "light",
    )
    result = runner.invoke(app, ["train", "--model", "fast-cnn", "--recipe", "speed-99.5"])
    assert result.exit_code == 1 and "has no recipe 'speed-99.5'" in result.output
    assert "its recipes: default" in result.output
