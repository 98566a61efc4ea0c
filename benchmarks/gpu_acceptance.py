"""The GPU acceptance run, one command: ``python benchmarks/gpu_acceptance.py --out DIR [--dry-run]``.

On one CUDA GPU (with torch and Triton installed there; installs nothing, the project itself from the checkout
with ``pip install --no-deps --no-build-isolation -e .``), in about 6 minutes on an H100/H200, it writes
``DIR/gpu_acceptance.json`` and ``DIR/gpu_acceptance.md``:

1. **equality**: the GPU forward (Triton backend) against the CPU reference, ``torch.equal``, on scikit-image's
   sample photos and odd crops of them and on generated noise; every subsampling and grayscale; a sample of IJG
   qualities 1-100, FD tables, random integer and fractional tables, per-image tables; odd sizes and sizes larger
   than one tile; float16/bfloat16 inputs (the public API on both backends); the ``ste``/``soft`` backward and the
   table gradients against the reference within the kernel tests' bounds;
2. **sanitizer**: ``compute-sanitizer`` memcheck and racecheck on a small launch of every kernel variant, where the
   tool is on PATH;
3. **capture**: a defended model (JPEG layer + a small CNN, default ``validate=True``) captured in a CUDA graph and
   replayed equal to eager, and ``torch.compile(fullgraph=True)`` of it equal to eager;
4. **timings**: CUDA events, median of repeated launches after warm-up, forward, forward + ``ste`` and forward +
   ``soft`` at 32^2 x 1024, 224^2 x 256, 299^2 x 64 and 1024^2 x 8: us per image, images/s and the ratio to a
   roofline (minimum bytes per image / the device-to-device copy bandwidth measured in the same run: 24 B per pixel
   forward, 48 B forward + backward); beside them torchvision's nvJPEG ``encode_jpeg`` + ``decode_jpeg`` and kornia's
   ``jpeg_codec_differentiable`` where importable; and the host time per call at batch 1.

``--dry-run`` runs every section at tiny sizes on the CPU under ``TRITON_INTERPRET=1`` (set before Triton is
imported), so that the script cannot rot between the times a GPU is available: its numbers are not measurements
(the report says so) and sections that need CUDA record why they were skipped. The exit status is 0 when every
equality, sanitizer and capture check passed (or was skipped for a stated reason), else 1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUALITIES = (1, 5, 10, 25, 50, 75, 90, 95, 100)
SIZES = ((32, 1024), (224, 256), (299, 64), (1024, 8))
DRY_SIZES = ((16, 2),)
BYTES_PER_PIXEL = {"fwd": 24, "fwd+ste": 48, "fwd+soft": 48}  # minimum traffic: fp32 RGB read/written
GRAD_RTOL = 1e-5          # tests/test_kernels.py: grad_x relative RMSE (soft: the reference's own fp32 error x 2)
TABLE_GRAD_ATOL = 1e-5    # tests/test_kernels.py: table gradients, max abs error / the largest entry


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="gpu_acceptance.py")
    p.add_argument("--out", required=True, help="folder for gpu_acceptance.json and gpu_acceptance.md")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny sizes on the CPU under TRITON_INTERPRET=1: checks that the script runs, no timings")
    p.add_argument("--sanitizer-target", action="store_true", help=argparse.SUPPRESS)  # compute-sanitizer's child
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------------------- inputs
def _photos(torch, small: bool):
    """scikit-image's sample photos (RGB and grayscale) as (1, C, H, W) float in [0, 1], plus odd crops; generated
    noise when scikit-image is absent (recorded)."""
    out = {}
    try:
        from skimage import data
        for name in ("astronaut", "chelsea", "coffee", "camera"):
            a = torch.from_numpy(getattr(data, name)().copy()).float().div_(255)
            a = a.unsqueeze(0) if a.dim() == 2 else a.permute(2, 0, 1)
            out[name] = a.unsqueeze(0)
    except ImportError:
        pass
    if small:  # one RGB and one grayscale photo
        out = {k: v for k, v in out.items() if k in ("astronaut", "camera")}
    crops = {}
    for name, img in out.items():
        h, w = (19, 27) if small else (203, 301)
        crops[f"{name} crop {h}x{w}"] = img[..., 37:37 + h, 41:41 + w].contiguous()
        if not small:
            crops[f"{name} full"] = img
    g = torch.Generator().manual_seed(0)
    n = (13, 21) if small else (333, 517)
    crops[f"noise {n[0]}x{n[1]}"] = torch.rand(2, 3, *n, generator=g)
    crops[f"gray noise {n[0]}x{n[1]}"] = torch.rand(1, 1, *n, generator=g)
    crops["noise 9x4 (2 chroma columns)"] = torch.rand(1, 3, 9, 4, generator=g)
    return crops, sorted(out)


def _table_sets(torch, n: int, small: bool):
    from fdgpu import tables
    g = torch.Generator().manual_seed(1)
    out = {f"q{q}": tables.ijg(q) for q in (QUALITIES[::4] if small else QUALITIES)}
    out["fd 1x"] = (tables.fd(1.0),) * 2
    out["fd 2.5x"] = (tables.fd(2.5),) * 2
    out["random integer 1..255"] = tuple(torch.randint(1, 256, (8, 8), generator=g).float() for _ in range(2))
    out["random fractional 1..60"] = tuple(1 + 59 * torch.rand(8, 8, generator=g) for _ in range(2))
    out["per-image q"] = tables.ijg(torch.linspace(10, 95, n))
    if small:
        out = {k: out[k] for k in ("q1", "q50", "fd 2.5x", "random fractional 1..60", "per-image q")}
    return out


# ------------------------------------------------------------------------------------------------------- checks
def equality(torch, device, small: bool) -> dict:
    import fdgpu
    from fdgpu import kernels
    from fdgpu.reference import jpeg as ref

    images, photos = _photos(torch, small)
    results, failures = [], []
    subs = tuple(fdgpu.SUBSAMPLINGS)
    for iname, x in images.items():
        tsets = _table_sets(torch, x.shape[0], small)
        for tname, (lt, ct) in tsets.items():
            for sub in (subs if x.shape[1] == 3 else ("4:2:0",)):
                if small and tname != "q50" and sub != "4:2:0":  # dry run: every subsampling once
                    continue
                lt32, ct32 = lt.float().contiguous(), ct.float().contiguous()
                want = ref.forward(x, lt32, ct32, sub)[0]
                got = kernels.forward(x.to(device), lt32.to(device), ct32.to(device), sub).cpu()
                ok = torch.equal(got, want)
                results.append(ok)
                if not ok:
                    d = (got - want).abs()
                    failures.append(f"forward {iname} {tname} {sub}: {int((d != 0).sum())} of {d.numel()} values "
                                    f"differ (max {d.max().item() * 255:.3g}/255)")
    # half inputs through the public API: both backends compute in float32 and cast back
    x = images[next(k for k in images if k.startswith("noise"))]
    for dt in (torch.float16, torch.bfloat16):
        want = fdgpu.jpeg(x.to(dt), 75, backend="torch")
        got = fdgpu.jpeg(x.to(device, dt), 75, backend="triton").cpu()
        ok = torch.equal(got, want)
        results.append(ok)
        if not ok:
            failures.append(f"forward {dt} public API differs from the torch backend")
    grads = _gradients(torch, device, kernels, ref, images, small)
    return {"photos": photos, "images": list(images), "forward_cases": len(results) - 2, "half_cases": 2,
            "forward_passed": sum(results), "failures": failures + grads["failures"],
            "gradient_cases": grads["cases"], "passed": not failures and not grads["failures"]}


def _rel(torch, a, b):
    a, b = a.double(), b.double()
    return ((a - b).square().mean().sqrt() / b.square().mean().sqrt().clamp_min(1e-300)).item()


def _gradients(torch, device, kernels, ref, images, small):
    from fdgpu import tables
    failures, cases = [], 0
    picks = [k for k in images if "crop" in k or k.startswith("noise") or k.startswith("gray")][:2 if small else 6]
    for iname in picks:
        x = images[iname]
        g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        sets = (("q75", tables.ijg(75)), ("fd 1x", (tables.fd(1.0),) * 2),
                ("per-image", tables.ijg(torch.linspace(20, 90, x.shape[0]))))
        for tname, (lt, ct) in sets[1:] if small else sets:
            lt, ct = lt.float().contiguous(), ct.float().contiguous()
            for sub in ("4:2:0",) if small or x.shape[1] == 1 else ("4:4:4", "4:2:2", "4:2:0"):
                for mode in ("ste", "soft"):
                    cases += 1
                    gx, gl, gc = (t.cpu() for t in kernels.backward(g.to(device), x.to(device), lt.to(device),
                                                                     ct.to(device), sub, mode, True))
                    _, state = ref.forward(x, lt, ct, sub, need_weight=True)
                    rx, rl, rc = ref.backward(g, state, sub, mode, (lt, ct))
                    tol = GRAD_RTOL
                    if mode == "soft":
                        _, s64 = ref.forward(x.double(), lt.double(), ct.double(), sub, need_weight=True)
                        tol = max(tol, 2 * _rel(torch, rx, ref.backward(g.double(), s64, sub, mode)))
                    err = _rel(torch, gx, rx)
                    if not err <= tol:
                        failures.append(f"{mode} grad_x {iname} {tname} {sub}: rel RMSE {err:.3g} > {tol:.3g}")
                    for name, a, b in (("luma", gl, rl), ("chroma", gc, rc)):
                        e, s = (a - b).abs().max().item(), b.abs().max().item()
                        if not e <= TABLE_GRAD_ATOL * s:
                            failures.append(f"{mode} {name} table grad {iname} {tname} {sub}: {e:.3g} > "
                                            f"{TABLE_GRAD_ATOL:g} x {s:.3g}")
    return {"failures": failures, "cases": cases}


def _every_variant(torch, device):
    """A small launch of every kernel variant (each subsampling and grayscale, both size classes, forward and
    every backward with table gradients): the sanitizer's workload."""
    from fdgpu import kernels, tables
    lt, ct = (t.float().to(device) for t in tables.ijg(50))
    for shape in ((2, 3, 21, 19), (1, 3, 45, 70), (1, 1, 21, 19), (1, 3, 9, 4)):
        x = torch.rand(shape, device=device)
        g = torch.randn(shape, device=device)
        for sub in ("4:4:4", "4:2:2", "4:2:0"):
            kernels.forward(x, lt, ct, sub)
            for mode in ("ste", "soft"):
                kernels.backward(g, x, lt, ct, sub, mode, True)
                kernels.backward(g, x, lt, ct, sub, mode, False)
    if device.type == "cuda":
        torch.cuda.synchronize()


