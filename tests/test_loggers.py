"""Experiment trackers (``--log tensorboard``, ``--log mlflow``, ``callbacks=``): real tiny runs
on mnist-mini (one CPU thread), read back with TensorBoard's EventAccumulator and MLflow's
client, compared with the run folder's own metrics.jsonl and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_support import FLOAT32, cli, history, scalars

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

TINY_TRAIN = ["-d", "mnist-mini", "--set", "epochs=2", "--set", "num_threads=1", "-q"]


def test_train_logs_tensorboard_scalars_equal_to_metrics_jsonl(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cli("train", *TINY_TRAIN, "--out", run_dir, "--log", "tensorboard")
    lines = history(run_dir)
    events = scalars(run_dir / "tensorboard")
    tags = set(events.Tags()["scalars"])
    # per epoch: every number of metrics.jsonl, on the axis of epochs
    for key in ("train_loss", "train_accuracy", "lr", "epoch_seconds"):
        points = events.Scalars(key)
        assert [p.step for p in points] == [1, 2]
        assert [p.value for p in points] == [pytest.approx(r[key], **FLOAT32) for r in lines]
    if lines[0].get("val_loss") is not None:
        assert [p.value for p in events.Scalars("val_loss")] == [
            pytest.approx(r["val_loss"], **FLOAT32) for r in lines
        ]
    assert "step" not in tags and "epoch" not in tags and "curve" not in tags
    # per step: the running means, up to the last optimizer step
    steps = events.Scalars("step/train_loss")
    assert len(steps) >= 4 and steps[-1].step == lines[-1]["step"]
    assert steps[-1].value == pytest.approx(lines[-1]["train_loss"], **FLOAT32)
    assert "step/train_accuracy" in tags and "step/lr" in tags
    # at the end: metrics.json's numbers, and the config in the hparams plugin
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert events.Scalars("test_accuracy")[-1].value == pytest.approx(
        metrics["test_accuracy"], **FLOAT32
    )
    assert events.PluginTagToContent("hparams")
    assert "config/text_summary" in events.Tags()["tensors"]


def test_train_logs_an_mlflow_run_with_params_metrics_and_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder but what we ask for
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    cli("train", *TINY_TRAIN, "--out", run_dir, "--log", "mlflow", "--log-uri", uri)
    saved = json.loads((run_dir / "mlflow_run.json").read_text())
    assert saved["tracking_uri"] == uri
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(saved["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    config = json.loads((run_dir / "config.json").read_text())
    params = run.data.params
    assert params["model"] == config["model"] and params["epochs"] == "2"
    assert params["lr"] == json.dumps(config["lr"])
    lines = history(run_dir)
    for key in ("train_loss", "train_accuracy", "lr"):
        points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in points] == [(r["epoch"], r[key]) for r in lines]
    assert client.get_metric_history(run.info.run_id, "step/train_loss")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == metrics["test_accuracy"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.html", "config.json", "metrics.json", "model"} <= artifacts
    model_files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/model.json" in model_files
    assert (store / "mlruns").is_dir()  # artifacts next to the database
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "store"]


def test_library_callbacks_see_every_epoch_after_validation(tmp_path: Path) -> None:
    """``train_model(callbacks=...)``: a user's callback and a logger built with its own
    folder, next to the trainer's own callbacks."""
    from mnistlab.training import TrainConfig, train_model
    from mnistlab.training.loggers import TensorBoardLogger
    from mnistlab.training.loop import Callback

    class Recorder(Callback):
        name = "recorder"

        def __init__(self) -> None:
            self.calls: list[str] = []
            self.records: list[dict[str, Any]] = []

        def on_train_start(self, loop: Any) -> None:
            self.calls.append("start")

        def on_epoch_end(self, loop: Any, record: dict[str, Any]) -> None:
            self.records.append(dict(record))

        def on_train_end(self, loop: Any) -> None:
            self.calls.append("end")

        def close(self) -> None:
            self.calls.append("close")

    recorder = Recorder()
    config = TrainConfig(dataset="mnist-mini", epochs=1, num_threads=1)
    logger = TensorBoardLogger(tmp_path / "tb", config={"note": "mine"}, every=1)
    result = train_model(
        config, out=tmp_path / "run", progress=False, callbacks=[recorder, logger]
    )
    assert recorder.calls == ["start", "end", "close"]
    assert [r["train_loss"] for r in recorder.records] == [result.history[0]["train_loss"]]
    assert "val_loss" in recorder.records[0]  # validation ran before the given callbacks
    assert not (tmp_path / "run" / "tensorboard").exists()
    events = scalars(tmp_path / "tb")
    assert len(events.Scalars("step/train_loss")) == result.history[0]["step"]  # every=1
    assert events.Scalars("train_loss")[0].value == pytest.approx(
        result.history[0]["train_loss"], **FLOAT32
    )


def test_pretrain_logs_tensorboard(tmp_path: Path) -> None:
    run_dir = tmp_path / "pre"
    cli(
        "pretrain", "--preset", "tiny", "--patch-size", "7", "--epochs", "1", "--max-images",
        "256", "--threads", "1", "-d", "mnist-mini", "--out", run_dir, "--log", "tensorboard",
    )  # fmt: skip
    (line,) = history(run_dir)
    events = scalars(run_dir / "tensorboard")
    assert events.Scalars("train_loss")[0].value == pytest.approx(line["train_loss"], **FLOAT32)
    assert events.Scalars("step/train_loss")[-1].step == line["step"]


def test_log_options_fail_clearly_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert "unknown logger 'wandb'" in cli("train", *TINY_TRAIN, "--out", out, "--log", "wandb",
                                           code=1)  # fmt: skip
    assert "add --log mlflow" in cli(
        "train", *TINY_TRAIN, "--out", out, "--log-uri", "sqlite:///x.db", code=1
    )
    assert "--log needs a deep model" in cli("train", "-m", "logreg", "--log", "tensorboard",
                                             "--out", out, code=1)  # fmt: skip
    assert not out.exists()


def test_a_resumed_pretraining_run_logs_on_into_the_same_mlflow_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from mnistlab.pretraining import PretrainConfig, pretrain
    from mnistlab.training.loggers import MLflowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = PretrainConfig(objective="mae", preset="tiny", patch_size=7, epochs=2,
                            max_images=256, num_threads=1, dataset="mnist-mini")  # fmt: skip
    first = pretrain(config, out=tmp_path / "pre", progress=False, max_rounds=1,
                     callbacks=[MLflowLogger(uri)])  # fmt: skip
    assert not first.finished
    run_id = json.loads((first.run_dir / "mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "FINISHED"  # this call's training ended
    done = pretrain(resume=first.run_dir, progress=False, callbacks=[MLflowLogger(uri)])
    assert done.finished
    assert json.loads((first.run_dir / "mlflow_run.json").read_text())["run_id"] == run_id
    points = sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in points] == [
        (r["epoch"], r["train_loss"]) for r in history(first.run_dir)
    ]
    assert "report.json" in {a.path for a in client.list_artifacts(run_id)}
    assert len(client.search_runs([client.get_experiment_by_name("mnistlab").experiment_id])) == 1
