"""The launchers' direct launches of compiled kernels (kernels/launch.py ``_start``) against Triton's own
``kernel[grid](...)``, on Triton's real CUDA path with only the driver's launch stubbed (benchmarks/_stub_cuda.py:
the kernels compiled for sm_90, CPU tensors standing in). Runs in a fresh interpreter: this process imported Triton
in interpreter mode."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import _stub_cuda
finally:
    sys.path.remove(str(ROOT / "benchmarks"))

SCRIPT = textwrap.dedent(r"""
    import json, os, sys
    sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "benchmarks")]
    import _stub_cuda
    lib = _stub_cuda.install(sys.argv[2])
    import tests._source_checkout  # noqa: F401  (fdgpu.kernels from the checkout)
    import torch
    import triton
    from triton.backends.nvidia import driver as nv
    from triton.runtime import jit
    from fdgpu import tables
    from fdgpu.kernels import launch

    calls, runs = [], []
    inputs = {}
    real_call, real_run = nv.CudaLauncher.__call__, jit.JITFunction.run

    def arg(a):
        if isinstance(a, torch.Tensor):
            p = a.data_ptr()
            return ["input", inputs[p]] if p in inputs else ["new", list(a.shape), str(a.dtype), p % 16]
        return a

    def record(self, gx, gy, gz, stream, function, meta, lmeta, enter, leave, *args):
        calls.append([id(self), gx, gy, gz, stream, [arg(a) for a in args]])
        return real_call(self, gx, gy, gz, stream, function, meta, lmeta, enter, leave, *args)

    def counted(self, *args, **kw):
        runs.append(self.fn.__name__)
        return real_run(self, *args, **kw)

    nv.CudaLauncher.__call__, jit.JITFunction.run = record, counted
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g)
    grad = torch.randn(1, 3, 32, 32, generator=g)
    odd = torch.rand(2 * 3 * 17 * 23 + 1, generator=g)[1:].view(2, 3, 17, 23)  # 4 bytes past 16-byte alignment
    gray = torch.rand(1, 1, 9, 9, generator=g)
    lt, ct = (t.float() for t in tables.ijg(75))
    per_image = tables.ijg(torch.tensor([30.0, 90.0]))
    for name, t in dict(x=x, grad=grad, odd=odd, gray=gray, lt=lt, ct=ct).items():
        inputs[t.data_ptr()] = name
    cases = {
        "4:2:0 forward": lambda: launch.forward(x, lt, ct, "4:2:0"),
        "4:2:0 ste backward, table gradients": lambda: launch.backward(grad, x, lt, ct, "4:2:0", "ste", True),
        "4:2:2 forward, unaligned x, per-image tables": lambda: launch.forward(odd, *per_image, "4:2:2"),
        "gray forward": lambda: launch.forward(gray, lt, None, "4:2:0"),
    }
    out = {}
    for label, call in cases.items():
        res = {}
        for route in ("triton", "first", "direct"):
            launch._DIRECT = route != "triton"
            if route == "first":
                launch._COMPILED.clear()
            del calls[:], runs[:]
            before = _stub_cuda.launches()
            call()
            res[route] = dict(calls=list(calls), runs=list(runs), launches=_stub_cuda.launches() - before)
        out[label] = res
    # an unaligned input after an aligned one of the same shape: not the aligned one's kernel
    launch._COMPILED.clear()
    same = odd.clone()
    inputs[same.data_ptr()] = "aligned"
    for _ in range(2):
        launch.forward(same, *per_image, "4:2:2")
    del calls[:]
    launch.forward(odd, *per_image, "4:2:2")
    out["unaligned after aligned"] = list(calls)
    # launch hooks reach the direct launches as they reach Triton's
    seen = []
    triton.knobs.runtime.launch_enter_hook.add(lambda meta: seen.append(meta.get()["name"]))
    cases["4:2:0 forward"]()
    out["hooks"] = seen
    print(json.dumps(out))
""")


@pytest.mark.skipif(_stub_cuda.unavailable() not in (None, _stub_cuda.INTERPRETED),
                    reason=f"{_stub_cuda.unavailable()}")
def test_direct_launches_equal_tritons(tmp_path):
    """Each case launched three ways: through Triton's ``kernel[grid]`` only, through the launchers with an empty
    cache (Triton's launch, which fills it) and again (direct). The driver sees the same launches each time: the
    same compiled kernel (its launcher), grid, stream and arguments (inputs by name, new outputs by shape, dtype and
    alignment, integers and constexprs by value). The direct route never enters Triton's ``JITFunction.run``; an
    unaligned input gets the kernel Triton compiled for it, not the aligned one's (also right after an aligned
    input of its shape); launch hooks are called."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT), str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    hooks = out.pop("hooks")
    after_aligned = out.pop("unaligned after aligned")
    for label, res in out.items():
        triton_route, first, direct = res["triton"], res["first"], res["direct"]
        assert triton_route["calls"] and triton_route["launches"] == len(triton_route["calls"]), label
        assert first == triton_route, label
        assert direct["calls"] == triton_route["calls"], label
        assert direct["runs"] == [] and direct["launches"] == len(direct["calls"]), label
    aligned = out["4:2:0 forward"]["direct"]["calls"][0]
    unaligned = out["4:2:2 forward, unaligned x, per-image tables"]["direct"]["calls"][0]
    assert unaligned[5][0] == ["input", "odd"] and unaligned[0] != aligned[0]
    assert after_aligned == out["4:2:2 forward, unaligned x, per-image tables"]["triton"]["calls"]
    assert hooks == ["_jpeg_fwd_sub_kernel", "_jpeg_up_kernel"]