def sanitizer(torch, device) -> dict:
    tool = shutil.which("compute-sanitizer")
    if device.type != "cuda":
        return {"skipped": "no CUDA device (dry run)"}
    if tool is None:
        return {"skipped": "compute-sanitizer is not on PATH"}
    out = {}
    for check in ("memcheck", "racecheck"):
        t0 = time.perf_counter()
        res = subprocess.run([tool, "--tool", check, "--error-exitcode", "3", sys.executable, __file__,
                              "--out", os.devnull, "--sanitizer-target"], capture_output=True, text=True,
                             timeout=240)
        tail = (res.stdout + res.stderr)[-2000:]
        out[check] = {"passed": res.returncode == 0, "returncode": res.returncode,
                      "seconds": round(time.perf_counter() - t0, 1), "tail": tail if res.returncode else ""}
    return out


def capture(torch, device) -> dict:
    import fdgpu
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(fdgpu.JPEG(75), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    model = model.to(device).eval()
    x = torch.rand(4, 3, 37, 53, device=device)
    out = {}
    with torch.no_grad():
        eager = model(x)
        try:
            compiled = torch.compile(model, fullgraph=True)
            out["compile_fullgraph"] = {"passed": bool(torch.equal(compiled(x), eager))}
        except Exception as e:
            out["compile_fullgraph"] = {"passed": False, "error": f"{type(e).__name__}: {str(e)[:500]}"}
        if device.type != "cuda":
            out["cuda_graph"] = {"skipped": "no CUDA device (dry run)"}
            return out
        try:
            static_x = x.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):  # warm-up: Triton compilation, the self-check, cuDNN
                    model(static_x)
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_y = model(static_x)
            x2 = torch.rand_like(x)
            static_x.copy_(x2)
            graph.replay()
            torch.cuda.synchronize()
            out["cuda_graph"] = {"passed": bool(torch.equal(static_y, model(x2)))}
        except Exception as e:
            out["cuda_graph"] = {"passed": False, "error": f"{type(e).__name__}: {str(e)[:500]}"}
    return out


