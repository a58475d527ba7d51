"""Data-parallel training on one node: the rank of a process, the world size of a job, the launcher.

A job of ``world_size`` processes trains one model: every *rank* holds a replica on its own device
(``cuda:LOCAL_RANK``; NCCL) or on the CPU (gloo), reads its slice of every global batch and
averages gradients with :class:`torch.nn.parallel.DistributedDataParallel` (see
:func:`segdiff.models.training.train`). ``world_size == 1`` is the plain single process, with no process
group at all.

:func:`launch` starts the ranks like ``torchrun --standalone`` does: fresh Python processes (not
forks, and without re-running the caller's ``__main__``, which a Snakemake ``script:`` does not
guard), the parent hosting the rendezvous store on 127.0.0.1 and a free port. The first rank to
fail stops the others and its exception is raised in the parent; rank 0's return value is the
launcher's. A process already started by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set)
joins that job instead of starting processes.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Rank", "current_rank", "job_world_size", "local_batch_size", "under_torchrun", "should_launch",
           "is_main_process", "launch", "TIMEOUT"]

log = logging.getLogger(__name__)

#: how long a collective (and the rendezvous) waits for the other ranks before failing
TIMEOUT = timedelta(minutes=30)

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def local_batch_size(batch_size: int, world_size: int) -> int:
    """The rows each rank reads of a global batch.

    Args:
        batch_size: the global batch size.
        world_size: the number of ranks.

    Returns:
        ``batch_size / world_size``.

    Raises:
        ValueError: ``world_size`` < 1, or ``batch_size`` is not a multiple of ``world_size``.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if batch_size % world_size:
        raise ValueError(f"the global batch_size {batch_size} is not divisible by the world_size {world_size} "
                         f"(every rank reads batch_size / world_size slices)")
    return batch_size // world_size


@dataclass(frozen=True)
class Rank:
    """One process of a data-parallel job: its ``rank`` in ``0 .. world_size - 1`` and the
    ``device`` it computes on (``cuda:LOCAL_RANK`` or the CPU). ``Rank()`` is the single process.

    The collectives below (:meth:`mean`, :meth:`max`, :meth:`barrier`, :meth:`object_from_main`) are
    no-ops for a single process, so code written for a rank runs unchanged without a process group.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        if not isinstance(self.world_size, int) or self.world_size < 1:
            raise ValueError(f"world_size must be an integer >= 1, got {self.world_size!r}")
        if not isinstance(self.rank, int) or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in 0 .. {self.world_size - 1}, got {self.rank!r}")
        object.__setattr__(self, "device", torch.device(self.device))

    @property
    def distributed(self) -> bool:
        """More than one process (a process group is in use)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and whose result is kept."""
        return self.rank == 0

    def rows(self, local: int) -> slice:
        """This rank's rows of a global batch made of ``world_size`` local batches of ``local`` rows."""
        return slice(self.rank * local, (self.rank + 1) * local)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the ranks (a new tensor; ``value`` itself for a single process)."""
        if not self.distributed:
            return value
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.world_size

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over the ranks, differentiable: the gradient reaching each rank's
        ``value`` is the sum of the ranks' output gradients (``value`` itself for a single process)."""
        return _SumOverRanks.apply(value) if self.distributed else value

    def max(self, value: torch.Tensor) -> torch.Tensor:
        """The maximum of ``value`` over the ranks (``value`` itself for a single process)."""
        if not self.distributed:
            return value
        top = value.detach().clone()
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        return top

    def object_from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object, e.g. a training state on the CPU) on every rank."""
        if not self.distributed:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.distributed:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward is the all-reduce (sum) of the output gradients."""

    @staticmethod
    def forward(ctx, value: torch.Tensor) -> torch.Tensor:
        total = value.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def _local_device(device: torch.device | str, local_rank: int) -> torch.device:
    device = torch.device(device)
    return torch.device("cuda", local_rank) if device.type == "cuda" else device


def current_rank(device: torch.device | str = "cpu") -> Rank:
    """The :class:`Rank` of this process: from the initialised process group (its device
    ``cuda:LOCAL_RANK`` when ``device`` is CUDA), else the single process on ``device``."""
    if not (dist.is_available() and dist.is_initialized()):
        return Rank(0, 1, torch.device(device))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    return Rank(rank, world_size, _local_device(device, int(os.environ.get("LOCAL_RANK", rank))))


