"""Where training runs, apart from what it computes: the device, threads, precision,
random-generator states, the allocator, Ctrl-C, and the processes of a ``torchrun`` job.

Everything here is used by :func:`mnistlab.training.loop.fit` and the trainers around it;
none of it touches a model's mathematics.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mnistlab.errors import MnistlabError
from mnistlab.models.inference import autocast as autocast  # re-exported: one definition
from mnistlab.models.inference import native_bf16, resolve_precision
from mnistlab.models.inference import resolve_device as resolve_device  # re-exported


@contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Use ``num_threads`` CPU threads inside the block (0 = leave torch's default)."""
    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def precision_in_use(device: torch.device, precision: str) -> tuple[str, str | None]:
    """What a run with ``precision`` (``auto``, ``fp32``, ``bf16``) computes in on ``device``,
    and a warning when that is bf16 without fast bf16 kernels (emulated: ~10x slower than fp32
    on an AVX2-only CPU; docs/training.md, "Precision"), else None."""
    used = resolve_precision(device, precision)
    if used == "bf16" and not native_bf16(device):
        lacking = "AVX-512 or AMX" if device.type == "cpu" else "bf16 support"
        return used, (
            f"precision bf16 on a {device.type} without {lacking} is emulated and far slower "
            "than fp32; --set precision=auto uses bf16 only where the hardware has it"
        )
    return used, None


def announce_precision(device: torch.device, precision: str, console: Any) -> str:
    """What a run with ``precision`` computes in on ``device`` (:func:`precision_in_use`),
    printing its warning, if any, on ``console`` (a rich Console)."""
    used, warning = precision_in_use(device, precision)
    if warning:
        console.print(f"[yellow]warning:[/] {warning}")
    return used


