"""``mnistlab runs export --to tensorboard|mlflow`` (``mnistlab.training.replay.replay_run``):
finished runs logged afterwards through the same loggers as ``--log``; real tiny runs on
mnist-mini (one CPU thread), read back with TensorBoard's EventAccumulator and MLflow's client,
compared with the run folder's metrics.jsonl and with what ``--log`` logged live."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from cli_support import FLOAT32, cli, history, scalars

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

TINY_TRAIN = ["-d", "mnist-mini", "--set", "epochs=2", "--set", "num_threads=1", "-q"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CNN run trained with ``--log tensorboard`` (the live log to compare with)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    cli("train", *TINY_TRAIN, "--out", run_dir, "--log", "tensorboard")
    return run_dir


def copy_run(run_dir: Path, to: Path) -> Path:
    """The run folder as if trained without --log."""
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("tensorboard", "mlflow_run.json"))
    return to


def test_replay_into_tensorboard_equals_the_live_log(trained: Path, tmp_path: Path) -> None:
    run_dir = copy_run(trained, tmp_path / "run")
    out = cli("runs", "export", "--to", "tensorboard", run_dir)
    assert out.splitlines()[0] == str(run_dir)  # whole, to be copied
    line = f"  tensorboard: 2 epochs, 38 step points -> {run_dir / 'tensorboard'}"
    assert out.splitlines()[1] == line
    replayed, live = scalars(run_dir / "tensorboard"), scalars(trained / "tensorboard")
    assert set(replayed.Tags()["scalars"]) == set(live.Tags()["scalars"])
    lines = history(run_dir)
    for key in ("train_loss", "train_accuracy", "lr", "epoch_seconds", "images_per_second"):
        points = replayed.Scalars(key)
        assert [p.step for p in points] == [1, 2]
        assert [p.value for p in points] == [pytest.approx(r[key], **FLOAT32) for r in lines]
    # the step points: the running means at the steps of the run's step curve, here every
    # step as in the live log (2 epochs of 19 steps), and the schedule's learning rate
    for key in ("step/train_loss", "step/train_accuracy", "step/lr"):
        ours = [(p.step, p.value) for p in replayed.Scalars(key)]
        theirs = [(p.step, pytest.approx(p.value, **FLOAT32)) for p in live.Scalars(key)]
        assert ours == theirs
    assert replayed.Scalars("step/train_loss")[-1].value == pytest.approx(
        lines[-1]["train_loss"], **FLOAT32
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert replayed.Scalars("test_accuracy")[-1].value == pytest.approx(
        metrics["test_accuracy"], **FLOAT32
    )
    assert replayed.PluginTagToContent("hparams")
    assert "config/text_summary" in replayed.Tags()["tensors"]

    # never twice: refused, then replaced (not appended) with --overwrite
    events = sorted((run_dir / "tensorboard").iterdir())
    err = cli("runs", "export", "--to", "tensorboard", run_dir, code=1)
    assert "holds TensorBoard events already" in err and "--overwrite" in err
    assert sorted((run_dir / "tensorboard").iterdir()) == events
    cli("runs", "export", "--to", "tensorboard", run_dir, "--overwrite")
    again = scalars(run_dir / "tensorboard")
    assert len(again.Scalars("train_loss")) == 2
    assert len(again.Scalars("step/train_loss")) == lines[-1]["step"]


def test_replay_into_tensorboard_logdir_takes_each_run_by_name(
    trained: Path, tmp_path: Path
) -> None:
    before = sorted((trained / "tensorboard").iterdir())
    cli("runs", "export", "--to", "tensorboard", "--logdir", tmp_path / "tb", trained)
    events = scalars(tmp_path / "tb" / "run")
    assert [p.step for p in events.Scalars("train_loss")] == [1, 2]
    assert sorted((trained / "tensorboard").iterdir()) == before  # the live log untouched


def test_replay_into_mlflow_params_metrics_artifacts_once(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = copy_run(trained, tmp_path / "run")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    out = cli("runs", "export", "--to", "mlflow", "--log-uri", uri, run_dir)
    saved = json.loads((run_dir / "mlflow_run.json").read_text())
    assert saved["run_id"] in out.replace("\n", "")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(saved["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.tags["mnistlab.run_dir"] == str(run_dir.resolve())
    config = json.loads((run_dir / "config.json").read_text())
    assert run.data.params["model"] == config["model"] and run.data.params["epochs"] == "2"
    lines = history(run_dir)
    for key in ("train_loss", "train_accuracy", "lr"):
        points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in points] == [(r["epoch"], r[key]) for r in lines]
    steps = client.get_metric_history(run.info.run_id, "step/train_loss")
    assert max(m.step for m in steps) == lines[-1]["step"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == metrics["test_accuracy"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.html", "config.json", "metrics.jsonl", "model"} <= artifacts
    assert "model/model.json" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}

    experiment = client.get_experiment_by_name("mnistlab").experiment_id
    err = cli("runs", "export", "--to", "mlflow", "--log-uri", uri, run_dir, code=1)
    assert "is in MLflow already" in err and saved["run_id"] in err.replace("\n", "")
    (run_dir / "mlflow_run.json").unlink()  # found by its mnistlab.run_dir tag too
    assert "is in MLflow already" in cli(
        "runs", "export", "--to", "mlflow", "--log-uri", uri, run_dir, code=1
    )
    assert [r.info.run_id for r in client.search_runs([experiment])] == [saved["run_id"]]
    cli("runs", "export", "--to", "mlflow", "--log-uri", uri, run_dir, "--overwrite")
    (replaced,) = client.search_runs([experiment])
    assert replaced.info.run_id != saved["run_id"]
    assert len(client.get_metric_history(replaced.info.run_id, "train_loss")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "store"]


def test_replay_a_classic_run_logs_config_and_final_metrics(tmp_path: Path) -> None:
    run_dir = tmp_path / "logreg"
    cli("train", "-m", "logreg", "-d", "mnist-mini", "--out", run_dir)
    out = cli("runs", "export", "--to", "tensorboard", run_dir)
    assert "not logged: per-epoch metrics" in out
    events = scalars(run_dir / "tensorboard")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert events.Scalars("test_accuracy")[0].value == pytest.approx(
        metrics["test_accuracy"], **FLOAT32
    )
    assert "train_loss" not in events.Tags()["scalars"]


def test_replay_a_pretraining_run_without_step_curve(tmp_path: Path) -> None:
    run_dir = tmp_path / "pre"
    cli(
        "pretrain", "--preset", "tiny", "--patch-size", "7", "--epochs", "1", "--max-images",
        "256", "--threads", "1", "-d", "mnist-mini", "--out", run_dir,
    )  # fmt: skip
    out = cli("runs", "export", "--to", "tensorboard", run_dir)
    assert "tensorboard: 1 epoch, 0 step points" in out and "not logged: step points" in out
    (line,) = history(run_dir)
    events = scalars(run_dir / "tensorboard")
    assert events.Scalars("train_loss")[0].value == pytest.approx(line["train_loss"], **FLOAT32)


def test_replay_errors_are_clear(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "not a run folder (no config.json)" in cli(
        "runs", "export", "--to", "tensorboard", tmp_path, code=1
    )
    assert "no such folder" in cli("runs", "export", "--to", "mlflow", tmp_path / "x", code=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"kind": "deep", "model": "fast-cnn"}))
    (empty / "metrics.jsonl").write_text("")
    assert "has no metrics to replay" in cli("runs", "export", "--to", "tensorboard", empty, code=1)
    assert "unknown tracker 'wandb'" in cli("runs", "export", "--to", "wandb", trained, code=1)
    assert "use it with --to mlflow" in cli(
        "runs", "export", "--to", "tensorboard", "--log-uri", "sqlite:///x.db", trained, code=1
    )
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # as if not installed
    err = cli("runs", "export", "--to", "mlflow", trained, code=1)
    assert 'pip install "mnistlab[mlflow]"' in err or "pip install mnistlab[mlflow]" in err
    assert not (trained / "mlflow_run.json").exists()
