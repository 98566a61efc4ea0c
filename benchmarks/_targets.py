"""Issue 12's CPU targets, filled in by the CPU benchmark suites of one pytest run and printed as one table at its
end (benchmarks/conftest.py): each target as the measured figure, the ratio it is stated in, and met / not met.

    python -m pytest benchmarks/test_bench_cpu.py benchmarks/test_bench_contention.py --benchmark-only

Figures are medians (ms per image unless said otherwise) of pytest-benchmark rounds taken side by side in this
run; a target whose providers did not run (skipped, deselected, --benchmark-disable) is listed as not measured.
"""
import os

from fdgpu.environment import cpu_model

RESULTS = {}  # (group, provider) -> median ms per image (or other figure, see the provider's name)


def record(group: str, provider: str, value: float) -> None:
    RESULTS[(group, provider)] = value


def _get(group, provider):
    return RESULTS.get((group, provider))


def _ratio_row(name, num, den, limit, unit="x Pillow"):
    if num is None or den is None:
        return f"  {name:58s} not measured"
    r = num / den
    return (f"  {name:58s} {num:8.3f} / {den:8.3f} ms = {r:5.2f}{unit:10s} target <= {limit:<4g} "
            f"{'met' if r <= limit else 'NOT met'}")


def lines(torch_version: str, threads: int):
    if not RESULTS:
        return []
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    out = [(f"\nissue 12 CPU targets ({cpu_model()}, {os.cpu_count()} cores, torch {torch_version}, {threads} "
           f"threads, load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}):")]
    b = "batch 32x224^2"
    pil = _get(b, "Pillow save+load")
    out.append(_ratio_row("forward, batch 32x224^2 q75 4:2:0", _get(b, "fdgpu forward"), pil, 0.5))
    out.append(_ratio_row("forward+backward ste", _get(b, "fdgpu forward+backward (ste)"), pil, 1.0))
    out.append(_ratio_row("forward+backward soft", _get(b, "fdgpu forward+backward (soft)"), pil, 1.3))
    s = "one 32x32 call"
    for provider in ("fdgpu.jpeg (validate=True)", "fdgpu.jpeg (validate=False)"):
        v = _get(s, provider)
        pv = _get(s, "Pillow save+load")
        if v is None:
            out.append(f"  {'one 32x32 call, ' + provider:58s} not measured")
        else:
            extra = f" ({v / pv:.2f}x Pillow's {pv:.3f} ms)" if pv else ""
            out.append(f"  {'one 32x32 call, ' + provider:58s} {v:8.3f} ms{extra:30s} target <= 0.1 ms "
                       f"{'met' if v <= 0.1 else 'NOT met'}")
    mp = sorted((int(p.split()[0].split('^')[0]), v) for (g, p), v in RESULTS.items() if g == "ms per megapixel")
    if mp:
        vals = [v for _, v in mp]
        spread = max(vals) / min(vals)
        sizes = ", ".join(f"{s}^2: {v:.2f}" for s, v in mp)
        out.append(f"  {'ms per megapixel, 32^2 .. 1024^2 (1 MP per call)':58s} {sizes}  max/min {spread:.2f} "
                   "(linear: ~1)")
    else:
        out.append(f"  {'ms per megapixel':58s} not measured")
    for provider in ("fdgpu forward", "torch reference forward", "fdgpu forward, saving the soft state"):
        v = _get("peak memory", provider)
        if v is not None:
            out.append(f"  {'peak memory, ' + provider + ' (x input)':58s} {v:8.2f}x{'':31s} target <= 3x "
                       f"{'met' if v <= 3 else 'NOT met'}")
    for busy in (0, 1, 2):
        g = f"contention 32x224^2 busy={busy}"
        pool, one, pil = (_get(g, p) for p in ("fdgpu (shipped)", "fdgpu one thread", "Pillow save+load"))
        if pool is None:
            continue
        out.append(_ratio_row(f"busy={busy}: forward vs Pillow, same conditions", pool, pil, 1.0))
        out.append(_ratio_row(f"busy={busy}: forward vs the same code on one thread", pool, one, 1.0,
                              unit="x 1 thread"))
        g = f"contention 1x32^2 busy={busy}"
        pool, one = (_get(g, p) for p in ("fdgpu (shipped)", "fdgpu one thread"))
        out.append(_ratio_row(f"busy={busy}: one 32x32 call vs one thread", pool, one, 1.0, unit="x 1 thread"))
    return out
