"""The CPU targets, filled in by the CPU benchmark suites of one pytest run and printed as one table at its end
(benchmarks/conftest.py): each target as the ratio it is stated in, the two figures it divides, and met / not met.

    python -m pytest benchmarks/test_bench_cpu.py benchmarks/test_bench_contention.py --benchmark-only

Workload: a batch of 32 RGB 224x224 images, JPEG q75 4:2:0, torch's default thread count, ``backend="auto"`` (the
C library on CPU tensors; the run fails rather than time the torch reference in its place). Figures are medians (ms
per image, or ms per call for the one-image case) of pytest-benchmark rounds taken side by side in this run; a
target whose providers did not run (skipped, deselected, ``--benchmark-disable``) is listed as not measured.

The targets:

* ``validate=True`` costs at most 10 % over ``validate=False`` (forward);
* forward (default ``validate=True``) <= 0.5x simplejpeg's encode + decode (libjpeg-turbo's SIMD codec);
* forward + backward ``ste`` <= 1.0x simplejpeg, ``soft`` <= 1.3x (``validate=True``);
* one 32x32 image per call, validated: <= 0.05 ms;
* with two busy torch processes beside it (started by the benchmark itself): forward <= 1.0x Pillow's save + load
  in the same conditions, and never slower than the same code on one thread.
"""
import os

from fdgpu.environment import cpu_model

RESULTS = {}  # (group, provider) -> median ms per image (or other figure, see the provider's name)
BACKEND = {}  # "auto" -> the backend that fdgpu's providers ran on, with the library's target

BATCH = "batch 32x224^2"
SMALL = "one 32x32 call"
FORWARD = "fdgpu forward (validate=True)"
FORWARD_UNVALIDATED = "fdgpu forward (validate=False)"
SIMPLEJPEG = "simplejpeg encode+decode"
PILLOW = "Pillow save+load"


def record(group: str, provider: str, value: float) -> None:
    RESULTS[(group, provider)] = value


def _get(group, provider):
    return RESULTS.get((group, provider))


def _ratio_row(name, num, den, limit, unit):
    if num is None or den is None:
        return f"  {name:62s} not measured"
    r = num / den
    verdict = "(context)" if limit is None else f"target <= {limit:<4g} {'met' if r <= limit else 'NOT met'}"
    return f"  {name:62s} {num:8.3f} / {den:8.3f} ms = {r:5.2f}x {unit:16s} {verdict}"


def _peers():
    """The peers' figures on the batch, as ratios to simplejpeg and Pillow (context, no targets)."""
    sj, pil = _get(BATCH, SIMPLEJPEG), _get(BATCH, PILLOW)
    rows = []
    for (group, provider), ms in sorted(RESULTS.items(), key=lambda kv: kv[1]):
        if group != BATCH:
            continue
        ratios = "  ".join(f"{ms / d:6.2f}x {n}" for d, n in ((sj, "simplejpeg"), (pil, "Pillow")) if d)
        rows.append(f"    {provider:58s} {ms:8.3f} ms  {ratios}")
    return rows


def lines(torch_version: str, threads: int):
    if not RESULTS:
        return []
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    out = [(f"\nCPU targets ({cpu_model()}, {os.cpu_count()} cores, torch {torch_version}, {threads} threads, "
            f"backend='auto' ran {BACKEND.get('auto', '?')}, load average at the end {load[0]:.2f} {load[1]:.2f} "
            f"{load[2]:.2f}):")]
    fwd, sj = _get(BATCH, FORWARD), _get(BATCH, SIMPLEJPEG)
    out.append(_ratio_row("validate=True over validate=False, forward 32x224^2 q75 4:2:0", fwd,
                          _get(BATCH, FORWARD_UNVALIDATED), 1.1, "validate=False"))
    out.append(_ratio_row("forward (validate=True)", fwd, sj, 0.5, "simplejpeg"))
    out.append(_ratio_row("forward + backward ste (validate=True)", _get(BATCH, "fdgpu forward+backward (ste)"), sj,
                          1.0, "simplejpeg"))
    out.append(_ratio_row("forward + backward soft (validate=True)", _get(BATCH, "fdgpu forward+backward (soft)"), sj,
                          1.3, "simplejpeg"))
    v = _get(SMALL, "fdgpu.jpeg (validate=True)")
    if v is None:
        out.append(f"  {'one 32x32 image per call, validated':62s} not measured")
    else:
        out.append(f"  {'one 32x32 image per call, validated':62s} {v:8.3f} ms{'':38s} target <= 0.05 ms "
                   f"{'met' if v <= 0.05 else 'NOT met'}")
    for busy in (0, 1, 2):
        g = f"contention 32x224^2 busy={busy}"
        pool, one, pil = (_get(g, p) for p in ("fdgpu (shipped)", "fdgpu one thread", PILLOW))
        if pool is None:
            continue
        target = busy == 2  # the stated target; 0 and 1 busy processes are context
        out.append(_ratio_row(f"{busy} busy processes: forward vs Pillow, same conditions", pool, pil,
                              1.0 if target else None, "Pillow"))
        out.append(_ratio_row(f"{busy} busy processes: forward vs the same code on one thread", pool, one,
                              1.0 if target else None, "one thread"))
    peers = _peers()
    if peers:
        out.append("  every provider on the batch (ms per image, ratios to simplejpeg and Pillow):")
        out += peers
    small = sorted((ms, p) for (g, p), ms in RESULTS.items() if g == SMALL)
    if small:
        out.append("  one 32x32 image per call (ms per call):")
        out += [f"    {p:58s} {ms:8.3f} ms" for ms, p in small]
    mp = sorted((int(p.split()[0].split('^')[0]), v) for (g, p), v in RESULTS.items() if g == "ms per megapixel")
    if mp:
        vals = [v for _, v in mp]
        sizes = ", ".join(f"{s}^2: {v:.2f}" for s, v in mp)
        out.append(f"  ms per megapixel, 32^2 .. 1024^2 (1 MP per call, validate=False): {sizes}  max/min "
                   f"{max(vals) / min(vals):.2f}")
    for provider in ("fdgpu forward", "torch reference forward", "fdgpu forward, saving the soft state"):
        v = _get("peak memory", provider)
        if v is not None:
            out.append(f"  peak memory, {provider}: {v:.2f}x the input")
    return out
