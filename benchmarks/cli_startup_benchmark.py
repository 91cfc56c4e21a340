"""How long the ``mnistlab`` command takes to answer: --help, --version and the listings.

Each command runs as a fresh process ``--repeats`` times (the first run of each is a warm-up
and not counted); the table gives min / median / max wall time and the ratio of the median to
two peers measured in the same run: the bare interpreter (``python -c pass``, the floor) and
``python -c "import torch"`` (what every command paid before the CLI imported heavy libraries
lazily). Goal: every line at most 0.5 s.

    python benchmarks/cli_startup_benchmark.py [--repeats 7] [--markdown]

A dataset cache with mnist-mini (bundled, nothing to download) is made in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from mnistlab.runs import cpu_model

COMMANDS = [
    ["--help"],
    ["--version"],
    ["data", "list"],
    ["data", "verify", "mnist-mini"],
    ["runs", "list"],
    ["train", "--help"],
    ["finetune", "--help"],
    ["serve", "--help"],
]
PEERS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}


def _time(argv: list[str], repeats: int, env: dict[str, str]) -> list[float]:
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        if i:  # the first run warms the file cache
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--markdown", action="store_true", help="Print a Markdown table.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MNISTLAB_HOME": tmp, "MNISTLAB_RUNS": tmp, "COLUMNS": "80"}
        rows = {name: _time(argv, args.repeats, env) for name, argv in PEERS.items()}
        for command in COMMANDS:
            argv = [sys.executable, "-m", "mnistlab", *command]
            rows["mnistlab " + " ".join(command)] = _time(argv, args.repeats, env)
    floor = statistics.median(rows["python -c pass"])
    torch_import = statistics.median(rows['python -c "import torch"'])
    print(f"# CPU: {cpu_model()}, {os.cpu_count()} cores; {args.repeats} runs each")
    if args.markdown:
        print("| command | min s | median s | max s | x python | x import torch |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, times in rows.items():
        median = statistics.median(times)
        cells = [
            name,
            f"{min(times):.3f}",
            f"{median:.3f}",
            f"{max(times):.3f}",
            f"{median / floor:.1f}",
            f"{median / torch_import:.2f}",
        ]
        if args.markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print(f"{cells[0]:<34} {' '.join(c.rjust(8) for c in cells[1:])}")


if __name__ == "__main__":
    main()