# ------------------------------------------------------------------------------------------------------ timings
class _Timer:
    """CUDA events on a GPU; ``perf_counter`` on the CPU (dry run: not a measurement)."""

    def __init__(self, torch, device):
        self.torch, self.cuda = torch, device.type == "cuda"

    def median_ms(self, fn, warmup: int, reps: int) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            if self.cuda:
                a, b = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def copy_bandwidth(torch, device, timer, dry: bool) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + written) of a 1 GiB buffer (1 MiB in a dry run)."""
    n = (1 << 18) if dry else (1 << 28)
    a = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    b = torch.empty_like(a)
    ms = timer.median_ms(lambda: b.copy_(a), 2 if dry else 5, 3 if dry else 20)
    return 2 * a.numel() * 4 / (ms / 1e3)


def _providers(torch, device):
    import fdgpu
    out = {"triton": lambda x: fdgpu.jpeg(x, 75, backend="triton", validate=False)}
    try:
        import kornia
        q = torch.tensor([75.0], device=device)
        out["kornia"] = lambda x: kornia.enhance.jpeg_codec_differentiable(x, q.expand(x.shape[0]))
    except ImportError:
        pass
    if device.type == "cuda":
        try:
            import torchvision.io as tvio
            if hasattr(tvio, "encode_jpeg"):
                def nvjpeg(x):
                    data = tvio.encode_jpeg(list(x.mul(255).round_().to(torch.uint8)), quality=75)
                    return torch.stack(tvio.decode_jpeg([d.cpu() for d in data], device="cuda")).float().div_(255)
                out["nvjpeg"] = nvjpeg
        except ImportError:
            pass
    return out


def timings(torch, device, dry: bool) -> dict:
    timer = _Timer(torch, device)
    bw = copy_bandwidth(torch, device, timer, dry)
    rows = []
    warm, reps = (1, 1) if dry else (3, 20)
    for size, batch in (DRY_SIZES if dry else SIZES):
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(batch, 3, size, size, device=device, generator=g)
        gy = torch.randn(batch, 3, size, size, device=device, generator=g)
        for name, op in _providers(torch, device).items():
            passes = ("fwd",) if name == "nvjpeg" else ("fwd", "fwd+ste", "fwd+soft")
            for p in passes:
                if p == "fwd":
                    def fn(op=op):
                        with torch.no_grad():
                            op(x)
                else:
                    mode = p.split("+")[1]
                    if name != "triton" and mode == "soft":
                        continue  # kornia has one backward (its own differentiable rounding), shown as fwd+ste
                    xr = x.clone().requires_grad_()

                    def fn(op=op, mode=mode, xr=xr):
                        import fdgpu
                        y = (fdgpu.jpeg(xr, 75, backend="triton", validate=False, backward=mode)
                             if name == "triton" else op(xr))
                        y.backward(gy)
                        xr.grad = None
                try:
                    ms = timer.median_ms(fn, warm, reps)
                except Exception as e:
                    rows.append({"provider": name, "pass": p, "size": size, "batch": batch,
                                 "error": f"{type(e).__name__}: {str(e)[:300]}"})
                    continue
                us = ms * 1e3 / batch
                roof_us = BYTES_PER_PIXEL[p] * size * size / bw * 1e6
                rows.append({"provider": name, "pass": p, "size": size, "batch": batch, "us_per_image": us,
                             "images_per_s": 1e6 / us, "roofline_us_per_image": roof_us, "x_roofline": us / roof_us})
    return {"copy_bandwidth_GBps": bw / 1e9, "rows": rows, "host": host_time(torch, device, dry),
            "measured": not dry}


def host_time(torch, device, dry: bool) -> dict:
    """Host time per call at batch 1 (32 x 32): the wall time for the Python call to return (the kernels are
    asynchronous on a GPU), median over repeated calls; validate=True and False, forward and forward + ste."""
    import fdgpu
    x = torch.rand(1, 3, 32, 32, device=device)
    xr = x.clone().requires_grad_()
    reps = 2 if dry else 200
    out = {}
    for label, fn in (("fwd validate=False", lambda: fdgpu.jpeg(x, 75, backend="triton", validate=False)),
                      ("fwd validate=True", lambda: fdgpu.jpeg(x, 75, backend="triton")),
                      ("fwd+ste validate=False",
                       lambda: fdgpu.jpeg(xr, 75, backend="triton", validate=False).sum().backward())):
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[label] = statistics.median(times)
    return {"us_per_call": out}


# ------------------------------------------------------------------------------------------------------- report
def _markdown(rep: dict) -> str:
    env, lines = rep["environment"], []
    kind = "DRY RUN: CPU interpreter, not measurements" if rep["dry_run"] else "measured"
    lines.append(f"# fdgpu GPU acceptance run ({kind})")
    lines.append("")
    lines.append(f"{env['date']}; device {env['device']}; driver {env['driver']}; torch {env['torch']}, CUDA "
                 f"{env['cuda']}, Triton {env['triton']}, fdgpu {env['fdgpu']}; {rep['seconds']:.0f} s in all.")
    eq = rep["equality"]
    lines += ["", "## Bit-equality with the CPU reference", "",
              f"forward: {eq['forward_passed']} of {eq['forward_cases'] + eq['half_cases']} cases equal "
              f"(torch.equal; photos: {', '.join(eq['photos']) or 'none (scikit-image absent)'}); "
              f"backward and table gradients: {eq['gradient_cases']} cases; "
              f"{'PASSED' if eq['passed'] else 'FAILED'}"]
    lines += [f"- {f}" for f in eq["failures"][:50]]
    lines += ["", "## compute-sanitizer", ""]
    for k, v in rep["sanitizer"].items():
        lines.append(f"- {k}: {v}" if k == "skipped" else f"- {k}: {'passed' if v['passed'] else 'FAILED'}")
    lines += ["", "## CUDA graph and torch.compile", ""]
    for k, v in rep["capture"].items():
        lines.append(f"- {k}: " + (f"skipped ({v['skipped']})" if "skipped" in v else
                                   "passed" if v["passed"] else f"FAILED {v.get('error', '')}"))
    t = rep["timings"]
    lines += ["", "## Timings" + ("" if t["measured"] else " (dry run: NOT measurements)"), "",
              f"device-to-device copy bandwidth: {t['copy_bandwidth_GBps']:.1f} GB/s (read + written); roofline = "
              f"minimum bytes per image (24 B/px forward, 48 B/px with backward) / that bandwidth", "",
              "| provider | pass | size | batch | us/image | images/s | roofline us | x roofline |",
              "|---|---|---|---|---|---|---|---|"]
    for r in t["rows"]:
        if "error" in r:
            lines.append(f"| {r['provider']} | {r['pass']} | {r['size']} | {r['batch']} | error: {r['error']} |||")
        else:
            lines.append(f"| {r['provider']} | {r['pass']} | {r['size']} | {r['batch']} | {r['us_per_image']:.3f} | "
                         f"{r['images_per_s']:.0f} | {r['roofline_us_per_image']:.3f} | {r['x_roofline']:.2f} |")
    lines += ["", "host time per call, batch 1, 32 x 32 (us, median): "
              + ", ".join(f"{k} {v:.1f}" for k, v in t["host"]["us_per_call"].items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = _parse(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        os.environ.setdefault("FDGPU_SELFCHECK", "0")
    import torch

    import fdgpu
    from fdgpu import doctor, selfcheck

    if args.sanitizer_target:
        _every_variant(torch, torch.device("cuda"))
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_acceptance.py: expected a CUDA device, got none; use --dry-run to check the script on the CPU",
              file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", torch.cuda.current_device())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    v = doctor.versions()
    rep = {"dry_run": args.dry_run,
           "environment": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "device": selfcheck.device_facts(device)["device"],
                           "capability": selfcheck.device_facts(device)["capability"], **v}}
    if device.type == "cuda":  # the self-check first: its verdict is part of the record
        try:
            selfcheck.ensure(device)
            rep["selfcheck"] = {"passed": True, "seconds": selfcheck.last_seconds}
        except selfcheck.SelfCheckError as e:
            rep["selfcheck"] = {"passed": False, "error": str(e)}
    rep["equality"] = equality(torch, device, small=args.dry_run)
    rep["sanitizer"] = sanitizer(torch, device)
    rep["capture"] = capture(torch, device)
    rep["timings"] = timings(torch, device, dry=args.dry_run)
    rep["seconds"] = time.perf_counter() - t0
    rep["fdgpu"] = fdgpu.__version__
    ok = rep["equality"]["passed"] and all(
        c.get("passed", True) for c in list(rep["sanitizer"].values()) + list(rep["capture"].values())
        if isinstance(c, dict))
    rep["passed"] = bool(ok)
    tmp = out / "gpu_acceptance.json.tmp"
    tmp.write_text(json.dumps(rep, indent=1, default=str))
    tmp.replace(out / "gpu_acceptance.json")
    tmp = out / "gpu_acceptance.md.tmp"
    tmp.write_text(_markdown(rep))
    tmp.replace(out / "gpu_acceptance.md")
    print(_markdown(rep))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
