"""Quantization steps from 2^28 up: every backend computes the same bits as the torch reference.

The input checks accept any finite step >= 1, and a step that large quantizes every coefficient to 0 (jfdctint's
output of 8-bit samples is below 2^15 in magnitude). The Triton quantizer's ``8 * step`` used to wrap int32 from
2^28 (outputs off by up to 164/255); the kernels now clamp steps inside the division. Checked here on the Triton
kernels (under the interpreter without a GPU), the torch reference with and without the compiled C library, and the
public API on both backends, against the reference (``torch.equal``) and against what the arithmetic must give
(all-large tables: every sample decodes to 128).
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed (pip install 'fdgpu[triton]')")

import fdgpu  # noqa: E402
from fdgpu import kernels  # noqa: E402
from fdgpu.backends import cpu  # noqa: E402
from fdgpu.reference import jpeg as ref  # noqa: E402

from .test_kernels import DEVICE, GRAD_RTOL, assert_table_grad_close, soft_tolerance  # noqa: E402
from ._helpers import compare  # noqa: E402

# 2^28 (the first step whose 8x wraps int32), the review's 6e8, 1e9 (the range), and beyond int32 (2^31,
# whose conversion to int32 is undefined) up to float32's range (1e38: 8 x step is inf in float32)
STEPS = [2.0 ** 28, 6e8, 1e9, 2.0 ** 31, 1e38]


def _table(step: float, kind: str, n: int) -> torch.Tensor:
    """``uniform``: every entry ``step``; ``integer``: small integer low frequencies, ``step`` elsewhere (the
    kernels' integer path); ``fractional``: one non-integer low step (the float64 path); ``per-image``: ``(n, 8,
    8)`` with the large step in a different half of each image's table."""
    t = torch.full((8, 8), step)
    if kind == "integer":
        t[:2, :2] = torch.tensor([[3.0, 5.0], [7.0, 16.0]])
    elif kind == "fractional":
        t[:2, :2] = torch.tensor([[2.5, 5.0], [7.0, 16.0]])
    elif kind == "per-image":
        t = torch.randint(1, 60, (n, 8, 8), generator=torch.Generator().manual_seed(5)).float()
        t[0, 4:] = step
        t[1:, :, 3:] = step
    return t.to(DEVICE)


def _image(shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


# every subsampling and grayscale with the integer path; the other table kinds at 4:2:0 (the same quantizer)
CASES = ([((2, 3, 13, 11), sub, "integer") for sub in fdgpu.SUBSAMPLINGS] + [((2, 1, 13, 11), "4:2:0", "integer")]
         + [((2, 3, 13, 11), "4:2:0", kind) for kind in ("uniform", "fractional", "per-image")])


@pytest.mark.parametrize("shape,subsampling,kind", CASES, ids=[f"{s[1]}ch-{sub}-{k}" for s, sub, k in CASES])
def test_forward_every_backend(shape, subsampling, kind):
    x = _image(shape, seed=1)
    for step in STEPS:
        lt = _table(step, kind, shape[0])
        ct = _table(step, "uniform" if kind == "per-image" else kind, shape[0])
        if kind == "per-image":
            ct = ct.expand(shape[0], 8, 8).contiguous()
        expected = ref.forward(x, lt, ct, subsampling)[0]
        label = f"step {step:g} {kind} {subsampling}"
        assert torch.equal(kernels.forward(x, lt, ct, subsampling), expected), f"triton kernels: {label}"
        compiled = cpu.fused_forward(x.cpu(), lt.cpu(), ct.cpu(), subsampling)  # None: the C library declines
        assert compiled is None or torch.equal(compiled[0], expected.cpu()), f"C library: {label}"
        for backend in ("torch", "cpu") if DEVICE == "cpu" and fdgpu.backends.get("cpu").available() else ("torch",):
            y = fdgpu.requantize(x, lt, ct, subsampling=subsampling, backend=backend)
            assert torch.equal(y, expected), f"requantize backend={backend!r}: {label}"
        if kind == "uniform":  # every coefficient quantizes to 0: every decoded sample is the level shift, 128
            assert torch.equal(expected, torch.full_like(x, 128 / 255)), label


@pytest.mark.parametrize("mode", ["ste", "soft"])
@pytest.mark.parametrize("subsampling", ["4:2:0"])  # luma and chroma programs (4:4:4's are the same quantizer)
def test_backward_and_table_grads(subsampling, mode):
    """The kernels' ``ste``/``soft`` backward and table gradients with huge steps, against the reference's within
    the kernel tests' bounds (finite: ``8 x 1e38`` is inf in float32, and the soft weight used to divide by it)."""
    shape = (2, 3, 13, 11)
    x = _image(shape, seed=2)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    for step in STEPS[::2]:
        for kind in ("integer", "fractional"):
            lt, ct = _table(step, kind, 2), _table(step, "integer", 2)
            gx, gl, gc = kernels.backward(g, x, lt, ct, subsampling, mode, True)
            _, state = ref.forward(x, lt, ct, subsampling, need_weight=True)
            rx, rl, rc = ref.backward(g, state, subsampling, mode, (lt, ct))
            label = f"{mode} step {step:g} {kind} {subsampling}"
            tol = GRAD_RTOL[torch.float32]
            if mode == "soft":
                _, s64 = ref.forward(x.double(), lt.double(), ct.double(), subsampling, need_weight=True)
                tol = soft_tolerance(rx, ref.backward(g.double(), s64, subsampling, mode))
            compare(f"{label} grad_x", gx, rx, rel_rmse=tol)
            assert_table_grad_close(f"{label} luma", gl, rl)
            assert_table_grad_close(f"{label} chroma", gc, rc)
            if DEVICE == "cpu":  # the compiled C backward on the reference's saved quotients
                compiled = cpu.fused_backward(g, state, subsampling, mode)
                if compiled is not None:
                    compare(f"{label} C library grad_x", compiled, rx, rel_rmse=tol)
