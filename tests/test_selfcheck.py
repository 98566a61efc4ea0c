"""The kernels' self-check (fdgpu.selfcheck) under Triton's interpreter: the full check set passes, a planted fault in
the kernels' results is caught and named, verdicts are cached per process and on disk by their key, and
FDGPU_SELFCHECK turns it off or on for every process."""
import json
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed (pip install 'fdgpu[triton]')")

import fdgpu  # noqa: E402
from fdgpu import kernels, selfcheck  # noqa: E402

DEVICE = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
SMALL = [c for c in selfcheck.CASES if max(c.shape[2:]) <= 23]  # the quick cases, for the cache and fault tests


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("FDGPU_CACHE", str(tmp_path))
    selfcheck._reset()
    yield
    selfcheck._reset()


def test_full_check_set_passes():
    assert selfcheck.run(DEVICE) == []
    assert selfcheck.last_seconds > 0
    subs = {c.subsampling for c in selfcheck.CASES if c.shape[1] == 3}
    assert subs == set(fdgpu.SUBSAMPLINGS) and any(c.shape[1] == 1 for c in selfcheck.CASES)
    assert {m for c in selfcheck.CASES for m in c.modes} == {"ste", "soft"}


def _plant(monkeypatch, where):
    """A kernel result off by one level at one sample (forward), or a gradient scaled (backward)."""
    if where == "forward":
        orig = kernels.forward

        def faulty(x, *a):
            y = orig(x, *a).clone()
            y.view(-1)[y.numel() // 2] += 1 / 255
            return y
        monkeypatch.setattr(kernels, "forward", faulty)
    else:
        orig_b = kernels.backward

        def faulty_b(*a):
            gx, gl, gc = orig_b(*a)
            return gx, gl * (1 + 1e-3), gc
        monkeypatch.setattr(kernels, "backward", faulty_b)


@pytest.mark.parametrize("where,expect", [("forward", "forward differs from the CPU reference at 1 of"),
                                          ("backward", "luma table gradient max abs error")])
def test_planted_fault_is_caught_and_named(monkeypatch, where, expect):
    monkeypatch.setattr(selfcheck, "CASES", SMALL)
    monkeypatch.setenv("FDGPU_SELFCHECK", "always")
    _plant(monkeypatch, where)
    with pytest.raises(selfcheck.SelfCheckError) as info:
        selfcheck.ensure(DEVICE)
    msg = str(info.value)
    assert f"case {SMALL[0].name!r}: " in msg and expect in msg
    assert selfcheck.device_facts(DEVICE)["device"] in msg
    assert "backend='torch'" in msg and "fdgpu doctor" in msg and "FDGPU_SELFCHECK=0" in msg
    with pytest.raises(selfcheck.SelfCheckError):  # every later call on the device, without running again
        monkeypatch.setattr(selfcheck, "run", lambda device: pytest.fail("ran twice"))
        selfcheck.ensure(DEVICE)


def test_public_call_runs_it_on_first_triton_use(monkeypatch):
    monkeypatch.setattr(selfcheck, "CASES", SMALL[:1])
    monkeypatch.setenv("FDGPU_SELFCHECK", "always")
    _plant(monkeypatch, "forward")
    x = torch.rand(1, 3, 8, 8, device=DEVICE)
    with pytest.raises(selfcheck.SelfCheckError, match="self-check of the Triton kernels failed"):
        fdgpu.jpeg(x, 50, backend="triton")
    fdgpu.jpeg(x, 50, backend="torch")  # the torch backend does not need it


def test_verdict_cached_on_disk_by_key(monkeypatch, tmp_path):
    monkeypatch.setattr(selfcheck, "CASES", SMALL[:1])
    monkeypatch.setattr(selfcheck, "_applies", lambda device, m: m != "0")  # as for a CUDA device
    runs = []
    real_run = selfcheck.run
    monkeypatch.setattr(selfcheck, "run", lambda device: runs.append(device) or real_run(device))
    assert selfcheck.verdict(DEVICE) is None
    selfcheck.ensure(DEVICE)
    selfcheck.ensure(DEVICE)
    assert len(runs) == 1
    files = list((tmp_path / "selfcheck").glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["passed"] is True and rec["key"] == selfcheck.key(DEVICE)
    assert set(rec["key"]) == {"device", "capability", "driver", "triton", "torch", "kernels"}
    selfcheck._reset()  # a new process: the disk verdict, no run
    selfcheck.ensure(DEVICE)
    assert len(runs) == 1 and selfcheck.verdict(DEVICE)["passed"]
    selfcheck._reset()  # other kernel source: checked again
    monkeypatch.setattr(selfcheck, "kernels_hash", lambda: "0" * 64)
    selfcheck.ensure(DEVICE)
    assert len(runs) == 2


def test_off_and_bad_setting(monkeypatch):
    monkeypatch.setattr(selfcheck, "run", lambda device: pytest.fail("ran with FDGPU_SELFCHECK=0"))
    monkeypatch.setenv("FDGPU_SELFCHECK", "0")
    selfcheck.ensure(DEVICE)
    selfcheck._reset()
    monkeypatch.setenv("FDGPU_SELFCHECK", "yes")
    with pytest.raises(ValueError, match="FDGPU_SELFCHECK: expected 0, 1 or always, got 'yes'"):
        selfcheck.ensure(DEVICE)


def test_results_record_the_gpu_facts(monkeypatch):
    """fdgpu bench / eval record what ``fdgpu doctor`` reports about a GPU (mocked here: name, capability, driver)
    and the self-check verdict, read from the caches without running it."""
    from types import SimpleNamespace

    from fdgpu import environment
    props = SimpleNamespace(name="Mock H100", major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    monkeypatch.setattr(selfcheck, "driver_version", lambda: "550.54.15")
    monkeypatch.setattr(selfcheck, "run", lambda device: pytest.fail("the report ran the self-check"))
    facts = environment.gpu_facts(0)
    assert facts["gpu_key"]["device"] == "Mock H100" and facts["gpu_key"]["capability"] == "sm_90"
    assert facts["gpu_key"]["driver"] == "550.54.15" and facts["gpu_key"]["kernels"] == selfcheck.kernels_hash()
    assert facts["selfcheck"] is None  # not checked
    selfcheck._verdicts[selfcheck._digest(selfcheck.key(torch.device("cuda", 0)))] = None  # passed in this process
    assert environment.gpu_facts(0)["selfcheck"] is True
