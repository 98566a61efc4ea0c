"""Prints the table of issue 12's CPU targets (benchmarks/_targets.py) at the end of a benchmark run."""


def pytest_terminal_summary(terminalreporter):
    import _targets

    if not _targets.RESULTS:
        return
    import torch

    for line in _targets.lines(torch.__version__, torch.get_num_threads()):
        terminalreporter.write_line(line)
