"""Label efficiency, transfer and generation of the pretraining workflow (docs/benchmarks.md,
"Pretraining and fine-tuning").

Parts (each run folder is reused when it already holds a finished run, so the script can be
run again to only print the tables):

    pretrain   MAE on MNIST and on Fashion-MNIST (small preset, patch 7)
    scratch    the from-scratch rows of the mnist part only (no pretraining needed): a quick
               check of the fine-tuning path, e.g. --part scratch --labels 100
    mnist      labels {100, 1000, 60000} x {scratch, full fine-tune, LoRA, linear probe},
               plus the semi-supervised stage on 100 labels (200 steps)
    semi       the long semi-supervised stage (--semi-steps, default 3000) on 100 and 1000
               labels, for each of --seeds
    selftrain  self-training: each finished long semi-supervised run (or --teachers) labels
               the rest of the training split, a CNN student (--students) learns from it
    transfer   Fashion-MNIST-pretrained MAE -> MNIST with 100 and 1000 labels
    generate   class-conditional GPT on MNIST, digit grid, classifier accuracy per digit
    table      print the markdown tables from the finished runs

    python benchmarks/label_efficiency_benchmark.py \\
        --root runs/ptbench --part pretrain mnist transfer generate table
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.models.transformer import Classifier, count_parameters, get_preset
from mnistlab.pretraining import (
    FinetuneConfig,
    PretrainConfig,
    finetune,
    generate_digits,
    pretrain,
    save_generated_grid,
)
from mnistlab.pretraining.generate import classifier_agreement, classify_images
from mnistlab.pretraining.selftrain import STUDENT_EPOCHS as DEFAULT_STUDENT_EPOCHS
from mnistlab.pretraining.selftrain import self_train
from mnistlab.training.recipes import get_deep_recipe

THREADS = 1  # one thread per process: on a shared 2-core VM, 2 threads oversubscribe badly

MAE = {"objective": "mae", "preset": "small", "patch_size": 7, "batch_size": 256, "lr": 1.5e-3,
       "mask_ratio": 0.75, "num_threads": THREADS, "seed": 0}  # fmt: skip
MAE_EPOCHS = {"mnist": 10, "fashion-mnist": 6}
GPT = {"objective": "gpt", "dataset": "mnist", "preset": "tiny", "patch_size": 4, "epochs": 3,
       "batch_size": 128, "lr": 2e-3, "codebook_size": 256, "conditional": True,
       "num_threads": THREADS, "seed": 0}  # fmt: skip

# Fine-tuning recipes per number of labels: (supervised steps, batch size).
STEPS = {100: (300, 64), 1000: (400, 64), 60000: (300, 128)}
LR = {"scratch": 1e-3, "full": 1e-3, "lora": 2e-3, "probe": 1e-2}
METHODS = ("scratch", "full", "lora", "probe")


def pretrain_run(root: Path, dataset: str) -> Path:
    out = root / f"mae-{'fashion' if dataset == 'fashion-mnist' else dataset}"
    if not (out / "model" / "model.json").is_file():
        config = PretrainConfig(dataset=dataset, epochs=MAE_EPOCHS[dataset], **MAE)
        pretrain(config, out=out, overwrite=True)
    return out


def wait_for(path: Path, what: str) -> None:
    while not (path / "model" / "model.json").is_file():
        print(f"waiting for {what} ({path}) ...", flush=True)
        time.sleep(30)


def finetune_run(root: Path, name: str, pretrained: Path | None, method: str, labels: int,
                 seed: int = 0, **extra: Any) -> dict[str, Any]:  # fmt: skip
    out = root / name
    if not (out / "metrics.json").is_file():
        steps, batch = STEPS[labels]
        config = FinetuneConfig(
            pretrained=None if method == "scratch" else str(pretrained),
            mode="full" if method == "scratch" else method,
            dataset="mnist",
            labels=0 if labels >= 60000 else labels,
            preset="small",
            patch_size=7,
            steps=steps,
            batch_size=batch,
            eval_every=100,
            lr=LR[method],
            num_threads=THREADS,
            seed=seed,  # the labelled subset, init, batches and augmentation
            **extra,
        )
        finetune(config, out=out, overwrite=True)
    report = json.loads((out / "report.json").read_text())
    return {
        "test_accuracy": report["test_accuracy"],
        "train_seconds": report["train_seconds"],
        "trainable": report["trainable_parameters"],
        "total": report["total_parameters"],
        "adapter_bytes": report.get("adapter_bytes"),
    }


def part_mnist(root: Path, label_counts: list[int]) -> None:
    pre = root / "mae-mnist"
    for labels in label_counts:
        finetune_run(root, f"ft-scratch-{labels}", None, "scratch", labels)
    wait_for(pre, "MNIST pretraining")
    for labels in label_counts:
        for method in ("probe", "full", "lora"):
            finetune_run(root, f"ft-{method}-{labels}", pre, method, labels)
    if 100 in label_counts:
        finetune_run(root, "ft-full-100-semi", pre, "full", 100, semi_steps=200, semi_ratio=2)


SEMI_STEPS = 3000  # the long semi-supervised stage: steps after the supervised ones (--semi-steps)
SEMI_RATIO = 3  # unlabeled images per labelled one in each of those steps


def semi_name(labels: int, seed: int, steps: int = SEMI_STEPS, align: bool = False) -> str:
    return (
        f"ft-full-{labels}-semi{steps}" + ("-da" if align else "") + (f"-s{seed}" if seed else "")
    )


def part_semi(
    root: Path, label_counts: list[int], seeds: list[int], steps: int, align: bool
) -> None:
    pre = root / "mae-mnist"
    wait_for(pre, "MNIST pretraining")
    for seed in seeds:
        for labels in label_counts:
            if labels < 60000:
                finetune_run(root, semi_name(labels, seed, steps, align), pre, "full", labels,
                             seed=seed, semi_steps=steps, semi_ratio=SEMI_RATIO,
                             semi_align=align)  # fmt: skip


# Self-training students: the model's default recipe with these epochs (fast-cnn's default is
# 1 epoch on 60,000 true labels; 3 epochs on pseudo-labels was chosen on seed-0 teachers).
STUDENT_EPOCHS = {"fast-cnn": DEFAULT_STUDENT_EPOCHS, "resnet-small": 4}
SEMI_RUN = re.compile(r"ft-full-\d+-semi(\d+)(-da)?(-s\d+)?")


def semi_runs(root: Path) -> list[str]:
    """Names of the finished long semi-supervised runs under ``root`` (see ``semi_name``)."""
    names = (p.parent.name for p in root.glob("ft-full-*-semi*/metrics.json"))
    return sorted(
        n for n in names if (m := SEMI_RUN.fullmatch(n)) and int(m.group(1)) >= SEMI_STEPS
    )


def student_name(student: str, teacher: str) -> str:
    return f"st-{student}-{teacher.removeprefix('ft-full-')}"


def part_selftrain(root: Path, teachers: list[str] | None, students: list[str]) -> None:
    for teacher in teachers or semi_runs(root):
        for student in students:
            out = root / student_name(student, teacher)
            if not (out / "metrics.json").is_file():
                config = get_deep_recipe(
                    student,
                    epochs=STUDENT_EPOCHS.get(student, DEFAULT_STUDENT_EPOCHS),
                    num_threads=THREADS,
                )
                self_train(root / teacher, config, out=out, overwrite=True)


def part_transfer(root: Path) -> None:
    pre = root / "mae-fashion"
    wait_for(pre, "Fashion-MNIST pretraining")
    for labels in (100, 1000):
        finetune_run(root, f"transfer-full-{labels}", pre, "full", labels)


def part_generate(root: Path, classifier: Path | None) -> None:
    out = root / "gpt-mnist"
    if not (out / "model" / "model.json").is_file():
        pretrain(PretrainConfig(**GPT), out=out, overwrite=True)
    if classifier is None:
        classifier = root / "fast-cnn"
        if not (classifier / "model" / "model.json").is_file():
            from mnistlab.training.engine import train_model
            from mnistlab.training.recipes import get_deep_recipe

            config = get_deep_recipe("fast-cnn", num_threads=THREADS)
            train_model(config, out=classifier, overwrite=True)
    start = time.perf_counter()
    generated = generate_digits(out, list(range(10)), n=100, seed=0)
    seconds = time.perf_counter() - start
    save_generated_grid(
        type(generated)(generated.images[np.arange(1000) % 100 < 16],
                        generated.digits[np.arange(1000) % 100 < 16]),
        root / "generated_digits.png",
    )  # fmt: skip
    agreement = classifier_agreement(generated, classify_images(classifier, generated.images))
    (root / "generation.json").write_text(
        json.dumps(
            {
                "classifier": str(classifier),
                "per_digit": agreement,
                "sample_seconds": seconds,
                "per_digit_n": 100,
            },
            indent=1,
        )
    )


def table(root: Path) -> None:
    def acc(name: str) -> str:
        path = root / name / "report.json"
        if not path.is_file():
            return "—"
        return f"{json.loads(path.read_text())['test_accuracy']:.2%}"

    def secs(name: str) -> str:
        path = root / name / "report.json"
        return f"{json.loads(path.read_text())['train_seconds']:.0f}" if path.is_file() else "—"

    print(
        "| labels | from scratch | pretrained + full FT | pretrained + LoRA | pretrained + probe |"
    )
    print("|---:|---:|---:|---:|---:|")
    for labels in (100, 1000, 60000):
        cells = [f"{acc(f'ft-{m}-{labels}')} ({secs(f'ft-{m}-{labels}')} s)" for m in METHODS]
        print(f"| {labels:,} | " + " | ".join(cells) + " |")
    print(f"\nsemi-supervised, 100 labels, 200 extra steps: {acc('ft-full-100-semi')} "
          f"({secs('ft-full-100-semi')} s)")  # fmt: skip
    for labels, steps, align in itertools.product(
        (100, 1000), (SEMI_STEPS, 2 * SEMI_STEPS), (False, True)
    ):
        runs = [semi_name(labels, seed, steps, align) for seed in range(10)]
        done = [r for r in runs if (root / r / "report.json").is_file()]
        values = [json.loads((root / r / "report.json").read_text())["test_accuracy"]
                      for r in done]  # fmt: skip
        if values:
            each = ", ".join(f"{acc(r)} ({secs(r)} s)" for r in done)
            print(f"semi-supervised, {labels} labels, {steps} extra steps"
                      f"{' + distribution alignment' if align else ''}, "
                      f"{len(values)} seed(s): mean {np.mean(values):.2%}, "
                      f"range {min(values):.2%}-{max(values):.2%}: {each}")  # fmt: skip
    students = sorted(root.glob("st-*/metrics.json"))
    if students:
        print("\n| teacher (semi-supervised run) | teacher | student | pseudo-labels right | "
              "student accuracy | train s |")  # fmt: skip
        print("|---|---:|---|---:|---:|---:|")
    for path in students:
        config = json.loads((path.parent / "config.json").read_text())
        data = config["train_data"]
        report = json.loads((path.parent / "report.json").read_text())
        print(f"| {Path(data['teacher']['run']).name} | {data['teacher']['test_accuracy']:.2%} "
              f"| {config['model']} {config['epochs']} ep | {data['pseudo_label_accuracy']:.2%} "
              f"| {report['test_accuracy']:.2%} | {report['train_seconds']:.0f} |")  # fmt: skip
    print()
    print("| labels | from scratch | Fashion-MNIST MAE + full FT | MNIST MAE + full FT |")
    print("|---:|---:|---:|---:|")
    for labels in (100, 1000):
        print(f"| {labels:,} | {acc(f'ft-scratch-{labels}')} | {acc(f'transfer-full-{labels}')} "
              f"| {acc(f'ft-full-{labels}')} |")  # fmt: skip
    for name in ("mae-mnist", "mae-fashion", "gpt-mnist"):
        path = root / name / "report.json"
        if path.is_file():
            r = json.loads(path.read_text())
            print(f"\n{name}: {r['parameters']:,} parameters, final loss "
                  f"{r['final_train_loss']:.4f}, {r['train_seconds']:.0f} s")  # fmt: skip
    print("\nparameters (classifier, 10 classes):")
    for preset in ("tiny", "small", "base", "large"):
        print(f"  {preset}: {count_parameters(Classifier(get_preset(preset))):,}")
    lora = root / "ft-lora-100"
    if (lora / "report.json").is_file():
        r = json.loads((lora / "report.json").read_text())
        full = sum(f.stat().st_size for f in (root / "ft-full-100" / "model").glob("*.safetensors"))
        print(f"\nLoRA: {r['trainable_parameters']:,} trainable of {r['total_parameters']:,}; "
              f"adapter {r['adapter_bytes']:,} bytes vs full weights {full:,} bytes")  # fmt: skip
    total = 0.0
    for path in sorted(root.glob("*/report.json")):
        total += json.loads(path.read_text()).get("train_seconds") or 0.0
    print(f"\ncompute: {total / 60:.1f} min of training wall time over all runs (1 thread each)")
    gen = root / "generation.json"
    if gen.is_file():
        g = json.loads(gen.read_text())
        per = g["per_digit"]
        print(
            f"\ngenerated digits recognised by {g['classifier']} "
            f"({g.get('per_digit_n', 100)} per digit): "
            + ", ".join(f"{d}: {v:.0%}" for d, v in per.items())
            + f"; mean {np.mean(list(per.values())):.1%}; sampling {g['sample_seconds']:.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/ptbench"))
    parts = ["pretrain", "scratch", "mnist", "semi", "selftrain", "transfer", "generate", "table"]
    parser.add_argument("--part", nargs="+", default=["table"], choices=parts)
    parser.add_argument(
        "--labels", type=int, nargs="+", default=[100, 1000, 60000], help="mnist part: label counts"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="semi part: seeds (run folder -sN)"
    )
    parser.add_argument(
        "--semi-steps", type=int, default=SEMI_STEPS, help="semi part: semi-supervised steps"
    )
    parser.add_argument(
        "--semi-align",
        action="store_true",
        help="semi part: distribution alignment of the pseudo-labels (run folder -da)",
    )
    parser.add_argument(
        "--teachers",
        nargs="+",
        default=None,
        help="selftrain part: teacher run names under --root (default: every finished "
        "semi-supervised run of at least the default steps)",
    )
    parser.add_argument(
        "--students",
        nargs="+",
        default=["fast-cnn"],
        help="selftrain part: student models (deep models of `mnistlab train`)",
    )
    parser.add_argument(
        "--classifier",
        type=Path,
        default=None,
        help="classifier run for generated digits (default: train a fast-cnn)",
    )
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    if "pretrain" in args.part:
        for dataset in ("mnist", "fashion-mnist"):
            pretrain_run(args.root, dataset)
    if "scratch" in args.part:
        for labels in args.labels:
            row = finetune_run(args.root, f"ft-scratch-{labels}", None, "scratch", labels)
            print(
                f"scratch, {labels:,} labels: test accuracy {row['test_accuracy']:.4f}, "
                f"train {row['train_seconds']:.1f} s"
            )
    if "mnist" in args.part:
        part_mnist(args.root, args.labels)
    if "semi" in args.part:
        part_semi(args.root, args.labels, args.seeds, args.semi_steps, args.semi_align)
    if "selftrain" in args.part:
        part_selftrain(args.root, args.teachers, args.students)
    if "transfer" in args.part:
        part_transfer(args.root)
    if "generate" in args.part:
        part_generate(args.root, args.classifier)
    if "table" in args.part:
        table(args.root)


if __name__ == "__main__":
    main()
