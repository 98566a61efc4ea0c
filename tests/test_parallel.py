"""The CPU path's thread policy (fdgpu/reference/parallel.py): chunks on single-threaded workers.

What must hold whatever the machine's load: the same bits as a single-threaded run, the caller's grad/inference
modes inside the workers, the caller's thread count unchanged (and that of threads created afterwards), errors
propagated, and a working layer in a child process forked after the pool started (DataLoader workers).
"""
import multiprocessing as mp
import threading

import pytest
import torch

import fdgpu
from fdgpu.reference import jpeg as ref_jpeg
from fdgpu.reference import parallel

CPU = torch.device("cpu")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_map_chunks_order_results_and_workers(two_threads):
    seen = parallel.map_chunks(lambda i: (i, threading.current_thread().name, torch.get_num_threads()),
                               [(i,) for i in range(7)], CPU)
    assert [s[0] for s in seen] == list(range(7))
    assert all(name.startswith("fdgpu-cpu") and n == 1 for _, name, n in seen)


def test_single_call_runs_on_a_single_threaded_worker(two_threads):
    seen = parallel.map_chunks(lambda: (threading.current_thread().name, torch.get_num_threads()), [()], CPU)
    assert seen[0][0].startswith("fdgpu-cpu") and seen[0][1] == 1
    assert torch.get_num_threads() == 2


def test_thread_counts_of_caller_and_new_threads_unchanged(two_threads):
    if parallel._pool is not None:  # a new pool: its workers' set_num_threads(1) must not leak into new threads
        parallel._pool.shutdown()
    parallel._forget_pool()
    parallel.map_chunks(lambda i: i, [(1,), (2,), (3,)], CPU)
    assert torch.get_num_threads() == 2
    later = []
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert later == [2]


def test_grad_and_inference_modes_reach_workers(two_threads):
    modes = lambda: (torch.is_grad_enabled(), torch.is_inference_mode_enabled())  # noqa: E731
    with torch.no_grad():
        assert parallel.map_chunks(modes, [(), ()], CPU) == [(False, False)] * 2
    with torch.inference_mode():
        assert parallel.map_chunks(modes, [(), ()], CPU) == [(False, True)] * 2
    assert parallel.map_chunks(modes, [(), ()], CPU) == [(True, False)] * 2


def test_other_devices_run_the_plain_loop(two_threads):
    names = parallel.map_chunks(lambda: threading.current_thread().name, [(), ()], torch.device("meta"))
    assert names == [threading.current_thread().name] * 2


def test_errors_propagate(two_threads):
    def boom(i):
        if i == 2:
            raise ValueError("chunk 2 failed")
        return i
    with pytest.raises(ValueError, match="chunk 2 failed"):
        parallel.map_chunks(boom, [(i,) for i in range(4)], CPU)



@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_chunked_pool_equals_one_thread(two_threads, monkeypatch, subsampling, backend):
    # Small chunks so that a small batch is spread over several workers; forward and both backward modes; the
    # torch forward's chunks, or the C library's (fdgpu/backends/cpu.py) image ranges.
    if not fdgpu.backends.get(backend).available():
        pytest.skip(f"backend {backend!r}: {fdgpu.backends.get(backend).unavailable()}")
    monkeypatch.setattr(ref_jpeg, "CHUNK_VALUES", 3 * 24 * 40)
    monkeypatch.setattr(fdgpu.backends.cpu, "INLINE_VALUES", 1)
    x = torch.rand(9, 3, 24, 37, generator=torch.Generator().manual_seed(0))
    g = torch.rand(9, 3, 24, 37, generator=torch.Generator().manual_seed(1))
    assert len(ref_jpeg._chunks(9, x[0].numel())) > 2
    results = {}
    for threads in (2, 1):
        torch.set_num_threads(threads)
        out = {}
        for mode in ("ste", "soft", "exact"):
            xr = x.clone().requires_grad_(True)
            y = fdgpu.jpeg(xr, 50, subsampling=subsampling, backward=mode, backend=backend)
            (y * g).sum().backward()
            out[mode] = (y.detach(), xr.grad)
        results[threads] = out
    for mode in ("ste", "soft", "exact"):
        assert torch.equal(results[2][mode][0], results[1][mode][0]), mode
        assert torch.equal(results[2][mode][1], results[1][mode][1]), mode


def _child(q):
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    q.put(fdgpu.jpeg(x, 75).sum().item())


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")
def test_layer_works_in_forked_child(two_threads, monkeypatch):
    monkeypatch.setattr(ref_jpeg, "CHUNK_VALUES", 2 * 3 * 16 * 16)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = fdgpu.jpeg(x, 75).sum().item()  # starts the pool in the parent
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    p.join(timeout=120)
    if p.is_alive():
        p.kill()
        pytest.fail("the layer hung in a forked child (the parent's worker threads do not exist there)")
    assert p.exitcode == 0
    assert q.get(timeout=5) == expected