def cpus_available() -> float:
    """The CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota
    (``cpu.max``, as containers set it)."""
    try:
        count = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        count = float(os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return max(count, 1.0)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpus_busy(interval: float = 0.1) -> float:
    """How many CPUs other work keeps busy right now: the machine's busy share over
    ``interval`` seconds (this process idles meanwhile) times its CPU count; 0 if unknown."""
    before = _cpu_times()
    time.sleep(interval)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return 0.0
    share = (after[0] - before[0]) / (after[1] - before[1])
    return share * (os.cpu_count() or 1)


def choose_threads(requested: int = 0) -> tuple[int, str]:
    """The CPU threads a run uses, and why. ``requested`` > 0 is taken as given. 0 means
    auto: the CPUs available to this process (affinity, cgroup quota) minus those other work
    keeps busy now, at least 1. Two OpenMP threads spinning against another process on a
    2-core machine run 3x slower than one thread (docs/training.md, "Threads").

    Raises:
        MnistlabError: ``requested`` is not a whole number >= 0."""
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 0:
        raise MnistlabError(
            f"num_threads must be a whole number >= 0 (0: auto); got {requested!r}",
            hint="e.g. --set num_threads=1",
        )
    if requested > 0:
        return requested, "as configured"
    available, busy = cpus_available(), cpus_busy()
    threads = max(1, min(int(available), round(available - busy)))
    return threads, f"auto: {busy:.1f} of {available:g} CPUs busy with other work"


def run_threads(num_threads: int, resume: str | os.PathLike[str] | None = None) -> tuple[int, str]:
    """The threads of a run and why: ``num_threads`` if set; for a resumed run, the count its
    ``config.json`` recorded (floating-point sums depend on the thread count, so a resume
    keeps it to stay bit-exact); else :func:`choose_threads`, shared among the processes of a
    torchrun job."""
    if not num_threads and resume is not None:
        try:
            saved = json.loads((Path(resume).expanduser() / "config.json").read_text())
        except (OSError, ValueError):
            saved = {}
        recorded = saved.get("threads") if isinstance(saved, dict) else None
        if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
            return recorded, "recorded by the interrupted run"
    threads, why = choose_threads(num_threads)
    world = Distributed.from_env().world
    if not num_threads and world > 1:
        threads = max(1, int(cpus_available() // world))
        why = f"auto: {world} processes share {cpus_available():g} CPUs"
    return threads, why


@contextmanager
def training_settings(num_threads: int, device: torch.device) -> Iterator[None]:
    """The thread count and deterministic algorithms of a run; restored afterwards."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    fill = torch.utils.deterministic.fill_uninitialized_memory
    if device.type == "cuda":  # cuBLAS needs this before its first use to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN, a debugging aid against kernels
    # that read memory nobody wrote. No kernel used here does; on a GPU the fills were 88 of the
    # 191 kernel launches of a fast-cnn step (docs/benchmarks.md, "On a GPU").
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    try:
        with torch_threads(num_threads):
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.backends.cudnn.benchmark = benchmark


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timing needs it on CUDA and MPS)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def rng_states(device: torch.device) -> dict[str, list[int] | None]:
    """torch's global CPU (and CUDA) generator states, JSON-ready."""
    return {
        "torch_cpu": torch.get_rng_state().tolist(),
        "torch_cuda": torch.cuda.get_rng_state(device).tolist() if device.type == "cuda" else None,
    }


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(torch.tensor(states["torch_cpu"], dtype=torch.uint8))
    if device.type == "cuda" and states.get("torch_cuda") is not None:
        torch.cuda.set_rng_state(torch.tensor(states["torch_cuda"], dtype=torch.uint8), device)


@contextmanager
def stop_on_sigint(enabled: bool = True, *, at_once: bool = False) -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag the loop checks between steps (the second one raises
    at once). Only in the main thread and when ``enabled``; elsewhere Ctrl-C raises as usual.

    ``at_once``: every Ctrl-C raises KeyboardInterrupt where it lands *and* sets the flag, for
    loops with no step to stop at: Python drops an exception raised inside a finalizer or a
    weakref callback ("Exception ignored in ..."), so a Ctrl-C landing there would be lost
    unless the loop also checks the flag. While the caller sets ``flag["hold"]`` (work that
    must not stop half-way, such as creating a record and then tagging it), a first Ctrl-C
    only sets the flag even with ``at_once``; the caller checks it when the hold ends."""
    flag = {"stop": False, "hold": False}

    def handler(signum: int, frame: Any) -> None:
        stop, flag["stop"] = flag["stop"], True
        if stop or (at_once and not flag["hold"]):
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, handler) if enabled else None
    except ValueError:  # not the main thread
        previous = None
    try:
        yield flag
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameter numbers


def tune_cpu_allocator() -> bool:
    """Start glibc's malloc where its own heuristics end up after a while; returns whether done.

    glibc serves blocks above a threshold (128 KiB at start) with a fresh mmap and gives them
    back with munmap on free; each free of such a block raises the threshold, up to 32 MiB.
    A training step allocates and frees activations of a few MiB, so until the threshold has
    risen every step pays page faults on new pages: the first run in a process measured ~25 %
    slower per step than the next one (fast-cnn on 2 CPU cores, docs/benchmarks.md). Setting
    the thresholds to glibc's 64-bit maxima (mmap 32 MiB, trim 64 MiB) from the start removes
    that. Process-wide, harmless elsewhere; a no-op off glibc (macOS, Windows, musl).
    """
    import ctypes
    import ctypes.util

    if not hasattr(os, "confstr") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
        return libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20) == 1 and ok
    except (OSError, AttributeError):
        return False


def warm_up_imports() -> None:
    """Import what the first optimizer of a process pulls in (torch._dynamo, ~800 modules,
    ~1.1 s on a 2-core CPU): Python import time, like ``import torch``, not training, so it
    is done before a run's clock starts."""
    with suppress(ImportError):
        import torch._dynamo  # noqa: F401


# ---------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (``world == 1``: a plain single process)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        """Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (set by torchrun)."""
        env = os.environ
        return cls(
            int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0))
        )

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs and writes the run folder."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def is_main_process() -> bool:
    """False in the torchrun processes of rank > 0 (which must not log or write)."""
    return Distributed.from_env().main


def _round_store(ddp: Distributed) -> Any:
    """A key space of this start of the job in torchrun's store, or None outside torchrun.

    torchrun keeps one store for the whole job (``TORCHELASTIC_USE_AGENT_STORE``), also
    across ``--max-restarts``: the keys the previous start's processes wrote (their gloo/nccl
    addresses) are still there, and a restarted process group that reads them fails
    ("Gloo connectFullMesh failed ... Connection refused"). ``TORCHELASTIC_RESTART_COUNT``
    cannot name a fresh key space: each machine counts its own restarts. So rank 0 draws a
    random token and hands it to every other rank in reply to a random name that rank drew
    (a reply to a name drawn now cannot be stale); each rank confirms under the token.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or not ddp.active:
        return None
    from torch.distributed.constants import default_pg_timeout

    store = dist.PrefixStore(
        "mnistlab/",
        dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            ddp.world,
            is_master=False,
            timeout=default_pg_timeout,
        ),
    )
    if ddp.main:
        token, answered = uuid.uuid4().hex, set()
        waiting = set(range(1, ddp.world))
        deadline = time.monotonic() + default_pg_timeout.total_seconds()
        while waiting:
            for rank in sorted(waiting):
                if store.check([f"{token}/joined/{rank}"]):
                    waiting.discard(rank)
                elif store.check([f"hello/{rank}"]):
                    name = store.get(f"hello/{rank}").decode()
                    if name not in answered:  # maybe a previous start's: answering is harmless
                        store.set(f"welcome/{name}", token)
                        answered.add(name)
            if waiting and time.monotonic() > deadline:
                raise MnistlabError(f"ranks {sorted(waiting)} did not join the process group")
            if waiting:
                time.sleep(0.02)
    else:
        name = uuid.uuid4().hex
        store.set(f"hello/{ddp.rank}", name)
        token = store.get(f"welcome/{name}").decode()  # waits for rank 0's reply
        store.set(f"{token}/joined/{ddp.rank}", "1")
    return dist.PrefixStore(f"{token}/", store)


@contextmanager
def process_group(ddp: Distributed, device: torch.device) -> Iterator[torch.device]:
    """Init the process group (nccl on CUDA, gloo otherwise) and yield this rank's device;
    the group is destroyed on the way out, also on errors. A no-op for a single process."""
    if not ddp.active:
        yield device
        return
    if device.type == "mps":
        raise MnistlabError("distributed training supports cpu and cuda, not mps")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if ddp.local_rank >= count:  # NCCL needs one GPU per process
            raise MnistlabError(
                f"torchrun started process {ddp.local_rank} of this machine, but it has "
                f"{count} CUDA device{'s' * (count != 1)}: NCCL needs one GPU per process",
                hint=f"torchrun --nproc-per-node {count} (or --device cpu to train on the CPUs)",
            )
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    initialized_here = not dist.is_initialized()
    if initialized_here:
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = _round_store(ddp)
        if store is None:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=store, rank=ddp.rank, world_size=ddp.world)
    try:
        yield device
        if initialized_here:
            # Every rank finishes its last collective before any tears the group down; without
            # this, rank 0 exiting first could abort a peer still inside a gloo receive.
            dist.barrier()
    finally:
        if initialized_here:
            dist.destroy_process_group()
