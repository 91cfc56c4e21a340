"""Serving latency and throughput: a real ``mnistlab serve`` on loopback under concurrent
clients, and in-process batch throughput of ONNX fp32 vs int8.

Part 1: for each model (the run folder, served by PyTorch, and its ONNX export, served by ONNX
Runtime with one and with two worker processes) the benchmark starts
``python -m mnistlab serve MODEL --port P --threads 1 --workers W`` (uvicorn), waits for
``/healthz``, then sends ``--requests`` POST /v1/predict requests
from ``--concurrency`` keep-alive connections at once. Two payloads: a 280x280 PNG of a drawn
digit (what the web page sends: decode, MNIST preprocessing, model) and a JSON 28x28 array
(model only). The client is a minimal asyncio HTTP/1.1 client so that it takes little of the
CPU the server needs; latency is time from the first byte sent to the last byte received.
Every answer must be 200 with a label: anything else counts as an error.

Part 2: in-process throughput of batches of 256 test images through ONNX Runtime, fp32 vs
int8 (static, QDQ), 1 and 2 threads (``mnistlab compress`` variants; made in a temporary
folder when ``RUN/compressed`` is absent).

    python benchmarks/serve_benchmark.py RUN [--requests 2000] [--concurrency 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from mnistlab.data import load_dataset
from mnistlab.runs import environment_info
from mnistlab.shipping import load_model


def drawn_digit_png() -> bytes:
    """A 280x280 PNG of a hand-drawn-looking '7', black on white, as the page's canvas sends."""
    image = Image.new("L", (280, 280), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(70, 50), (210, 50), (150, 150), (110, 235)], fill=0, width=18, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def request_bytes(port: int, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one_connection(port: int, payload: bytes, count: int, out: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(payload)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            out.append(time.perf_counter() - start)
            if status != 200 or b'"label"' not in body:
                errors.append((status, body[:200]))
    finally:
        writer.close()


async def load_test(port: int, payload: bytes, requests: int, concurrency: int) -> dict:
    latencies: list[float] = []
    errors: list = []
    per = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    start = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(one_connection(port, payload, n, latencies, errors) for n in per)),
        timeout=600,
    )
    wall = time.perf_counter() - start
    ms = sorted(x * 1e3 for x in latencies)
    return {
        "requests": len(ms),
        "errors": len(errors) + requests - len(ms),
        "p50_ms": statistics.median(ms),
        "p90_ms": ms[int(0.90 * (len(ms) - 1))],
        "p99_ms": ms[int(0.99 * (len(ms) - 1))],
        "max_ms": ms[-1],
        "requests_per_s": len(ms) / wall,
        "wall_s": wall,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, workers: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "mnistlab", "serve", str(model), "--port", str(port)]
    command += ["--threads", "1", "--workers", str(workers)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                if b"200 OK" in s.recv(1000):
                    return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("server did not start within 120 s")


def serve_rows(models: list[tuple[str, Path, int]], requests: int, concurrency: int) -> list[dict]:
    digit = load_dataset("mnist", "test").images[0]
    payloads = {
        "PNG 280x280 (preprocessed)": (drawn_digit_png(), "image/png"),
        "JSON 28x28 array": (json.dumps({"image": digit.tolist()}).encode(), "application/json"),
    }
    rows = []
    for name, folder, workers in models:
        port = free_port()
        server = start_server(folder, port, workers)
        name = f"{name}, {workers} worker{'s' if workers > 1 else ''}"
        try:
            for payload_name, (body, content_type) in payloads.items():
                payload = request_bytes(port, body, content_type)
                asyncio.run(load_test(port, payload, 100, concurrency))  # warm-up (all workers)
                row = asyncio.run(load_test(port, payload, requests, concurrency))
                row.update(model=name, payload=payload_name, bytes=len(body))
                rows.append(row)
                print(
                    f"{name:30s} {payload_name:28s} p50 {row['p50_ms']:6.2f} ms  "
                    f"p99 {row['p99_ms']:6.2f} ms  max {row['max_ms']:7.2f} ms  "
                    f"{row['requests_per_s']:7.0f} req/s  errors {row['errors']}",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(30)
    return rows


def batch_rows(run: Path, work: Path) -> list[dict]:
    from mnistlab.shipping.compress import compress_model, measure

    compressed = run / "compressed"
    if not (compressed / "int8-static" / "model.json").is_file():
        compressed = compress_model(
            run, work / "compressed", methods=("int8-static",), seconds=0.1
        ).folder
    test = load_dataset("mnist", "test")
    rows = []
    for variant in ("fp32", "int8-static"):
        model = load_model(compressed / variant)
        for threads in (1, 2):
            row = measure(model, test.images, test.labels, threads=threads, seconds=3.0)
            row["threads"] = threads
            rows.append(row)
            print(
                f"ONNX {variant:12s} {threads} thread(s): batch 256 in "
                f"{row['latency_b256_ms']:6.2f} ms median, {row['latency_b256_best_ms']:6.2f} ms "
                f"best = {256e3 / row['latency_b256_best_ms']:8.0f} images/s, "
                f"accuracy {row['accuracy']:.4f}",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a deep run folder (e.g. a fast-cnn run)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mnistlab-serve-bench-") as tmp:
        work = Path(tmp)
        from mnistlab.shipping.onnx import export_onnx

        onnx_folder = export_onnx(args.run, work / "onnx").folder
        models = [
            ("PyTorch", args.run, 1),
            ("ONNX Runtime fp32", onnx_folder, 1),
            ("ONNX Runtime fp32", onnx_folder, 2),
        ]
        serve = serve_rows(models, args.requests, args.concurrency)
        batch = batch_rows(args.run, work)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": dt.date.today().isoformat(),
                    "machine": platform.platform(),
                    "environment": environment_info(),
                    "run": str(args.run),
                    "requests": args.requests,
                    "concurrency": args.concurrency,
                    "load_average_before": load_before,
                    "load_average_after": load_after,
                    "serve": serve,
                    "batch": batch,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
