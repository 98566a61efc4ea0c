"""The C library (fdgpu/backends/csrc/fused.c) trusts nothing and keeps nothing: every entry checks its arguments,
bad input to the Python entries is a clear ValueError (never a crash), the per-thread scratch is freed when its
thread exits, and the library is clean under AddressSanitizer, UndefinedBehaviorSanitizer and ThreadSanitizer.

Anything that could crash runs in a subprocess, so that a regression fails its test instead of killing pytest.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fdgpu.backends import _library

SOURCE = _library.SOURCES[0]  # csrc/fused.c
REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def _needs_library():
    if _library.library() is None:
        pytest.skip(f"the C library is unavailable: {_library.status()}")


def _compiler() -> str:
    cc = shutil.which(os.environ.get("CC", "")) if os.environ.get("CC") else (shutil.which("gcc")
                                                                                or shutil.which("cc"))
    if cc is None:
        pytest.skip("no C compiler (gcc/cc or $CC) to build the sanitizer builds of the C library")
    return cc


# ------------------------------------------------------------------------------------ bad input, clear errors
BAD_INPUT = '''
import torch, fdgpu
from fdgpu import reference
from fdgpu.backends import cpu
t = fdgpu.tables.ijg(50)[0]

def case(name, fn):
    try:
        result = fn()
        print(f"{name}: no error, returned {type(result).__name__}")
    except ValueError as e:
        print(f"{name}: ValueError: {e}")
    print(flush=True)

case("two channels", lambda: reference.forward(torch.rand(1, 2, 16, 16), t, t, "4:2:0"))
case("zero height", lambda: reference.forward(torch.rand(1, 3, 0, 16), t, t, "4:2:0"))
case("zero width", lambda: reference.forward(torch.rand(2, 1, 9, 0), t, None, "4:2:0"))
case("(4, 8) table", lambda: reference.forward(torch.rand(1, 3, 16, 16), t[:4], t, "4:2:0"))
case("per-image tables of another batch", lambda: reference.forward(torch.rand(2, 3, 16, 16), t.expand(3, 8, 8), t,
                                                                     "4:2:0"))
x = torch.rand(2, 3, 32, 29)  # the same luma planes at every subsampling, other chroma planes
for saved_at, used_at in (("4:4:4", "4:2:0"), ("4:2:0", "4:2:2"), ("4:2:2", "4:4:4")):
    state = reference.forward(x, t, t, saved_at, need_weight=True)[1]
    for mode in ("soft", "ste"):
        case(f"{saved_at} state at {used_at} {mode}",
             lambda: reference.backward(torch.rand(2, 3, 32, 29), state, used_at, mode))
    case(f"{saved_at} state at {used_at}, library",
         lambda: cpu.fused_backward(torch.rand(2, 3, 32, 29), state, used_at, "soft"))
    case(f"{saved_at} state at {used_at}, op", lambda: torch.ops.fdgpu.jpeg_backward(
        torch.rand(2, 3, 32, 29), x, t, t, state[0], state[1], used_at, "torch", "soft", False))
for backend in ("torch", "triton"):  # the Triton kernels (interpreted without a GPU) take no unchecked shape either
    case(f"two channels, {backend} op",
         lambda: torch.ops.fdgpu.jpeg(torch.rand(1, 2, 16, 16), t, t, "4:2:0", backend, "ste", False))
    case(f"zero height, {backend} op",
         lambda: torch.ops.fdgpu.jpeg(torch.rand(1, 3, 0, 16), t, t, "4:2:0", backend, "ste", False))
    case(f"grad of another shape, {backend} op", lambda: torch.ops.fdgpu.jpeg_backward(
        torch.rand(1, 3, 16, 8), torch.rand(1, 3, 16, 16), t, t, x[:0], x[:0], "4:2:0", backend, "ste", False))
tt = t.expand(1, 8, 8).contiguous()
for name, planes, sub in (("planes too small", (torch.zeros(1, 1, 16, 16), torch.zeros(1, 2, 2, 2)), "4:4:4"),
                          ("planes of 4:2:0 at 4:4:4", (torch.zeros(1, 1, 16, 16), torch.zeros(1, 2, 8, 8)), "4:4:4")):
    case(f"decode {name}, library", lambda: cpu.decode(*planes, (tt, tt, tt), sub, 16, 16))
gray = reference.forward(torch.rand(2, 1, 20, 20), t, None, "4:2:0", need_weight=True)[1]
case("state of another size", lambda: reference.backward(torch.rand(2, 1, 20, 28), gray, "4:2:0", "soft"))
case("library declines two channels", lambda: cpu.fused_forward(torch.rand(1, 2, 16, 16), t, t, "4:2:0"))
'''


def test_bad_input_is_a_clear_error_not_a_crash():
    """Shapes the pipeline does not take: a 2-channel input (read past a heap buffer in the library; killed the
    process through ``torch.ops.fdgpu.jpeg``), a 0-height or 0-width image (divided by zero), a backward given
    another subsampling's or size's saved state (read past its buffer). Each is a ValueError naming the argument."""
    _needs_library()
    r = _python(BAD_INPUT)
    assert r.returncode == 0, f"the process died (code {r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}"
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    want = {
        "two channels": "x: expected 1 (grayscale) or 3 (RGB) channels, got shape (1, 2, 16, 16)",
        "two channels, torch op": "x: expected 1 (grayscale) or 3 (RGB) channels",
        "two channels, triton op": "x: expected 1 (grayscale) or 3 (RGB) channels",
        "zero height, torch op": "x: expected N, H, W >= 1",
        "zero height, triton op": "x: expected N, H, W >= 1",
        "grad of another shape, torch op": "grad: expected the shape of x (1, 3, 16, 16), got (1, 3, 16, 8)",
        "grad of another shape, triton op": "grad: expected the shape of x (1, 3, 16, 16), got (1, 3, 16, 8)",
        "4:4:4 state at 4:2:0, op": "saved chroma quotients: expected a float tensor of shape (2, 2, 64, 2, 2)",
        "4:2:0 state at 4:2:2, op": "saved chroma quotients: expected a float tensor of shape (2, 2, 64, 4, 2)",
        "zero height": "x: expected N, H, W >= 1, got shape (1, 3, 0, 16)",
        "zero width": "x: expected N, H, W >= 1, got shape (2, 1, 9, 0)",
        "(4, 8) table": "luma_table: expected an (8, 8) or (1, 8, 8) tensor of steps, got shape (4, 8)",
        "per-image tables of another batch": "luma_table: expected an (8, 8) or (2, 8, 8) tensor",
        "4:4:4 state at 4:2:0 soft": "saved chroma quotients: expected a float tensor of shape (2, 2, 64, 2, 2)",
        "4:4:4 state at 4:2:0 ste": "saved chroma quotients: expected a float tensor of shape (2, 2, 64, 2, 2)",
        "4:4:4 state at 4:2:0, library": "saved chroma quotients: expected",
        "4:2:0 state at 4:2:2 soft": "saved chroma quotients: expected a float tensor of shape (2, 2, 64, 4, 2)",
        "4:2:0 state at 4:2:2, library": "saved chroma quotients: expected",
        "4:2:2 state at 4:4:4 soft": "saved chroma quotients: expected a float tensor of shape (2, 2, 64, 4, 4)",
        "state of another size": "saved luma quotients: expected a float tensor of shape (2, 1, 64, 3, 4)",
        "library declines two channels": "no error, returned NoneType",
        "decode planes too small, library": "no error, returned NoneType",  # (it read past them)
        "decode planes of 4:2:0 at 4:4:4, library": "no error, returned NoneType",
    }
    for name, message in want.items():
        assert name in lines, f"{name}: no result (the process stopped before it?)\n{r.stdout}\n{r.stderr[-2000:]}"
        assert message in lines[name], f"{name}: {lines[name]}"


# ------------------------------------------------------------------------------- the C entries' own checks
ENTRY_CHECKS = '''
import ctypes, sys
import torch
from fdgpu.backends import _library
lib = _library.bind(ctypes.CDLL(sys.argv[1])) if len(sys.argv) > 1 else _library.library()
fwd, bwd, err = lib[0], lib[1], lib[3]
n, ch, h, w, hs, vs = 2, 3, 37, 29, 2, 2
x, y, gx = (torch.rand(n, ch, h, w) for _ in range(3))
t = torch.full((8, 8), 10.0)
zy, zc = torch.empty(n, 1, 64, 6, 4), torch.empty(n, 2, 64, 3, 2)
P = lambda v: v.data_ptr()
F = dict(x=P(x), out=P(y), x_double=0, n=n, ch=ch, h=h, w=w, hs=hs, vs=vs, i0=0, i1=n, lt=P(t), ct=P(t),
         tables_double=0, table_stride=0, zy=P(zy), zc=P(zc), z_double=0, zy_len=zy.numel(), zc_len=zc.numel())
B = dict(g=P(x), gx=P(gx), dbl=0, n=n, ch=ch, h=h, w=w, hs=hs, vs=vs, i0=0, i1=n, zy=P(zy), zc=P(zc),
         zy_len=zy.numel(), zc_len=zc.numel())
cases = [
    ("ch", dict(ch=2)), ("ch", dict(ch=4)), ("ch", dict(ch=0)), ("n", dict(n=0, i1=0)), ("n", dict(n=-1, i1=0)),
    ("h, w", dict(h=0)), ("h, w", dict(w=0)), ("h, w", dict(h=-5)), ("h, w", dict(w=1 << 29)),
    ("n, ch, h, w", dict(n=1 << 30, h=1 << 28, w=1 << 28, i1=1)),
    ("hs, vs", dict(hs=3)), ("hs, vs", dict(hs=1, vs=2)), ("hs, vs", dict(hs=0, vs=0)),
    ("i0, i1", dict(i1=3)), ("i0, i1", dict(i0=-1)), ("i0, i1", dict(i0=2, i1=1)),
    ("zy", dict(zy_len=zy.numel() - 1)), ("zy", dict(hs=1, vs=1)), ("zc", dict(zc_len=zc.numel() + 64)),
    ("zc", dict(ch=1, zy_len=n * 64 * 5 * 4)),
]
fwd_only = [("x, out", dict(x=None)), ("x, out", dict(out=None)), ("lt, ct", dict(lt=None)), ("lt, ct", dict(ct=None)),
            ("tables_double", dict(tables_double=2)), ("table_stride", dict(table_stride=32)),
            ("z_double", dict(z_double=-1)), ("the float type flag", dict(x_double=2))]
bwd_only = [("g, gx", dict(g=None)), ("g, gx", dict(gx=None)), ("the float type flag", dict(dbl=3))]
enc, dec = lib[4], lib[5]
qy, qc = torch.zeros(n, 1, 48, 32), torch.zeros(n, 2, 24, 16)
E = dict(x=P(x), x_double=0, n=n, ch=ch, h=h, w=w, hs=hs, vs=vs, i0=0, i1=n, lt=P(t), ct=P(t), tables_double=0,
         table_stride=0, qy=P(qy), qc=P(qc), qy_len=qy.numel(), qc_len=qc.numel())
D = dict(qy=P(qy), qc=P(qc), q_double=0, out=P(y), n=n, ch=ch, h=h, w=w, hs=hs, vs=vs, i0=0, i1=n, ly=P(t), lcb=P(t),
         lcr=P(t), tables_double=0, table_stride=0, qy_len=qy.numel(), qc_len=qc.numel())
halves = [("qy", dict(qy_len=qy.numel() - 1)), ("qy", dict(hs=1, vs=1)), ("qc", dict(qc_len=2 * 64)),
          ("qc", dict(ch=1, qy_len=n * 40 * 32)), ("ch", dict(ch=2))]
size, sizes = lib[7], torch.zeros(n, 5, dtype=torch.int64)
bounds, bad_bounds = (ctypes.c_double * 3)(0.0, 1.0, 0.0), (ctypes.c_double * 3)(1.0, 0.0, 0.0)
S = dict(x=P(x), xs=None, x_double=0, n=n, ch=ch, h=h, w=w, hs=hs, vs=vs, i0=0, i1=n, lt=P(t), ct=P(t), tables_double=0,
         table_stride=0, optimize=1, out=P(sizes), out_len=sizes.numel(), check=bounds)
size_only = [("x, out", dict(x=None)), ("x, out", dict(out=None)), ("out_len", dict(out_len=5 * n - 1)),
             ("xs", dict(xs=(ctypes.c_int64 * 4)(ch * h * w, h * w, w, -1))),
             ("lt, ct", dict(lt=None)), ("lt, ct", dict(ct=None)), ("tables_double", dict(tables_double=2)),
             ("table_stride", dict(table_stride=32)), ("optimize", dict(optimize=2)), ("check", dict(check=bad_bounds)),
             ("the float type flag", dict(x_double=2))]
print("valid forward", fwd(*F.values()), "valid backward", bwd(*B.values()), "valid encode", enc(*E.values()),
      "valid decode", dec(*D.values()), "valid size", size(*S.values()))
for name, change in cases + fwd_only:
    print("forward", name, "->", fwd(*{**F, **change}.values()), err().decode(), flush=True)
for name, change in halves:
    print("encode", name, "->", enc(*{**E, **change}.values()), err().decode(), flush=True)
    print("decode", name, "->", dec(*{**D, **change}.values()), err().decode(), flush=True)
for name, change in [c for c in cases if c[0] not in ("zy", "zc")] + size_only:
    print("size", name, "->", size(*{**S, **change}.values()), err().decode(), flush=True)
for name, change in cases + bwd_only:
    print("backward", name, "->", bwd(*{**B, **{k: v for k, v in change.items() if k in B}}.values()), err().decode(),
          flush=True)
'''


def _check_entry_output(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"the process died (code {r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}"
    lines = r.stdout.splitlines()
    assert lines[0] == "valid forward 0 valid backward 0 valid encode 0 valid decode 0 valid size 0", lines[0]
    assert len(lines) == 1 + 2 * 20 + 8 + 3 + 2 * 5 + 16 + 11, r.stdout
    for line in lines[1:]:
        entry, rest = line.split(" ", 1)
        name, result = rest.split(" -> ")
        code, message = result.split(" ", 1)
        assert code == "3" and message.startswith(name + ":"), line


def test_every_c_entry_checks_its_arguments():
    """fdgpu_forward, fdgpu_backward and fdgpu_jpeg_size called directly with each argument wrong in turn (channels,
    sizes, batch and image range, chroma factors, NULL pointers, flags, saved-state and output lengths, check
    bounds), and fdgpu_encode / fdgpu_decode with coefficient planes of another size or subsampling: each call
    returns 3 and fdgpu_error() names the argument; nothing is read or written."""
    _needs_library()
    _check_entry_output(_python(ENTRY_CHECKS))


# ------------------------------------------------------------------------------------ scratch at thread exit
THREADS = '''
import os, sys, threading, torch, fdgpu
torch.set_num_threads(1)
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
wide, img = torch.rand(1, 3, 1, 87000), torch.rand(1, 3, 128, 128)
def work():
    fdgpu.jpeg(wide, 50, validate=False)
    x = img.clone().requires_grad_()
    fdgpu.jpeg(x, 50, backward="soft", validate=False).sum().backward()
def threads(k):
    for _ in range(k):
        t = threading.Thread(target=work)
        t.start()
        t.join()
threads(20)  # warm up: the library, torch's and the allocator's own per-thread state
before = rss_mb()
threads(int(sys.argv[1]))
print(rss_mb() - before)
'''


def test_scratch_buffers_are_freed_when_threads_exit():
    """150 short-lived threads, each running a forward on a wide image (a few MB of scratch) and a ``soft``
    backward: the resident memory grows by less than 100 MB (each thread's scratch used to stay allocated after
    the thread exited: +1074 MB for 200 such threads, +32 MB with the scratch freed)."""
    _needs_library()
    r = _python(THREADS, "150")
    assert r.returncode == 0, r.stderr[-3000:]
    grown = float(r.stdout.split()[-1])
    assert grown < 100, f"resident memory grew by {grown:.0f} MB over 150 short-lived threads"


# ------------------------------------------------------------------------------------------------- sanitizers
FUZZ = '''
import sys, threading
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
import fdgpu
from fdgpu import reference, tables
from fdgpu.backends import _library, cpu

_library._lib, _library._state = _library.bind(__import__("ctypes").CDLL(sys.argv[1])), "loaded"
torch.set_num_threads(2)  # batches over INLINE_VALUES also run on the workers


@st.composite
def cases(draw):
    side = st.one_of(st.integers(1, 24), st.integers(25, 140))
    return dict(n=draw(st.integers(1, 3)), ch=draw(st.sampled_from([1, 3])), h=draw(side), w=draw(side),
                sub=draw(st.sampled_from(list(fdgpu.SUBSAMPLINGS))),
                dtype=draw(st.sampled_from([torch.float32, torch.float64])),
                tdtype=draw(st.sampled_from([torch.float32, torch.float64])),
                per_image=draw(st.booleans()), steps=draw(st.sampled_from(["ijg", "small", "wide", "fractional"])),
                special=draw(st.sampled_from([None, float("nan"), float("inf"), -float("inf"), -0.5, 1.5])),
                need=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 31 - 1)))


@settings(max_examples=int(sys.argv[2]), deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(cases())
def check(c):
    g = torch.Generator().manual_seed(c["seed"])
    n, ch, h, w = c["n"], c["ch"], c["h"], c["w"]
    x = torch.rand(n, ch, h, w, generator=g, dtype=c["dtype"])
    if c["special"] is not None:
        x[-1, 0, h // 2, w // 3] = c["special"]
    shape = (n, 8, 8) if c["per_image"] else (8, 8)
    if c["steps"] == "ijg":
        lt, ct = tables.ijg(float(torch.randint(1, 101, (), generator=g)))
        lt, ct = (t.expand(shape).contiguous() for t in (lt, ct))
    else:
        hi = {"small": 256, "wide": 32769, "fractional": 300}[c["steps"]]
        lt, ct = (torch.randint(1, hi, shape, generator=g).double() for _ in range(2))
        if c["steps"] == "fractional":
            lt = lt + 0.5
    lt, ct = lt.to(c["tdtype"]), ct.to(c["tdtype"])
    got = cpu.fused_forward(x, lt, ct, c["sub"], need_weight=c["need"])
    if c["steps"] == "fractional":
        assert got is None
        return
    ref = reference.forward(x, lt, ct, c["sub"], need_weight=c["need"])
    assert torch.equal(got[0], ref[0]), c
    public = fdgpu.requantize(x, lt, ct, subsampling=c["sub"], validate=False)  # the public API, same library
    assert torch.equal(public, ref[0]), c
    if c["seed"] % 3 == 0:  # the halves (fdgpu_encode / fdgpu_decode) against the torch reference's
        kw = dict(luma_table=lt, chroma_table=ct, subsampling=c["sub"], validate=False)
        coefs = fdgpu.encode(x, backend="cpu", **kw)
        want = fdgpu.encode(x, backend="torch", **kw)
        assert all(torch.equal(a, b) for a, b in zip(coefs.components, want.components)), c
        assert torch.equal(fdgpu.decode(coefs, backend="cpu"), fdgpu.decode(want, backend="torch")), c
    if c["steps"] != "wide" and c["seed"] % 2:  # the entropy coder (csrc/entropy.c) against the torch coder
        kw = dict(luma_table=lt, chroma_table=ct, subsampling=c["sub"], optimize=c["seed"] % 4 == 1, validate=False)
        got_size = fdgpu.jpeg_size(x, backend="cpu", **kw)  # fdgpu_jpeg_size: images to sizes in the library
        assert torch.equal(got_size, fdgpu.jpeg_size(x, backend="torch", **kw)), c
        x_cl = x.contiguous(memory_format=torch.channels_last)  # read in place through its strides
        assert torch.equal(fdgpu.jpeg_size(x_cl, backend="cpu", **kw), got_size), c
        if c["special"] is None or 0 <= c["special"] <= 1:  # its value check of validate=True on the same read
            assert torch.equal(fdgpu.jpeg_size(x, backend="cpu", **{**kw, "validate": True}), got_size), c
    grad = torch.randn(n, ch, h, w, generator=g, dtype=c["dtype"])
    for mode, state in (("ste", None), ("soft", got[1] if c["need"] else None)):
        if mode == "soft" and state is None:
            continue
        gx = cpu.fused_backward(grad, state, c["sub"], mode)
        want = reference.backward(grad, state, c["sub"], mode)
        assert gx is not None and gx.shape == grad.shape and bool(torch.isfinite(gx).all()), c
        rel = float((gx - want).norm() / want.norm().clamp_min(1e-30))  # the same sums in another order
        assert rel < (1e-10 if c["dtype"] == torch.float64 else 1e-4), (c, mode, rel)


check()
# four threads at once, each its first soft backward on a fresh thread (scratch and DCT table set-up)
errors = []


def soft_step():
    try:
        x = torch.rand(2, 3, 37, 29, requires_grad=True)
        fdgpu.jpeg(x, 50, backward="soft").sum().backward()
        assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    except Exception as e:  # a thread's exception would only be printed
        errors.append(repr(e))


runs = [threading.Thread(target=soft_step) for _ in range(4)]
for r in runs:
    r.start()
for r in runs:
    r.join()
assert not errors, errors
print("fuzz done", flush=True)
'''

TSAN_DRIVER = r'''
#include FUSED
#include <pthread.h>
#include <stdio.h>
/* Four threads start their first forward, soft backward and file size at once: the DCT table, the per-thread
   scratch. */
enum { N = 2, C = 3, H = 37, W = 29 };
static void *work(void *arg)
{
    (void)arg;
    const int hs = 2, vs = 2, hp = 48, wp = 32;
    const long xs = (long)N * C * H * W, zy_len = (long)N * 64 * (hp / 8) * (wp / 8);
    const long zc_len = (long)N * 2 * 64 * (hp / 8 / vs) * (wp / 8 / hs);
    float *x = malloc(sizeof(float) * xs), *y = malloc(sizeof(float) * xs), *gx = malloc(sizeof(float) * xs);
    float *zy = malloc(sizeof(float) * zy_len), *zc = malloc(sizeof(float) * zc_len), table[64];
    for (long i = 0; i < xs; i++)
        x[i] = (float)((i * 2654435761u) % 1000) / 999.0f;
    for (int i = 0; i < 64; i++)
        table[i] = (float)(1 + i % 50);
    int rc = fdgpu_forward(x, y, 0, N, C, H, W, hs, vs, 0, N, table, table, 0, 0, zy, zc, 0, zy_len, zc_len);
    rc |= fdgpu_backward(y, gx, 0, N, C, H, W, hs, vs, 0, N, zy, zc, zy_len, zc_len);
    int64_t sizes[N * 5];
    double check[3] = {0.0, 1.0, 0.0};
    const int64_t strides[4] = {(int64_t)C * H * W, 1, (int64_t)W * C, C}; /* x read as if channels-last */
    rc |= fdgpu_jpeg_size(x, strides, 0, N, C, H, W, hs, vs, 0, N, table, table, 0, 0, 1, sizes, N * 5, check);
    free(x), free(y), free(gx), free(zy), free(zc);
    return (void *)(long)rc;
}
int main(void)
{
    pthread_t t[4];
    long bad = 0;
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, work, NULL);
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        bad |= (long)rc;
    }
    printf("return codes: %s\n", bad ? "not all 0" : "all 0");
    return bad != 0;
}
'''

_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-ffp-contract=off", "-std=gnu11", "-pthread"]


def _runtime(cc: str, name: str) -> str:
    path = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f"{cc} has no {name} (the sanitizer runtime)")
    return path


def _sanitizer_reports(text: str):
    return [line for line in text.splitlines()
            if "Sanitizer" in line and ("ERROR" in line or "WARNING" in line) or "runtime error:" in line]


def test_asan_ubsan_build_under_generated_inputs(tmp_path):
    """An AddressSanitizer + UndefinedBehaviorSanitizer build of the library, driven by hypothesis through the
    Python entries (the round trip, its ste/soft backward, the encoder/decoder halves and the entropy coder; odd and
    larger-than-one-stack sizes, every subsampling, float32/float64 inputs and tables, shared and per-image tables,
    steps up to 32768 and fractional ones, NaN/Inf/out-of-range samples, saved quotients, four threads at once) and
    by the round trip's C entries with each argument wrong: no sanitizer report, the same results as the torch
    reference's."""
    cc = _compiler()
    asan = _runtime(cc, "libasan.so")
    lib = tmp_path / "fused-asan.so"
    subprocess.run([cc, *_FLAGS, "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fPIC", "-shared",
                    *map(str, _library.SOURCES), "-o", str(lib), "-lm"], check=True, capture_output=True, timeout=300)
    env = {"LD_PRELOAD": asan, "ASAN_OPTIONS": "detect_leaks=0:alloc_dealloc_mismatch=0:abort_on_error=0",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    r = _python(FUZZ, str(lib), "120", env=env, timeout=600)
    reports = _sanitizer_reports(r.stderr)
    assert r.returncode == 0 and not reports and "fuzz done" in r.stdout, \
        f"code {r.returncode}: {reports}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    r = _python(ENTRY_CHECKS, str(lib), env=env)
    assert not _sanitizer_reports(r.stderr), r.stderr[-4000:]
    _check_entry_output(r)


def test_tsan_build_threads_starting_at_once(tmp_path):
    """A ThreadSanitizer build of the library in a C driver: four threads make their first forward, soft backward and
    file size at once (the lazily built DCT table was a data race; the per-thread scratch). No report."""
    cc = _compiler()
    _runtime(cc, "libtsan.so")
    exe = tmp_path / "driver"
    (tmp_path / "driver.c").write_text(TSAN_DRIVER)
    subprocess.run([cc, *_FLAGS, "-fsanitize=thread", f'-DFUSED="{SOURCE}"', str(tmp_path / "driver.c"),
                    *map(str, _library.SOURCES[1:]), "-o", str(exe), "-lm"], check=True, capture_output=True,
                   timeout=300)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TSAN_OPTIONS": "halt_on_error=1"})
    assert r.returncode == 0 and not _sanitizer_reports(r.stderr) and "all 0" in r.stdout, \
        f"code {r.returncode}:\n{r.stdout}\n{r.stderr[-4000:]}"
