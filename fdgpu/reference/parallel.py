"""How the CPU path uses threads: whole chunks of the batch on single-threaded workers, never ~40 barriers per chunk.

PyTorch runs every large elementwise op as its own OpenMP parallel region: the pipeline's ~40 passes per chunk are
~40 fork/join barriers, and each barrier waits for the slowest thread. When another process holds one of the cores
(a second experiment, data-loader workers, a shared server), the descheduled OpenMP thread stalls every one of them
and the forward collapses: on the 2-core machine, batch 32 x 224^2 at q75 with two small torch loops running beside
it, 2 OpenMP threads took 55 ms per image where one thread took 4.4 ms (``benchmarks/test_bench_cpu.py``'s
contention case measures it).

Here the batch is split into chunks and the chunks are handed to a small pool of worker threads, each running its
ops single-threaded (``torch.set_num_threads(1)`` is per thread under OpenMP). A worker that is descheduled delays
only its own chunk while the others keep taking chunks from the queue, so the layer is never slower than on one
thread and uses every core it gets. The pool has as many workers as ``torch.get_num_threads()`` in the calling
thread (so ``torch.set_num_threads`` keeps its meaning) and is rebuilt in a child process after ``fork`` (threads do
not survive it, e.g. in DataLoader workers).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, TypeVar

import torch

T = TypeVar("T")

_lock = threading.Lock()
_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0
_WORKER = "fdgpu-cpu"


def _start_worker(ready: threading.Barrier) -> None:
    # torch.get_num_threads() runs the thread's lazy OpenMP initialisation first (it would otherwise reset the count
    # at the first parallel op); set_num_threads(1) is then per thread under OpenMP (and MKL's local count).
    torch.get_num_threads()
    torch.set_num_threads(1)
    ready.wait()


def _get_pool(size: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            ready = threading.Barrier(size + 1)
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=_WORKER, initializer=_start_worker,
                                       initargs=(ready,))
            _pool_size = size
            for _ in range(size):  # start every worker now (the executor starts them one per submit)
                _pool.submit(int)
            ready.wait()
            # set_num_threads also stores a process-wide default that threads created later start from: give it
            # back the caller's count, so the user's own threads are not made single-threaded by ours.
            torch.set_num_threads(size)
        return _pool


def _forget_pool() -> None:  # in a forked child the parent's worker threads do not exist
    global _pool, _pool_size, _lock
    _pool, _pool_size, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def workers() -> int:
    """How many chunks run at once: the calling thread's ``torch.get_num_threads()``."""
    return max(1, torch.get_num_threads())


def map_chunks(fn: Callable[..., T], args: Sequence[tuple], device: torch.device) -> List[T]:
    """``[fn(*a) for a in args]``, the calls spread over single-threaded workers (in order of ``args``).

    Only for CPU tensors (``device``): on other devices, and while torch.compile traces, it is the plain loop (a
    CUDA stream is per thread; dynamo does not trace into threads). Runs inline when the caller has one thread or
    is itself a worker (no nesting). A single call goes to one worker too: inline, a 32x32 image's call took 124 ms
    instead of 0.8 with one busy process beside it (some of its ops are still OpenMP regions), where the hand-off
    costs two thread wake-ups (~0.2 ms quiet); and setting the calling thread to one thread instead costs ~0.4 ms
    per call, because torch.set_num_threads also rebuilds torch's pthreadpool (benchmarks/test_bench_contention.py).
    The caller's grad and inference modes are carried into the workers (they are thread-local); exceptions
    propagate.
    """
    n = workers()
    if (device.type != "cpu" or n <= 1 or threading.current_thread().name.startswith(_WORKER)
            or torch.compiler.is_compiling()):
        return [fn(*a) for a in args]
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def call(a):
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(*a)

    return list(_get_pool(n).map(call, args))