def job_world_size(compute: dict) -> int:
    """Processes of a training job from the workflow's ``compute`` config: ``compute["gpus"]`` when it
    is above 1 and the job runs on CUDA (``device: cuda``, or ``auto`` where CUDA is available), one
    process per GPU; 1 otherwise (a single GPU, or the CPU, where data parallelism buys nothing).

    The configured ``batch_size`` stays the global batch: each of the N processes reads 1/N of it;
    ``compute.loader_workers`` and ``prefetch`` apply to each process (each feeds its own GPU), and
    the job's CPU threads are shared among them.
    """
    gpus, device = int(compute.get("gpus", 0)), compute.get("device", "auto")
    on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return gpus if gpus > 1 and on_cuda else 1


def under_torchrun() -> bool:
    """Whether ``torchrun`` (or another launcher) started this process as one rank of a job."""
    return all(name in os.environ for name in _TORCHRUN_ENV)


def should_launch(world_size: int) -> bool:
    """Whether a caller asking for ``world_size`` processes must go through :func:`launch`: more than
    one process (or a ``torchrun`` rank), and no process group yet (i.e. not already a rank)."""
    return (world_size > 1 or under_torchrun()) and not (dist.is_available() and dist.is_initialized())


def is_main_process() -> bool:
    """False on the ranks other than 0 of a job (those must not write results), True otherwise."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def _check_devices(world_size: int, device: torch.device) -> None:
    if device.type == "cuda" and torch.cuda.device_count() < world_size:
        raise ValueError(f"{world_size} processes need {world_size} CUDA devices, {torch.cuda.device_count()} visible")


def launch(fn: Callable[..., Any], world_size: int, device: torch.device | str, /, *args: Any,
           timeout: timedelta | None = None, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` on each of ``world_size`` ranks inside an initialised process group
    (NCCL with one ``cuda:LOCAL_RANK`` per rank on CUDA, gloo on the CPU) and return rank 0's result.

    ``fn`` and the arguments are pickled (``fn`` by reference: a module-level function) and the
    result travels back through a temporary file. Each rank gets ``1 / world_size`` of this process's
    torch threads. When a rank fails, the others are stopped and its exception is raised here, with
    the rank's traceback as a note.

    Under ``torchrun`` this process is one of the ranks: it joins the job's process group (from the
    environment, whatever ``world_size`` says), runs ``fn`` and returns its own result; callers on
    ranks other than 0 must not write files (:func:`is_main_process`). Inside an initialised
    process group ``fn`` simply runs here.

    Args:
        fn: a module-level function (pickled by reference).
        world_size: the number of ranks to start.
        device: ``cuda`` (one device per rank) or ``cpu``.
        *args: positional arguments of ``fn``.
        timeout: bound on each collective (default :data:`TIMEOUT`).
        **kwargs: keyword arguments of ``fn``.

    Returns:
        Rank 0's result (under ``torchrun``: this rank's).

    Raises:
        ValueError: ``world_size`` < 1, or fewer CUDA devices than ranks.
    """
    device = torch.device(device)
    timeout = TIMEOUT if timeout is None else timeout
    if dist.is_available() and dist.is_initialized():
        return fn(*args, **kwargs)
    if under_torchrun():
        return _join_torchrun(fn, world_size, device, timeout, args, kwargs)
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    _check_devices(world_size, device)
    threads = max(1, torch.get_num_threads() // world_size)
    store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, timeout=timeout, wait_for_workers=False)
    with tempfile.TemporaryDirectory(prefix="segdiff-ranks-") as tmp:
        folder = Path(tmp)
        (folder / "sys_path.json").write_text(json.dumps(sys.path))
        call = {"fn": fn, "args": args, "kwargs": kwargs, "device": device, "world_size": world_size,
                "timeout": timeout, "threads": threads}
        (folder / "call.pkl").write_bytes(pickle.dumps(call))
        bootstrap = ("import json, sys; sys.path[:] = json.load(open(sys.argv[1] + '/sys_path.json')); "
                     "from segdiff.core.distributed import _worker; _worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))")
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "WORLD_SIZE": str(world_size),
               "LOCAL_WORLD_SIZE": str(world_size), "OMP_NUM_THREADS": str(threads)}
        processes: list[subprocess.Popen] = []
        try:
            for rank in range(world_size):
                processes.append(subprocess.Popen([sys.executable, "-c", bootstrap, str(folder), str(rank), str(os.getpid())],
                                                  env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}))
            codes = _wait(processes)
        finally:
            _stop(processes)
            del store
        if any(c not in (None, 0) for c in codes):
            _raise_first_failure(folder, codes)
        return torch.load(folder / "result.pt", weights_only=False)  # written by rank 0 of this very call


