"""Models that travel: a run as a Hugging Face-style folder (``mnistlab export --format hf``)
and a LoRA run's adapter in PEFT's layout (``mnistlab export --format peft``).

The Hugging Face folder::

    hf/
      model.safetensors   the weights (a CNN's bytes as trained; a LoRA run: merged)
      config.json         everything needed to rebuild the model, and its manifest
      README.md           the model card (front matter: library_name, tags, datasets, metrics)
      metrics.json        the run's metrics (so that `mnistlab evaluate` takes the folder)
      calibration.json    when the run has one

``config.json`` is the model's manifest as mnistlab writes it (``format``, ``weights``,
``weights_sha256``, architecture, classes, input normalization, training config, metrics),
plus the Hugging Face keys (``library_name``, ``model_type``, ``architectures``,
``num_labels``, ``id2label``, ``label2id``) and ``mnistlab`` (the export format
:data:`HF_EXPORT` and version). So the folder is read back by the one model-file reader
(:func:`mnistlab.models.files.read_model_file` finds ``config.json`` in a folder holding
``model.safetensors`` and no ``model.json``): its format allowlist, the weights' SHA-256 and
the deep models' field checks apply, and ``predict``, ``serve``, ``evaluate`` and ``export``
take the folder as they take the run.

The PEFT folder (a LoRA run of ``mnistlab finetune --mode lora``)::

    peft/
      adapter_config.json          peft_type LORA, r, lora_alpha, target_modules, ...
      adapter_model.safetensors    base_model.model.<module>.lora_A.weight / lora_B.weight,
                                   and the trained head (base_model.model.head.weight, .bias)
      README.md                    the model card

mnistlab's ``lora_a`` (``r x in``) and ``lora_b`` (``out x r``) are PEFT's ``lora_A.weight``
and ``lora_B.weight`` with the same shapes, and both scale the update by ``lora_alpha / r``.

Every export is written into a temporary folder beside ``out`` and renamed into place; an
existing non-empty ``out`` is replaced only with ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError, OverwriteError
from mnistlab.models import files
from mnistlab.shipping.model import (
    CALIBRATION_FILE,
    PREPROCESSING,
    provenance,
    read_json_object,
)

__all__ = ["HF_EXPORT", "PEFT_EXPORT", "HfExport", "export_hf", "export_peft", "model_card"]

HF_EXPORT = "mnistlab-hf/1"
PEFT_EXPORT = "mnistlab-peft-lora/1"
CARD_FILE = "README.md"
LIMITS = (
    "Trained on MNIST-style digits: one digit per image, centred by its centre of mass in a "
    "28x28 grey-level picture, white ink on a black background. Other pictures must be "
    "brought to that form first (`mnistlab predict` does it for photos and scans).",
    "It reads single digits, not whole numbers: split a number into its digits first.",
    "Accuracy on other handwriting (other writers, pens, scanners, non-Western digit "
    "shapes) is lower than the test accuracy above, which is measured on the dataset's own "
    "test split.",
    "The probabilities are not calibrated unless the folder has a calibration.json; a "
    "confident answer can be wrong, especially on inputs that are not digits.",
)


@dataclass(frozen=True)
class HfExport:
    """What :func:`export_hf` or :func:`export_peft` wrote."""

    folder: Path  # the exported folder
    weights: Path  # model.safetensors or adapter_model.safetensors
    card: Path  # README.md
    test_accuracy: float | None  # the run's, as the card says it


def _source(model: str | os.PathLike[str]) -> files.ModelFile:
    """The model file of a run (a LoRA run: its adapter), read and hash-checked."""
    target = files.adapter_or_path(model)
    try:
        kind = files.read_manifest(target)[0].get("format")
    except MnistlabError:
        kind = None
    if kind in (files.SKLEARN_FORMAT, files.SKLEARN_ONNX_FORMAT):
        raise MnistlabError(
            f"{model}: a classic scikit-learn model has no safetensors weights for --format hf",
            hint=f"export it to ONNX instead: mnistlab export {model}",
        )
    if kind == files.ONNX_FORMAT:
        raise MnistlabError(
            f"{model}: an ONNX model cannot be exported again",
            hint="export the run folder it came from",
        )
    return files.read_model_file(
        target,
        [files.TORCH_FORMAT, files.CLASSIFIER_FORMAT, files.ADAPTER_FORMAT],
        wanted="a model --format hf exports",
        hint="--format hf exports CNNs of `mnistlab train` and transformers of `mnistlab "
        "finetune` (a LoRA run merged); pretrained encoders and ensembles are not classifiers",
    )


def _run_folder(model_file: files.ModelFile) -> Path:
    folder = model_file.folder
    return folder.parent if folder.name in ("model", "adapter") else folder


def export_hf(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
) -> HfExport:
    """Export a run's model as a Hugging Face-style folder (see the module docstring).

    Args:
        model: a run folder of ``mnistlab train`` (a CNN) or ``mnistlab finetune`` (a
            transformer; a LoRA run is merged into plain weights), or its model folder.
        out: the folder to write; default ``hf/`` in the run folder.
        overwrite: replace a non-empty ``out``.

    Raises:
        OverwriteError: ``out`` is not empty and ``overwrite`` is false.
        MnistlabError: a model that cannot be exported (the message says which can).
    """
    from mnistlab import __version__

    model_file = _source(model)
    run = _run_folder(model_file)
    folder = Path(out).expanduser() if out is not None else run / "hf"
    _check_out(folder, overwrite, protect=model_file.folder)
    meta = dict(model_file.manifest)
    weights = model_file.data
    fmt = model_file.format
    if fmt == files.ADAPTER_FORMAT:  # the adapter merged into its base: a plain classifier
        from mnistlab.models.lora import merge_lora
        from mnistlab.models.vit_files import load_classifier

        module, _ = load_classifier(model_file)
        weights = files.tensors_to_bytes(merge_lora(module).state_dict())
        meta = {k: v for k, v in meta.items() if k not in ("rank", "alpha", "targets", "layers")}
        meta["merged_from"] = f"LoRA adapter {model_file.manifest['weights_sha256']}"
        fmt = files.CLASSIFIER_FORMAT
    config = read_json_object(run / "config.json")
    deep = fmt == files.TORCH_FORMAT
    architecture = str(meta.get("architecture") or _vit_name(meta))
    count = int(meta["num_classes"])
    names = [str(n) for n in meta.get("class_names") or range(count)]
    origin = provenance(model_file.manifest_path)
    dataset = config.get("dataset") or meta.get("config", {}).get("dataset")
    record = {
        # Hugging Face's keys
        "library_name": "mnistlab",
        "model_type": "mnistlab-cnn" if deep else "mnistlab-vit",
        "architectures": [architecture],
        "num_labels": count,
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
        # mnistlab's manifest (checked on every load)
        **{k: v for k, v in meta.items() if k not in ("format", "weights", "weights_sha256")},
        "architecture": architecture,
        "num_classes": count,
        "class_names": names,
        "normalization": meta.get("normalization") or {"mean": 0.0, "std": 1.0},
        "preprocessing": meta.get("preprocessing", PREPROCESSING),
        "kind": "deep" if deep else "finetune",
        "dataset": dataset,
        "mnistlab_version": __version__,
        "data_sha256": origin.get("data_sha256"),
        "mnistlab": {
            "export": HF_EXPORT,
            "version": __version__,
            "source_run": run.name,
            "source_weights_sha256": model_file.manifest["weights_sha256"],
        },
    }
    files.check_deep_fields(record, folder / files.HF_CONFIG_FILE)
    metrics = read_json_object(run / "metrics.json") or dict(meta.get("metrics", {}))
    report = read_json_object(run / "report.json")
    card = model_card(record, config, metrics, report, origin.get("data_sha256"))

    def write(tmp: Path) -> None:
        files.write_model_file(tmp, weights, record, fmt=fmt, manifest_name=files.HF_CONFIG_FILE)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        if metrics:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        calibration = model_file.folder / CALIBRATION_FILE
        if calibration.is_file():
            shutil.copyfile(calibration, tmp / CALIBRATION_FILE)

    _publish(folder, write)
    return HfExport(folder, folder / "model.safetensors", folder / CARD_FILE,
                    _accuracy(metrics, report))  # fmt: skip


def export_peft(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
) -> HfExport:
    """Write a LoRA run's adapter in PEFT's layout (see the module docstring).

    Args:
        model: a run folder of ``mnistlab finetune --mode lora`` (or its ``adapter/``).
        out: the folder to write; default ``peft/`` in the run folder.
        overwrite: replace a non-empty ``out``.

    Raises:
        OverwriteError: ``out`` is not empty and ``overwrite`` is false.
        MnistlabError: not a LoRA run.
    """
    model_file = files.read_model_file(
        files.adapter_or_path(model),
        [files.ADAPTER_FORMAT],
        wanted="a LoRA adapter",
        hint="--format peft exports the adapter of `mnistlab finetune --mode lora`; other "
        "models: --format hf",
    )
    meta = model_file.manifest
    run = _run_folder(model_file)
    folder = Path(out).expanduser() if out is not None else run / "peft"
    _check_out(folder, overwrite, protect=model_file.folder)
    tensors = model_file.tensors()
    renamed = {}
    for name, tensor in tensors.items():
        for ours, theirs in ((".lora_a", ".lora_A.weight"), (".lora_b", ".lora_B.weight")):
            if name.endswith(ours):
                name = name.removesuffix(ours) + theirs
        renamed[f"base_model.model.{name}"] = tensor
    layers = [str(layer) for layer in meta.get("layers", [])]
    saved = sorted({name.split(".")[0] for name in tensors if ".lora_" not in name})
    config = {
        "peft_type": "LORA",
        "task_type": None,  # a custom torch module, not a transformers task head
        "auto_mapping": None,
        "base_model_name_or_path": str(meta.get("base_model")),
        "revision": None,
        "inference_mode": True,
        "r": int(meta["rank"]),
        "lora_alpha": float(meta["alpha"]),
        "lora_dropout": 0.0,
        "target_modules": layers,
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": saved or None,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    metrics = read_json_object(run / "metrics.json") or dict(meta.get("metrics", {}))
    report = read_json_object(run / "report.json")
    record = {**meta, "architecture": _vit_name(meta), "kind": "finetune"}
    origin = provenance(model_file.manifest_path)
    card = model_card(record, read_json_object(run / "config.json"), metrics, report,
                      origin.get("data_sha256"), peft=config)  # fmt: skip
    weights = files.tensors_to_bytes(renamed)

    def write(tmp: Path) -> None:
        (tmp / "adapter_model.safetensors").write_bytes(weights)
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")

    _publish(folder, write)
    return HfExport(folder, folder / "adapter_model.safetensors", folder / CARD_FILE,
                    _accuracy(metrics, report))  # fmt: skip


def _vit_name(meta: dict[str, Any]) -> str:
    preset = meta.get("finetune_config", {}).get("preset")
    return f"vit-{preset}" if preset else "vit"


def _check_out(folder: Path, overwrite: bool, protect: Path) -> None:
    """Refuse a non-empty ``folder`` without ``overwrite``, and always one that holds the
    model being exported (replacing it would delete the source)."""
    source = protect.resolve()
    if folder.resolve() == source or source.is_relative_to(folder.resolve()):
        raise MnistlabError(
            f"--out {folder} holds the model being exported; choose another folder",
            hint="the default is hf/ (or peft/) inside the run folder",
        )
    if folder.exists() and not folder.is_dir():
        raise OverwriteError(f"{folder} exists and is not a folder", hint="choose another --out")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise OverwriteError(
            f"{folder} exists and is not empty", hint="pass --overwrite, or choose another --out"
        )


def _publish(folder: Path, write: Callable[[Path], None]) -> None:
    """Write into a temporary folder beside ``folder``, then rename it into place (an
    existing ``folder`` is moved aside first and removed once the new one is in place)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    old = None
    try:
        write(tmp)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old",
                                        dir=folder.parent))  # fmt: skip
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            os.replace(old / folder.name, folder)  # put the previous export back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _accuracy(metrics: dict[str, Any], report: dict[str, Any]) -> float | None:
    value = metrics.get("test_accuracy", report.get("test_accuracy"))
    return float(value) if isinstance(value, (int, float)) else None


