"""Property tests over random shapes, subsamplings and qualities (hypothesis)."""
import pytest
import torch

import fdgpu
from fdgpu import reference

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

shapes = st.tuples(st.sampled_from([1, 3]), st.integers(1, 40), st.integers(1, 40))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, sub=st.sampled_from(["4:4:4", "4:2:2", "4:2:0"]), q=st.floats(1, 100), seed=st.integers(0, 99))
def test_output_shape_grid_range_and_determinism(shape, sub, q, seed):
    x = torch.rand((2,) + shape, generator=torch.Generator().manual_seed(seed))
    y = fdgpu.jpeg(x, q, subsampling=sub)
    assert y.shape == x.shape
    assert ((y * 255) - (y * 255).round()).abs().max() < 1e-4
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.equal(y, fdgpu.jpeg(x, q, subsampling=sub))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, sub=st.sampled_from(["4:4:4", "4:2:2", "4:2:0"]), seed=st.integers(0, 99))
def test_ste_backward_is_adjoint_of_linear_map(shape, sub, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn((1,) + shape, generator=g, dtype=torch.float64)
    v = torch.randn((1,) + shape, generator=g, dtype=torch.float64)
    lhs = float((reference.linear_map(u, sub) * v).sum())
    rhs = float((reference.backward(v, None, sub) * u).sum())
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(st.sampled_from([1, 3]), st.integers(1, 40), st.integers(1, 40)), seed=st.integers(0, 99),
       sub=st.sampled_from(["4:4:4", "4:2:2", "4:2:0"]), q=st.integers(1, 100))
def test_float32_and_float64_give_the_same_bits(shape, seed, sub, q):
    """The forward is integer arithmetic: float32 and float64 inputs (and a float64 table) give identical values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (2,) + shape, generator=g).double() / 255
    y64 = fdgpu.jpeg(x, q, subsampling=sub)
    y32 = fdgpu.jpeg(x.float(), q, subsampling=sub)
    assert torch.equal((y64 * 255).round(), (y32.double() * 255).round())
