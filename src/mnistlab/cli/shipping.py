"""``mnistlab predict``, ``read``, ``export``, ``compress``, ``serve``."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mnistlab.cli.common import (
    ConfigOption,
    DeviceOption,
    HomeOption,
    OutOption,
    OverwriteOption,
    ResumeOption,
    SeedOption,
    ThreadsOption,
    command_config,
    console,
    field_option,
    handle_errors,
)
from mnistlab.errors import MnistlabError
from mnistlab.shipping.reader_config import DEFAULT_READER, ReaderConfig

ModelArgument = Annotated[
    Path,
    typer.Argument(
        help="A run folder from `mnistlab train` or `finetune`, a model folder, a folder of "
        "`mnistlab export`, a model file (model.json, .safetensors, .onnx or .skops with "
        "its model.json), or a shipped model: pretrained:handwriting. Left out (the first "
        "argument is a picture): pretrained:handwriting.",
        show_default=False,
    ),
]
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def model_and_pictures(
    model: Path, images: list[Path] | None, default: str, command: str
) -> tuple[Path | str, list[Path]]:
    """The model and the pictures of ``mnistlab predict|read [MODEL] PICTURE...``: when the
    first argument is a picture (its suffix says so; no model file has a picture's suffix),
    it is the first picture and ``default`` reads them.

    Raises:
        MnistlabError: a model and no picture.
    """
    if model.suffix.lower() in PICTURE_SUFFIXES:
        return default, [model, *(images or [])]
    if not images:
        raise MnistlabError(
            f"no pictures given to {command}",
            hint=f"mnistlab {command} [MODEL] PICTURE...: e.g. `mnistlab {command} photo.jpg` "
            f"({default}) or `mnistlab {command} {model} photo.jpg`",
        )
    return model, images


PICTURES = "PNG, JPEG, BMP, GIF or WebP"
DEFAULT_MODEL = "pretrained:handwriting"  # what `serve` serves when no model is named


def unreadable(path: Path, exc: OSError, command: str) -> tuple[str, str]:
    """The message (naming the path) and hint for a picture that could not be read."""
    if path.is_dir():  # IsADirectoryError; PermissionError on Windows
        return (
            f"{path} is a folder, not a picture",
            f"name the pictures in it, e.g. {path / '*.png'}",
        )
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        return (
            f"{path}: no such file",
            f"check the path{where}; {command} takes picture files: {PICTURES}",
        )
    if isinstance(exc, PermissionError):
        return (
            f"cannot read {path}: permission denied",
            "check the file's permissions (ls -l), or copy it somewhere you may read",
        )
    return (
        f"cannot read {path}: {exc.strerror or exc}",
        f"check that it is a readable picture file ({PICTURES})",
    )


def each_picture(images: list[Path], command: str, work: Any) -> tuple[list[dict], int]:
    """``work(path, data)`` -> a row for each picture file; a file that cannot be read or
    decoded gives an error row (message naming the path, and a hint) instead. Returns the rows
    in order and how many failed."""
    from mnistlab.shipping.errors import InputError

    rows, failed = [], 0
    for path in images:
        try:
            rows.append({"file": str(path), **work(path, path.read_bytes())})
        except InputError as exc:
            failed += 1
            hint = exc.hint or f"{command} takes picture files: {PICTURES}"
            rows.append({"file": str(path), "error": f"{path}: {exc.message}", "hint": hint})
        except OSError as exc:
            failed += 1
            message, hint = unreadable(path, exc, command)
            rows.append({"file": str(path), "error": message, "hint": hint})
    return rows, failed


def print_failures(rows: list[dict]) -> None:
    """Each failed picture's error and hint on stderr, whole (soft_wrap: paths are never
    broken by rich)."""
    from mnistlab.cli.common import err_console

    for row in rows:
        if "error" in row:
            err_console.print(
                f"[bold red]error:[/] {escape(row['error'])}", highlight=False, soft_wrap=True
            )
            hint = f"[bold]hint:[/] {escape(row['hint'])}"
            err_console.print(hint, highlight=False, soft_wrap=True)


def predict_cmd(
    model: ModelArgument,
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Pictures of digits: PNG, JPEG, BMP, GIF or WebP.",
                       show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead.")] = False,
    save_input: Annotated[
        Path | None,
        typer.Option(help="Also save the 28x28 input the model saw, as PNGs in this folder."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Let --save-input replace PNGs saved before.")
    ] = False,
) -> None:
    """Classify pictures of handwritten digits (photos or scans, any size, dark-on-light or
    light-on-dark): each is converted the way MNIST was made, then classified. Prints the
    label, the confidence and the top 3."""
    import numpy as np

    from mnistlab.shipping import load_model, preprocess_image

    model, images = model_and_pictures(model, images, DEFAULT_MODEL, "predict")
    shipped = load_model(model)

    def classify(path: Path, data: bytes) -> dict:
        pixels = preprocess_image(data)
        if save_input is not None:
            from PIL import Image

            from mnistlab.errors import OverwriteError
            from mnistlab.io import atomic_write_bytes

            target = save_input / f"{path.stem}.28x28.png"
            if target.exists() and not overwrite:
                raise OverwriteError(f"{target} exists", hint="pass --overwrite")
            buffer = io.BytesIO()
            Image.fromarray(np.asarray(pixels)).save(buffer, "PNG")
            atomic_write_bytes(target, buffer.getvalue())
        return shipped.predict(pixels)[0].to_dict()

    rows, failed = each_picture(images, "predict", classify)
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        classified = [row for row in rows if "error" not in row]
        if classified:
            table = Table(title=f"{shipped.name} ({shipped.backend})", title_justify="left")
            for column in ("image", "label", "confidence", "top 3"):
                table.add_column(column, justify="right" if column == "confidence" else "left")
            for row in classified:
                top = "  ".join(f"{t['label']} {t['probability']:.1%}" for t in row["top3"])
                flag = " [yellow](low confidence)[/]" if row["low_confidence"] else ""
                table.add_row(
                    escape(row["file"]),
                    f"[bold]{escape(row['label'])}[/]{flag}",
                    f"{row['confidence']:.1%}",
                    escape(top),
                )
            console.print(table)
        print_failures(rows)
    if failed:
        raise typer.Exit(1)


ReadModelArgument = Annotated[
    Path,
    typer.Argument(
        help="A number reader's run folder (`mnistlab train-reader`: reads the whole line, "
        "touching digits too), or any digit classifier `mnistlab predict` takes (the digits are "
        "then cut apart by recognition). Left out (the first argument is a picture): "
        f"{DEFAULT_READER}.",
        show_default=False,
    ),
]


def read_cmd(
    model: ReadModelArgument,
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Photos or scans of handwritten numbers: PNG, JPEG, BMP, GIF, WebP.",
                       show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead.")] = False,
    annotate: Annotated[
        Path | None,
        typer.Option(
            metavar="FOLDER",
            help="Also save each picture with the digits' boxes and readings drawn on it.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Let --annotate replace pictures saved before.")
    ] = False,
    second_opinion: Annotated[
        str,
        typer.Option(
            help="With a number reader: a digit classifier that reads each digit found "
            "again (the two probabilities are multiplied), or 'none'.",
        ),
    ] = DEFAULT_MODEL,
    digits: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=32,
            help="The numbers' length when known (a postcode: 5): read the most likely string "
            "of exactly that many digits, which mends a digit read twice or missed. Needs a "
            "number reader.",
        ),
    ] = None,
) -> None:
    """Read whole handwritten numbers (a postcode, an amount, a meter reading) from photos or
    scans. A number reader (`mnistlab train-reader`) reads the whole line at once; with a
    digit classifier the digits are found, touching ones cut apart by recognition, and each is
    read. Prints the number, its confidence (the product of the digits') and each digit with
    its probability; --json adds the boxes (docs/shipping.md, "Reading whole numbers")."""
    from mnistlab.shipping.read import check_digits, load_number_model, read_number_file

    model, images = model_and_pictures(model, images, DEFAULT_READER, "read")
    classifier = None if second_opinion == "none" else second_opinion
    shipped = load_number_model(model, classifier=classifier)
    check_digits(digits, shipped)

    def read(path: Path, data: bytes) -> dict:
        reading = read_number_file(data, shipped, digits=digits)
        if annotate is not None:
            _annotate(data, reading, annotate / f"{path.stem}.read.png", overwrite)
        return reading.to_dict()

    rows, failed = each_picture(images, "read", read)
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        done = [row for row in rows if "error" not in row]
        if done:
            table = Table(title=f"{shipped.name} ({shipped.backend})", title_justify="left")
            for column in ("image", "number", "confidence", "digits"):
                table.add_column(column, justify="right" if column == "confidence" else "left")
            for row in done:
                digits = "  ".join(f"{d['digit']} {d['confidence']:.0%}" for d in row["digits"])
                number = f"[bold]{escape(row['text'])}[/]" if row["text"] else "(none)"
                table.add_row(escape(row["file"]), number, f"{row['confidence']:.1%}",
                              escape(digits or row["reason"] or ""))  # fmt: skip
            console.print(table)
        print_failures(rows)
    if failed:
        raise typer.Exit(1)


def _annotate(data: bytes, reading: object, target: Path, overwrite: bool) -> None:
    """Save the picture with each digit's box and reading drawn on it (atomic, never over a
    file unasked)."""
    from PIL import Image, ImageDraw

    from mnistlab.errors import OverwriteError
    from mnistlab.io import atomic_write_bytes

    if target.exists() and not overwrite:
        raise OverwriteError(f"{target} exists", hint="pass --overwrite")
    image = Image.open(io.BytesIO(data)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for d in reading.digits:  # type: ignore[attr-defined]
        x0, y0, x1, y1 = d.box
        colour = (0, 160, 0) if d.confidence >= 0.9 else (220, 120, 0)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=2)
        draw.text((x0 + 2, max(0, y0 - 12)), f"{d.digit} {d.confidence:.0%}", fill=colour)
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    atomic_write_bytes(target, buffer.getvalue())


def export_cmd(
    model: ModelArgument,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="onnx (CNNs and classic logreg/rf runs), hf (a Hugging Face-style folder: "
            "safetensors, config.json, model card) or peft (a LoRA run's adapter).",
        ),
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder to write. [default: onnx/, hf/ or peft/ in the model or run folder]",
            show_default=False,
        ),
    ] = None,
    opset: Annotated[int, typer.Option(min=17, help="ONNX opset.")] = 17,
    check: Annotated[
        bool,
        typer.Option(help="ONNX: compare with PyTorch / scikit-learn on the whole test split."),
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier export in --out.")] = False,
    home: HomeOption = None,
) -> None:
    """Export a trained model: to ONNX (dynamic batch), verified on the test split (a CNN: the
    logits within 1e-4 of PyTorch's and the same accuracy; a classic run: the probabilities
    within 1e-4 of scikit-learn's and the same label on at least 99.9% of the images), as a
    Hugging Face-style folder (--format hf), or a LoRA adapter in PEFT's layout (--format
    peft)."""
    kind = format.lower()
    if kind in ("hf", "peft"):
        from mnistlab.shipping.hf import export_hf, export_peft

        exported = (export_hf if kind == "hf" else export_peft)(model, out, overwrite=overwrite)
        console.print(f"wrote {escape(str(exported.folder))}", soft_wrap=True)
        if exported.test_accuracy is not None:
            console.print(f"model card: test accuracy {exported.test_accuracy:.4f}")
        return
    if kind != "onnx":
        raise MnistlabError(f"unknown export format {format!r}", hint="use onnx, hf or peft")
    from mnistlab.shipping.onnx import export_onnx

    result = export_onnx(model, out, opset=opset, check=check, overwrite=overwrite, home=home)
    console.print(f"wrote {escape(str(result.onnx_path))} (opset {opset}, dynamic batch)")
    v = result.verification
    if v.get("checked") and "label_agreement" in v:
        console.print(
            f"verified on {v['dataset']}/{v['split']} ({v['images']:,} images): max "
            f"|probability difference| {v['max_abs_diff']:.2e} (≤ {v['tolerance']:g}), same "
            f"label on {v['label_agreement']:.2%}, accuracy {v['candidate_accuracy']:.4f} vs "
            f"scikit-learn {v['reference_accuracy']:.4f}"
        )
        if v.get("ties_broken_otherwise"):
            console.print(
                f"({v['ties_broken_otherwise']} of them: a tie in scikit-learn's probabilities, "
                "broken the other way)"
            )
    elif v.get("checked"):
        console.print(
            f"verified on {v['dataset']}/test ({v['images']:,} images): max |logit difference| "
            f"{v['max_abs_diff']:.2e} (≤ {v['tolerance']:g}), accuracy "
            f"{v['candidate_accuracy']:.4f} = PyTorch {v['reference_accuracy']:.4f}"
        )


def compress_cmd(
    model: ModelArgument,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the variants. [default: compressed/ in the run folder]"),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method", help="int8-dynamic, int8-static, pruned (repeatable). [default: all]"
        ),
    ] = None,
    prune: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="Fraction of weights pruned.")
    ] = 0.5,
    finetune_epochs: Annotated[
        int, typer.Option(min=0, help="Fine-tuning epochs after pruning.")
    ] = 1,
    calibration_size: Annotated[
        int, typer.Option(min=1, help="Training images for static quantization.")
    ] = 1000,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads when timing.")] = 1,
    seconds: Annotated[float, typer.Option(min=0.05, help="Seconds spent on each timing.")] = 1.0,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier variants in --out.")] = False,
    home: HomeOption = None,
) -> None:
    """Quantize (int8, dynamic and static with calibration) and prune (magnitude, with
    optional fine-tuning) a model, then print a table of file size (raw and gzip), latency of
    one image, throughput in batches of 256 and test accuracy of every variant on this CPU
    (compress.json also holds the batch-256 latency and the fastest calls)."""
    from mnistlab.shipping.compress import METHODS, compress_model

    result = compress_model(
        model,
        out,
        methods=tuple(method) if method else METHODS,
        prune_amount=prune,
        finetune_epochs=finetune_epochs,
        calibration_size=calibration_size,
        threads=threads,
        seconds=seconds,
        overwrite=overwrite,
        home=home,
        log=lambda message: console.print(escape(message)),
    )
    console.print(compress_table(result.rows, threads))
    console.print(
        f"variants and compress.json in {escape(str(result.folder))}",
        soft_wrap=True,
    )


def compress_table(rows: list[dict], threads: int) -> Table:
    """The table ``mnistlab compress`` prints: readable in 80 columns (short headers with the
    units, light borders, no cell ever cut with "…"; a too narrow terminal folds numbers onto
    a second line rather than hiding digits). compress.json holds every timing."""
    from rich import box

    base = rows[0]

    def kb(size: int) -> str:
        kilobytes = size / 1024
        return f"{kilobytes:,.1f}" if kilobytes < 1000 else f"{kilobytes:,.0f}"

    cells = [
        [
            row["variant"],
            row["backend"],
            kb(row["size_bytes"]),
            kb(row["gzip_bytes"]),
            f"{row['latency_b1_ms']:.3f}",
            f"{row['throughput_per_s']:,.0f}",
            f"{row['accuracy']:.4f}",
            f"{100 * (row['accuracy'] - base['accuracy']):+.2f}",
        ]
        for row in rows
    ]
    table = Table(
        title=f"{base['images']:,} test images, {threads} thread(s)",
        title_justify="left",
        caption=f"latency: one image; img/s: in batches of 256; Δ: accuracy points vs "
        f"{base['variant']} ({base['backend']})",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 0, 0, 1),
    )
    headers = ("variant", "runtime", "size\nkB", "gzip\nkB", "latency\nms", "img/s", "accuracy")
    for i, header in enumerate((*headers, "Δ")):
        text = i < 2  # names: never folded; numbers fold (no "…") only if the terminal is tiny
        table.add_column(
            header,
            justify="left" if text else "right",
            no_wrap=text,
            min_width=max(len(r[i]) for r in cells) if text else None,
            overflow="fold",
        )
    for row in cells:
        table.add_row(escape(row[0]), escape(row[1]), *row[2:])
    return table


def serve_cmd(
    model: Annotated[
        str,
        typer.Argument(
            help="The model to serve: pretrained:handwriting (the default: the shipped model "
            "that reads handwriting from other sources), a run folder, a model folder, a "
            "folder of `mnistlab export`, or a model file.",
        ),
    ] = DEFAULT_MODEL,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port.")] = 8000,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest request body, in MiB.")
    ] = 4.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Most images per batch request.")] = 64,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Largest picture decoded (width x height).")
    ] = 16_000_000,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads per forward pass.")] = 1,
    compute_threads: Annotated[
        int, typer.Option(min=1, help="Pictures processed at once per worker.")
    ] = 2,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (about one per CPU core).")
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    max_request_pixels: Annotated[
        int, typer.Option(min=1, help="Most pixels of all pictures of one request together.")
    ] = 32_000_000,
    max_header_kb: Annotated[
        float, typer.Option(min=1, help="Largest request line + headers, in KiB (else 431).")
    ] = 64.0,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="MNISTLAB_SERVE_TOKEN",
            help="Bearer token that /v1/* and /metrics require (Authorization: Bearer TOKEN); "
            "/, /healthz and /docs stay open. Prefer the environment variable: a command "
            "line is visible to other users.",
            show_default=False,
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Host header name to answer (repeat for several; *.example.com for "
            "sub-domains, * for any); others get 400. Default: localhost, 127.0.0.1 and ::1 "
            "on a loopback address, any otherwise.",
            show_default=False,
        ),
    ] = None,
    expose_details: Annotated[
        bool,
        typer.Option(
            help="Show the model's paths, training configuration and package versions in "
            "GET /v1/models (default: a public card only)."
        ),
    ] = False,
    reader: Annotated[
        str,
        typer.Option(
            help="What POST /v1/read (and the draw page's whole-number pad) reads numbers "
            "with: a number reader (pretrained:number-reader, the one that ships, or a "
            "`mnistlab train-reader` run), or 'model': the served model, cutting touching "
            "digits apart.",
        ),
    ] = "pretrained:number-reader",
    second_opinion: Annotated[
        bool,
        typer.Option(
            help="The served model reads again each digit the number reader finds (the two "
            "probabilities are multiplied)."
        ),
    ] = True,
) -> None:
    """Serve a model over HTTP: POST /v1/predict, POST /v1/predict/batch, POST /v1/read
    (whole numbers), GET /v1/models, /healthz, /metrics (Prometheus), OpenAPI docs at /docs,
    and a draw-a-digit page at /."""
    from mnistlab.shipping.serve import ServeConfig, serve

    config = ServeConfig(
        max_upload_bytes=int(max_upload_mb * (1 << 20)),
        max_pixels=max_pixels,
        max_batch=max_batch,
        compute_threads=compute_threads,
        max_request_pixels=max_request_pixels,
        max_header_bytes=int(max_header_kb * 1024),
        token=token or None,
        allowed_hosts=tuple(allowed_host or ()),
        expose_details=expose_details,
        reader=None if reader == "model" else reader,
        second_opinion=second_opinion,
    )

    def ready(shipped: object) -> None:
        console.print(
            f"serving {escape(str(getattr(shipped, 'name', model)))} on "
            f"http://{escape(host)}:{port}/  (API docs: /docs, Ctrl-C stops)"
        )
        if config.token:
            console.print("/v1/* and /metrics need 'Authorization: Bearer <token>'")
        if (
            not config.allowed_hosts
            and host not in ("localhost", "::1")
            and not (host.startswith("127."))
        ):
            console.print(
                "note: any Host header is answered; name the server's address with "
                "--allowed-host (e.g. --allowed-host digits.example.com)"
            )

    serve(
        model,
        host=host,
        port=port,
        config=config,
        threads=threads,
        workers=workers,
        access_log=access_log,
        on_ready=ready,
    )


ReaderSetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override any setting, e.g. --set photo=0.7 (repeatable; values are JSON, bare "
        "words are strings). The keys: ReaderConfig, docs/shipping.md.",
        show_default=False,
    ),
]


def train_reader_cmd(
    numbers: Annotated[
        int | None, field_option(ReaderConfig, "numbers", "Training pictures of numbers.")
    ] = None,
    epochs: Annotated[int | None, field_option(ReaderConfig, "epochs", "Passes over them.")] = None,
    max_touching: Annotated[
        float | None,
        field_option(ReaderConfig, "max_touching", "Most touching pairs in a picture (a share)."),
    ] = None,
    test_numbers: Annotated[
        int | None, field_option(ReaderConfig, "test_numbers", "Test pictures per condition.")
    ] = None,
    dataset: Annotated[
        str | None,
        field_option(ReaderConfig, "dataset", "Digits to write with.", "--dataset", "-d"),
    ] = None,
    device: DeviceOption = None,
    seed: SeedOption = None,
    threads: ThreadsOption = None,
    set_: ReaderSetOption = None,
    config: ConfigOption = None,
    resume: ResumeOption = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    home: HomeOption = None,
) -> None:
    """Train a number reader: a net that reads a whole line of handwritten digits at once,
    touching and overlapping ones included (CTC), from pictures of numbers it makes from the
    dataset's training digits (some as photos of paper). Tests it on numbers made of the test
    digits, then `mnistlab read RUN PICTURE` uses it. Example: `mnistlab train-reader --out
    runs/reader`; `--set KEY=VALUE` reaches every setting (docs/shipping.md)."""
    from mnistlab.shipping.reader_training import train_reader

    options = {
        "numbers": numbers,
        "epochs": epochs,
        "max_touching": max_touching,
        "test_numbers": test_numbers,
        "dataset": dataset,
        "device": device,
        "seed": seed,
        "num_threads": threads,
    }
    run_config, resume, overwrite = command_config(
        ReaderConfig, "train-reader", resume, out, overwrite, config, options, set_
    )
    result = train_reader(run_config, out=out, overwrite=overwrite, resume=resume, home=home)
    console.print(f"run folder: {escape(str(result.run_dir))}")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("predict")(handle_errors(predict_cmd))
    app.command("read")(handle_errors(read_cmd))
    app.command("train-reader")(handle_errors(train_reader_cmd))
    app.command("export")(handle_errors(export_cmd))
    app.command("compress")(handle_errors(compress_cmd))
    app.command("serve")(handle_errors(serve_cmd))