def _wait(processes: list[subprocess.Popen]) -> list[int | None]:
    """The exit codes once every rank ended well or one failed (``None``: still running then)."""
    while True:
        codes = [p.poll() for p in processes]
        if all(c == 0 for c in codes) or any(c not in (None, 0) for c in codes):
            return codes
        time.sleep(0.05)


def _stop(processes: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """Terminate the ranks still running (the others of a failed job), then kill the stubborn ones."""
    for p in processes:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in processes:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _raise_first_failure(folder: Path, codes: list[int | None]) -> None:
    """Raise the exception of the rank that failed first (the others' errors are consequences)."""
    reports = []
    for path in folder.glob("error-*.pkl"):
        try:
            reports.append(pickle.loads(path.read_bytes()))
        except Exception as err:  # an exception that does not unpickle: its text is still in the report
            log.warning("could not read %s: %s", path, err)
    world_size = len(codes)
    if not reports:
        rank, code = next((r, c) for r, c in enumerate(codes) if c not in (None, 0))
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise RuntimeError(f"rank {rank} of {world_size} ended with {how} and no Python error (killed? out of memory?)")
    when, rank, error, text = min(reports, key=lambda r: r[0])
    if error is None:
        raise RuntimeError(f"rank {rank} of {world_size} failed:\n{text}")
    error.add_note(f"raised on rank {rank} of {world_size}:\n{text}")
    raise error


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGTERM when the launching process dies (no orphaned ranks writing checkpoints)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        sys.exit(1)


def _worker(folder: str, rank: int, parent: int) -> None:
    """A rank started by :func:`launch` (process ``parent``): join the group, run the call, leave
    rank 0's result or this rank's error in ``folder``."""
    folder_path = Path(folder)
    try:
        _die_with_parent(parent)
        call = pickle.loads((folder_path / "call.pkl").read_bytes())  # imports the modules of the call
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank} %(name)s %(levelname)s %(message)s")
        torch.set_num_threads(call["threads"])
        device, world_size = _local_device(call["device"], rank), call["world_size"]
        if device.type == "cuda":
            torch.cuda.set_device(device)
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False,
                              timeout=call["timeout"])
        dist.init_process_group(_backend(device), store=store, rank=rank, world_size=world_size, timeout=call["timeout"])
        result = call["fn"](*call["args"], **call["kwargs"])
        if rank == 0:
            torch.save(result, folder_path / "result.tmp")
            os.replace(folder_path / "result.tmp", folder_path / "result.pt")
        dist.destroy_process_group()
    except BaseException as err:  # noqa: BLE001 - every failure, KeyboardInterrupt included, must reach the parent
        text = traceback.format_exc()
        try:
            report = pickle.dumps((time.time(), rank, err, text))
            pickle.loads(report)
        except Exception:
            report = pickle.dumps((time.time(), rank, None, text))
        (folder_path / f"error-{rank}.tmp").write_bytes(report)
        os.replace(folder_path / f"error-{rank}.tmp", folder_path / f"error-{rank}.pkl")
        sys.stderr.flush()
        os._exit(1)  # no teardown: the other ranks may be stuck in a collective with this one


def _join_torchrun(fn: Callable[..., Any], world_size: int, device: torch.device, timeout: timedelta,
                   args: tuple, kwargs: dict) -> Any:
    """Run ``fn`` as this ``torchrun`` rank, in the job's process group (created and torn down here)."""
    env_world_size, local_rank = int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if env_world_size != world_size:
        log.warning("torchrun started %d processes; using them (asked for %d)", env_world_size, world_size)
    local = _local_device(device, local_rank)
    if local.type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(_backend(local), init_method="env://", timeout=timeout)
    try:
        return fn(*args, **kwargs)
    finally:
        dist.destroy_process_group()
