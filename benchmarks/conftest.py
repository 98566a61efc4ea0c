"""Benchmark setup: fdgpu.kernels from a source checkout without ``pip install`` (resolved to kernels/ as in the
tests, tests/_source_checkout.py; inert where fdgpu is installed), and the table of issue 12's CPU targets
(benchmarks/_targets.py) printed at the end of a benchmark run."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a source checkout whose C library was not built in place (or is stale: fused.c edited since) compiles it on first
# use, so the benchmarks time the library of the source they sit beside (its file and target: fdgpu.backends.status)
os.environ.setdefault("FDGPU_BUILD", "1")
if (ROOT / "tests" / "_source_checkout.py").is_file():
    sys.path.insert(0, str(ROOT))
    import tests._source_checkout  # noqa: E402,F401
    sys.path.remove(str(ROOT))


def pytest_terminal_summary(terminalreporter):
    import _targets

    if not _targets.RESULTS:
        return
    import torch

    for line in _targets.lines(torch.__version__, torch.get_num_threads()):
        terminalreporter.write_line(line)


def pytest_benchmark_update_machine_info(config, machine_info):
    """What the run ran on, in the JSON of ``--benchmark-json`` (benchmarks/render.py reads it): CPU, threads, the
    load average at the start, package versions and the backends' status."""
    from fdgpu.environment import PACKAGES, environment, versions

    env = environment()
    env["versions"] = versions(PACKAGES + ("simplejpeg",))
    try:
        from fdgpu import backends

        env["backends"] = backends.status()
    except (ImportError, AttributeError):
        pass
    machine_info["fdgpu"] = env