def _spread(metrics: dict[str, Any], report: dict[str, Any]) -> str:
    """The accuracy's spread over seeds or members when the run records several, else says
    that it is one run."""
    for source in (metrics, report):
        values = source.get("test_accuracies") or source.get("seed_accuracies")
        if isinstance(values, list) and len(values) > 1:
            import statistics

            numbers = [float(v) for v in values]
            return (
                f"over {len(numbers)} seeds: mean {statistics.mean(numbers):.4f}, standard "
                f"deviation {statistics.stdev(numbers):.4f}, range {min(numbers):.4f} to "
                f"{max(numbers):.4f}"
            )
    return "one run (one seed): no spread over seeds is measured"


_RECIPE_KEYS = (
    "model", "mode", "preset", "epochs", "steps", "batch_size", "optimizer", "lr",
    "weight_decay", "schedule", "warmup", "momentum", "label_smoothing", "augment",
    "labels", "lora_rank", "lora_alpha", "lora_targets", "precision", "seed", "recipe",
    "params",
)  # fmt: skip


def _yaml(value: str) -> str:
    """A YAML scalar: JSON's double-quoted string is valid YAML."""
    return json.dumps(str(value))


def model_card(
    record: dict[str, Any],
    config: dict[str, Any],
    metrics: dict[str, Any],
    report: dict[str, Any],
    data_sha256: Any = None,
    *,
    peft: dict[str, Any] | None = None,
) -> str:
    """The ``README.md`` of an exported folder: Hugging Face's model-card front matter
    (``library_name: mnistlab``, ``tags``, ``datasets``, ``metrics``, ``model-index``) and
    the data, recipe, metrics, intended use and limits, from the run's files."""
    architecture = str(record.get("architecture", "model"))
    dataset = str(config.get("dataset") or record.get("dataset") or "unknown")
    accuracy = _accuracy(metrics, report)
    tags = ["mnistlab", "image-classification", "handwritten-digits", architecture]
    if peft:
        tags += ["peft", "lora"]
    lines = ["---", "library_name: mnistlab", "tags:"]
    lines += [f"- {_yaml(tag)}" for tag in dict.fromkeys(tags)]
    lines += ["datasets:", f"- {_yaml(dataset)}", "metrics:", "- accuracy"]
    if peft:
        lines += [f"base_model: {_yaml(peft['base_model_name_or_path'])}"]
    if accuracy is not None:
        lines += [
            "model-index:",
            f"- name: {_yaml(architecture)}",
            "  results:",
            "  - task:",
            "      type: image-classification",
            "    dataset:",
            f"      name: {_yaml(dataset)}",
            f"      type: {_yaml(dataset)}",
            "      split: test",
            "    metrics:",
            "    - type: accuracy",
            f"      value: {accuracy:.4f}",
        ]
    lines += ["---", ""]
    what = "LoRA adapter (PEFT layout)" if peft else "classifier"
    lines += [
        f"# {architecture} {what} for handwritten digits ({dataset})",
        "",
        f"Trained with mnistlab {record.get('mnistlab_version', '')}".rstrip() + f": "
        f"{len(record.get('class_names') or [])} classes "
        f"({', '.join(map(str, (record.get('class_names') or [])[:10]))}).",
        "",
        "## Data",
        "",
        f"- dataset: `{dataset}`",
    ]
    sizes = [
        f"{key.removeprefix('num_')} {int(source[key]):,}"
        for key in ("num_train", "num_val", "num_labeled", "num_unlabeled", "num_test")
        for source in [metrics if key in metrics else report if key in report else config]
        if isinstance(source.get(key), int) and source.get(key)
    ]
    lines += [f"- split sizes: {', '.join(sizes) if sizes else 'not recorded'}"]
    if isinstance(data_sha256, dict) and data_sha256:
        lines += ["- data files (SHA-256):"]
        for name, digests in data_sha256.items():
            entries = digests.items() if isinstance(digests, dict) else [(name, digests)]
            lines += [f"  - `{name}/{file}`: `{digest}`" for file, digest in entries]
    else:
        lines += ["- data hash: not recorded"]
    settings = dict(config.get("finetune_config") or record.get("config") or config)
    recipe = {
        k: settings[k] for k in _RECIPE_KEYS if k in settings and settings[k] not in ("", None)
    }
    lines += ["", "## Recipe", ""]
    lines += [f"- {key}: `{json.dumps(value)}`" for key, value in recipe.items()] or [
        "- not recorded"
    ]
    lines += ["", "## Metrics", ""]
    if accuracy is not None:
        n = metrics.get("num_test", report.get("num_test"))
        on = f" on {int(n):,} test images" if isinstance(n, int) else ""
        lines += [
            f"- test accuracy: **{accuracy:.4f}**{on}",
            f"- spread: {_spread(metrics, report)}",
        ]
    else:
        lines += ["- test accuracy: not recorded"]
    for key in ("macro_f1", "log_loss"):
        if isinstance(report.get(key), (int, float)):
            lines += [f"- {key.replace('_', ' ')}: {report[key]:.4f}"]
    if peft:
        lines += [
            "",
            "## Adapter",
            "",
            f"- r {peft['r']}, lora_alpha {peft['lora_alpha']:g} (scaling alpha / r), "
            f"{len(peft['target_modules'])} target modules, trained head: "
            f"{', '.join(peft['modules_to_save'] or ['none'])}",
            f"- base model: `{peft['base_model_name_or_path']}` (SHA-256 of its weights: "
            f"`{record.get('base_weights_sha256', 'not recorded')}`)",
        ]
    lines += [
        "",
        "## Intended use",
        "",
        "Classifying single handwritten digits in 28x28 pictures: teaching, experiments, and "
        "reading digits in forms after they are cut out and centred. "
        + (
            "Load it with PEFT on the base model it names (see adapter_config.json), or use "
            "the mnistlab run it came from."
            if peft
            else "Load it with mnistlab, passing this folder:"
        ),
        "",
    ]
    if not peft:
        lines += ["```", "mnistlab predict FOLDER digit.png", "mnistlab serve FOLDER", "```", ""]
    lines += [
        "## Limits",
        "",
    ]
    lines += [f"- {limit}" for limit in LIMITS]
    return "\n".join(lines) + "\n"
