"""``fdgpu doctor``: versions, backends, per-device self-check verdicts and the speed probes, as text and JSON."""
import json
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fdgpu  # noqa: E402
from fdgpu import cli, doctor  # noqa: E402


def test_json_report(capsys):
    assert cli.main(["doctor", "--json", "--probe-seconds", "0.2"]) == 0
    rep = json.loads(capsys.readouterr().out)
    v = rep["versions"]
    assert v["torch"] == torch.__version__ and v["python"] and "path" in v["c_compiler"]
    assert rep["backends"]["torch"]["usable"] is True
    assert set(rep["backends"]) == {"torch", "cpu", "triton"}
    assert rep["backends"]["cpu"]["usable"] is fdgpu.backends.get("cpu").available()
    probes = rep["probes"]
    assert probes["torch cpu"]["images_per_s"] > 0 and probes["torch cpu"]["calls"] >= 1
    if rep["backends"]["triton"]["usable"]:  # here: the interpreter (a smoke run of the kernels)
        assert "images_per_s" in probes[f"triton {'cuda' if torch.cuda.is_available() else 'cpu'}"]
    else:
        assert rep["backends"]["triton"]["why"]
    assert len(rep["devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_text_report_and_exit_status(capsys):
    assert cli.main(["doctor", "--probe-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "backends:" in out and "torch   usable" in out
    assert "speed probe" not in out  # 0 seconds: no probes
    rep = doctor.report(0)
    rep["devices"].append({"index": 0, "name": "Planted GPU", "capability": "sm_90", "memory_gib": 80.0,
                           "selfcheck": {"passed": False, "error": "case 'x': forward differs", "ran_now": True,
                                         "seconds": 1.0}})
    assert not doctor.healthy(rep)
    assert "cuda:0 Planted GPU sm_90, 80.0 GiB, self-check FAILED: case 'x': forward differs" in doctor._text(rep)


def test_bad_probe_seconds(capsys):
    assert cli.main(["doctor", "--probe-seconds", "-1"]) == 2
    assert "--probe-seconds: expected a number >= 0, got -1" in capsys.readouterr().err
