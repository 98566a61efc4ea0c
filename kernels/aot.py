"""Ahead-of-time compile report: ``python -m fdgpu.kernels.aot [--cc 80 90] [--json] [--cost]``.

Compiles every kernel variant the launchers can start (``triton.compile(ASTSource(...), target=GPUTarget("cuda",
cc, 32))``: no GPU needed) and prints per kernel: registers, spill stores/loads (``ptxas -v`` on the generated PTX,
with the options Triton uses), shared memory, global load/store instructions, the SASS instruction mix (integer,
fp32, shuffles, shared-memory, barriers) and the static shared-memory check of :func:`shared_memory_findings`;
``--cost`` adds the cost model (estimates) of docs/kernels.md. Run it with ``TRITON_INTERPRET`` unset (the
interpreter replaces the compiler).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, List

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ..choices import BACKWARD_MODES, FACTORS
from . import jpeg as K
from .launch import CONFIGS, FP_FUSION, NUM_STAGES

SUBS = {name: f for name, f in FACTORS.items() if f != (1, 1)}  # the subsampled ones (the _sub / _up kernels)
KERNEL_MODES = {m: rec for m, rec in BACKWARD_MODES.items() if rec.kernel is not None}  # the backward kernels' MODEs


def variants(classes=("large", "small")) -> List[tuple]:
    """(label, kernel, signature, constexprs, warps) for every specialisation the launchers compile, per size class
    (labels of the "small" class end in " small")."""
    out = []
    for cls in classes:
        sfx = "" if cls == "large" else f" {cls}"
        out += [(label + sfx, fn, sig, ce, CONFIGS[cls][fn.fn.__name__ if hasattr(fn, "fn") else fn.__name__][1])
                for label, fn, sig, ce in _variants(cls)]
    return out


def _variants(cls: str) -> List[tuple]:
    cfg = {k: tile for k, (tile, _) in CONFIGS[cls].items()}
    FWD_TILE, SUB_TILE = cfg["_jpeg_fwd_kernel"], cfg["_jpeg_fwd_sub_kernel"]  # noqa: N806
    UP_TILE, BWD_TILE = cfg["_jpeg_up_kernel"], cfg["_jpeg_bwd_kernel"]  # noqa: N806
    out = []
    f32, u8, i32 = "*fp32", "*u8", "i32"
    for c in (1, 3):
        tbh, tbw = FWD_TILE
        sig = dict(p_x=f32, p_y=f32, p_lq=f32, p_cq=f32, p_k="*i32", s_lq=i32, s_cq=i32, H=i32, W=i32, NBH=i32,
                   NBW=i32, NT_W=i32, NT=i32, C="constexpr", TBH="constexpr", TBW="constexpr")
        out.append((f"fwd {'gray' if c == 1 else '4:4:4'}", K._jpeg_fwd_kernel, sig, dict(C=c, TBH=tbh, TBW=tbw)))
    for name, (hs, vs) in SUBS.items():
        tbh, tbw = SUB_TILE
        sig = dict(p_x=f32, p_yb=u8, p_cb=u8, p_lq=f32, p_cq=f32, p_k="*i32", s_lq=i32, s_cq=i32, H=i32, W=i32,
                   HC=i32, WC=i32, NBH=i32, NBW=i32, NT_W=i32, NT=i32, HS="constexpr", VS="constexpr", TBH="constexpr",
                   TBW="constexpr")
        out.append((f"fwd_sub {name}", K._jpeg_fwd_sub_kernel, sig, dict(HS=hs, VS=vs, TBH=tbh, TBW=tbw)))
        for fancy in (True, False):
            bh, bw = UP_TILE
            sig = dict(p_yb=u8, p_cb=u8, p_o=f32, H=i32, W=i32, HC=i32, WC=i32, NT_W=i32, NT=i32, HS="constexpr",
                       VS="constexpr", FANCY="constexpr", BH="constexpr", BW="constexpr")
            out.append((f"up {name}{'' if fancy else ' replicate'}", K._jpeg_up_kernel, sig,
                        dict(HS=hs, VS=vs, FANCY=fancy, BH=bh, BW=bw)))
        for fancy in (True, False):
            sig = dict(p_g=f32, p_gc=f32, H=i32, W=i32, HC=i32, WC=i32, WCP=i32, NBHC=i32, NBWC=i32, NT_W=i32,
                       NT=i32, HS="constexpr", VS="constexpr", FANCY="constexpr", TBH="constexpr", TBW="constexpr")
            out.append((f"bwd_chroma {name}{'' if fancy else ' replicate'}", K._jpeg_bwd_chroma_kernel, sig,
                        dict(HS=hs, VS=vs, FANCY=fancy, TBH=SUB_TILE[0], TBW=SUB_TILE[1])))
        sig = dict(p_x=f32, p_cq=f32, p_k="*i32", p_gc=f32, s_cq=i32, H=i32, W=i32, HC=i32, WCP=i32, NBHC=i32,
                   NBWC=i32, NT_W=i32, NT=i32, HS="constexpr", VS="constexpr", TBH="constexpr", TBW="constexpr")
        out.append((f"bwd_chroma_soft {name}", K._jpeg_bwd_chroma_soft_kernel, sig,
                    dict(HS=hs, VS=vs, TBH=SUB_TILE[0], TBW=SUB_TILE[1])))
    for c, (hs, vs), name in [(1, (1, 1), "gray")] + [(3, f, name) for name, f in FACTORS.items()]:
        for mode, rec in KERNEL_MODES.items():
            if c == 1 and rec.weight is None:
                continue  # grayscale without a rounding weight (ste) is grad.clone(): no kernel
            sig = dict(p_g=f32, p_x=f32, p_gc=f32, p_lq=f32, p_cq=f32, p_k="*i32", p_o=f32, s_lq=i32, s_cq=i32,
                       H=i32, W=i32, HC=i32, WCP=i32, NBH=i32, NBW=i32, NT_W=i32, NT=i32, C="constexpr", HS="constexpr",
                       VS="constexpr", MODE="constexpr", TBH="constexpr", TBW="constexpr")
            out.append((f"bwd {name} {mode}", K._jpeg_bwd_kernel, sig,
                        dict(C=c, HS=hs, VS=vs, MODE=rec.kernel, TBH=BWD_TILE[0], TBW=BWD_TILE[1])))
        for mode, rec in KERNEL_MODES.items():
            tbh, tbw = cfg["_jpeg_bwd_table_kernel"]
            sig = dict(p_g=f32, p_x=f32, p_gc=f32, p_lq=f32, p_cq=f32, p_k="*i32", p_t=f32, s_lq=i32, s_cq=i32,
                       H=i32, W=i32, HC=i32, WCP=i32, NBH=i32, NBW=i32, NT_W=i32, NT=i32, C="constexpr", HS="constexpr",
                       VS="constexpr", MODE="constexpr", TBH="constexpr", TBW="constexpr")
            out.append((f"bwd_table {name} {mode}", K._jpeg_bwd_table_kernel, sig,
                        dict(C=c, HS=hs, VS=vs, MODE=rec.kernel, TBH=tbh, TBW=tbw)))
        # the two halves (fdgpu.encode / fdgpu.decode)
        tbh, tbw = cfg["_jpeg_encode_kernel"]
        sig = dict(p_x=f32, p_qy=f32, p_qc=f32, p_lq=f32, p_cq=f32, p_k="*i32", s_lq=i32, s_cq=i32, H=i32, W=i32,
                   HC=i32, NBH=i32, NBW=i32, NT_W=i32, NT=i32, C="constexpr", HS="constexpr", VS="constexpr",
                   TBH="constexpr", TBW="constexpr")
        out.append((f"encode {name}", K._jpeg_encode_kernel, sig, dict(C=c, HS=hs, VS=vs, TBH=tbh, TBW=tbw)))
        tbh, tbw = cfg["_jpeg_decode_kernel"]
        sig = dict(p_qy=f32, p_qc=f32, p_y=f32, p_yb=u8, p_cb=u8, p_lq=f32, p_bq=f32, p_rq=f32, p_k="*i32", s_q=i32,
                   H=i32, W=i32, HC=i32, WC=i32, NBH=i32, NBW=i32, NT_W=i32, NT=i32, C="constexpr", HS="constexpr",
                   VS="constexpr", TBH="constexpr", TBW="constexpr")
        out.append((f"decode {name}", K._jpeg_decode_kernel, sig, dict(C=c, HS=hs, VS=vs, TBH=tbh, TBW=tbw)))
    bh, bw = UP_TILE  # the decoder's 4:4:4 colour conversion: the upsampler with both factors 1 (replication)
    sig = dict(p_yb=u8, p_cb=u8, p_o=f32, H=i32, W=i32, HC=i32, WC=i32, NT_W=i32, NT=i32, HS="constexpr",
               VS="constexpr", FANCY="constexpr", BH="constexpr", BW="constexpr")
    out.append(("up 4:4:4 replicate", K._jpeg_up_kernel, sig, dict(HS=1, VS=1, FANCY=False, BH=bh, BW=bw)))
    return out


@dataclass
class Report:
    kernel: str
    cc: int
    registers: int
    spill_stores: int
    spill_loads: int
    shared: int
    ptx_ld_global: int
    ptx_st_global: int
    sass_ldg: int
    sass_stg: int
    sass_instructions: int   # whole kernel, static count
    sass_int: int            # integer ALU (IMAD, IADD3, LOP3, SHF, LEA, ISETP, ...)
    sass_fp32: int           # FADD, FMUL, FFMA, FMNMX, FSETP, FRND, FSEL
    sass_shfl: int           # warp shuffles (a reduction across lanes)
    sass_shared: int         # shared-memory instructions: LDS, STS, LDSM, STSM
    sass_bar: int
    dots: int                # tt.dot in the TTGIR (operands staged in shared memory)
    unswizzled_shared: int   # explicit shared allocations whose encoding is not swizzled (maxPhase = 1)


def _tool(name: str) -> str:
    from triton.backends.nvidia import compiler as nv
    return os.path.join(os.path.dirname(nv.__file__), "bin", name)


def _ptxas_info(ptx: str, cc: int) -> Dict[str, int]:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        # the ptxas and the options Triton itself uses for this architecture (make_cubin), plus -v
        cmd = [get_ptxas(cc).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_arch_from_capability(cc)}", src, "-o", os.path.join(d, "k.cubin")]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    text = res.stdout + res.stderr
    regs = re.search(r"Used (\d+) registers", text)
    st = re.search(r"(\d+) bytes spill stores", text)
    ld = re.search(r"(\d+) bytes spill loads", text)
    return dict(registers=int(regs.group(1)) if regs else -1, spill_stores=int(st.group(1)) if st else 0,
                spill_loads=int(ld.group(1)) if ld else 0)


_INT = {"IMAD", "IADD3", "IADD", "VIADD", "LOP3", "SHF", "LEA", "ISETP", "IABS", "IMNMX", "VIMNMX", "SEL", "SGXT",
        "PRMT", "BMSK", "I2F", "F2I", "IMUL"}
_FP32 = {"FADD", "FMUL", "FFMA", "FMNMX", "FSETP", "FRND", "FSEL", "MUFU"}


def _sass_opcodes(cubin: bytes) -> List[str]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        sass = subprocess.run([_tool("cuobjdump"), "-sass", path], capture_output=True, text=True, check=True).stdout
    # "/*0a40*/  @!P1 LDG.E R24, desc[...]" -> "LDG"
    return [m.split(".")[0] for m in re.findall(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)", sass,
                                                 re.M)]


def shared_memory_findings(ttgir: str) -> Dict[str, int]:
    """Static check of how a kernel uses shared memory, from its TTGIR. Shared memory is touched in two ways:
    explicit allocations (``ttg.local_alloc``: ``tt.dot`` operands, pipelining buffers) whose encoding fixes the
    access pattern, and layout conversions (``ttg.convert_layout``), whose scratch layout Triton's lowering swizzles
    itself (stmatrix / ldmatrix or swizzled LDS/STS). The review's bank conflicts came from the first kind: the DCT
    matrix staged for a ``tt.dot`` in an unswizzled (``maxPhase = 1``) layout, read column-contiguously, every lane
    of a warp in the same four banks. Returns the number of dots and of unswizzled explicit allocations."""
    encodings = dict(re.findall(r"^(#[\w]+) = (#ttg\.[\w_]*shared<\{[^}]*\}>)", ttgir, re.M))
    unswizzled = 0
    for m in re.finditer(r"ttg\.local_alloc[^\n]*!ttg\.memdesc<[^,]*, (#[\w]+)", ttgir):
        enc = encodings.get(m.group(1), "")
        phase = re.search(r"maxPhase = (\d+)", enc)
        if "nvmma_shared" not in enc and (phase is None or int(phase.group(1)) <= 1):
            unswizzled += 1
    return dict(dots=len(re.findall(r"\btt\.dot\b|ttng\.warp_group_dot", ttgir)), unswizzled_shared=unswizzled)


def compile_one(label, fn, sig, constexprs, warps, cc: int) -> Report:
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                              options=dict(num_warps=warps, num_stages=NUM_STAGES, enable_fp_fusion=FP_FUSION))
    ptx = compiled.asm["ptx"]
    info = _ptxas_info(ptx, cc)
    ops = _sass_opcodes(compiled.asm["cubin"])
    n = lambda *names: sum(o in names for o in ops)  # noqa: E731
    return Report(label, cc, info["registers"], info["spill_stores"], info["spill_loads"],
                  int(compiled.metadata.shared), len(re.findall(r"\bld\.global", ptx)),
                  len(re.findall(r"\bst\.global", ptx)), n("LDG"), n("STG"), len(ops),
                  sum(o in _INT for o in ops), sum(o in _FP32 for o in ops), n("SHFL"),
                  n("LDS", "STS", "LDSM", "STSM"), n("BAR"), **shared_memory_findings(compiled.asm["ttgir"]))


def _compile_indexed(args):
    i, cc = args
    return compile_one(*variants()[i], cc)


def report(ccs=(80, 90), jobs: int = 1) -> List[Report]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("TRITON_INTERPRET=1 replaces the compiler by the interpreter: unset it to compile")
    todo = [(i, cc) for cc in ccs for i in range(len(variants()))]
    if jobs <= 1:
        return [_compile_indexed(t) for t in todo]
    import concurrent.futures as cf
    import multiprocessing as mp
    with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as pool:  # compile-only: no CUDA context
        return list(pool.map(_compile_indexed, todo))


# ----------------------------------------------------------------------------------------- executed paths
# The kernels branch at run time on two things: whether a program's table holds integer steps (the quantizer's
# int32 path, every JPEG table) or not (its float64 path), and, in the 4:2:x forward and the table-gradient
# kernel, whether a program codes a luma tile or a chroma plane. A static count of the whole kernel counts both
# sides of both. Here each side is compiled on its own: a copy of kernels/jpeg.py whose branch conditions are
# replaced by constants (the compiler then drops the other side), so its static count is the count of what that
# program executes (no data-dependent loops remain; the 3-plane loop of LOOP3 is counted by the model).
_BRANCHES = {  # condition in kernels/jpeg.py -> the pin that replaces it
    "if tl.min(tl.where(b_qi.to(tl.float32) == b_q, 1, 0)) == 1:": "if _PIN_INT:",
    "if tl.min(tl.where(b_qi.to(tl.float32) == b_qc, 1, 0)) == 1:": "if _PIN_INT:",
    "    if i_p < NL:\n": "    if _PIN_LUMA:\n",
    "    elif i_p < NL:\n": "    elif _PIN_LUMA:\n",
}
PATHS = {"int luma": (True, True), "int chroma": (True, False), "float luma": (False, True),
         "float chroma": (False, False)}


def pinned_module(integer: bool, luma: bool, folder: str):
    """kernels/jpeg.py with its run-time branches pinned (see :data:`_BRANCHES`), imported from ``folder``."""
    import importlib.util
    src = open(K.__file__).read()
    for cond, pin in _BRANCHES.items():
        if cond not in src:
            raise RuntimeError(f"aot: the branch {cond.strip()!r} is no longer in kernels/jpeg.py: update _BRANCHES")
        src = src.replace(cond, pin)
    src += f"\n_PIN_INT = tl.constexpr({integer})\n_PIN_LUMA = tl.constexpr({luma})\n"
    name = f"_jpeg_pinned_{int(integer)}{int(luma)}"
    path = os.path.join(folder, name + ".py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def path_counts(labels, cc: int, cls: str = "large") -> Dict[str, Dict[str, int]]:
    """``{kernel label: {path: SASS instructions}}`` for the variants ``labels`` (of :func:`variants`) on each
    executed path of :data:`PATHS`, compiled for ``cc``."""
    out: Dict[str, Dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as d:
        for path, (integer, luma) in PATHS.items():
            mod = pinned_module(integer, luma, d)
            for label, fn, sig, ce, warps in variants((cls,)):
                if label not in labels:
                    continue
                pinned = getattr(mod, (fn.fn if hasattr(fn, "fn") else fn).__name__)
                src = ASTSource(fn=pinned, signature=sig, constexprs=ce)
                compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                                          options=dict(num_warps=warps, num_stages=NUM_STAGES,
                                                       enable_fp_fusion=FP_FUSION))
                out.setdefault(label, {})[path] = len(_sass_opcodes(compiled.asm["cubin"]))
    return out


# GPUs of the cost model: SMs, SM clock (GHz, boost), DRAM bandwidth (TB/s). Data-sheet figures.
GPUS = {"A100-SXM4-40GB": (108, 1.41, 1.555), "H100-SXM5": (132, 1.98, 3.35)}
# DRAM bytes per pixel of each kernel (fp32 image planes, uint8 decoded planes; each input read once, neighbours
# and the re-reads of one MCU's RGB from L1/L2), from the code: see docs/kernels.md.
DRAM_BPP = {"fwd gray": 8, "fwd 4:4:4": 24, "fwd_sub 4:2:2": 14, "fwd_sub 4:2:0": 13.5, "up 4:2:2": 14,
            "up 4:2:0": 13.5,
            "bwd_chroma 4:2:2": 16, "bwd_chroma 4:2:0": 14, "bwd_chroma_soft 4:2:2": 20, "bwd_chroma_soft 4:2:0": 16,
            "bwd 4:4:4 ste": 24, "bwd 4:2:2 ste": 28, "bwd 4:2:0 ste": 26, "bwd gray soft": 12,
            "bwd 4:4:4 soft": 36, "bwd 4:2:2 soft": 40, "bwd 4:2:0 soft": 38}
PASSES_224 = {  # pass -> (channels, subsampling, [(kernel label, launcher kernel name)])
    "forward gray": (1, "4:2:0", [("fwd gray", "_jpeg_fwd_kernel")]),
    "forward 4:4:4": (3, "4:4:4", [("fwd 4:4:4", "_jpeg_fwd_kernel")]),
    "forward 4:2:0": (3, "4:2:0", [("fwd_sub 4:2:0", "_jpeg_fwd_sub_kernel"), ("up 4:2:0", "_jpeg_up_kernel")]),
    "backward ste 4:2:0": (3, "4:2:0", [("bwd_chroma 4:2:0", "_jpeg_bwd_chroma_kernel"),
                                         ("bwd 4:2:0 ste", "_jpeg_bwd_kernel")]),
    "backward soft 4:4:4": (3, "4:4:4", [("bwd 4:4:4 soft", "_jpeg_bwd_kernel")]),
    "backward soft 4:2:0": (3, "4:2:0", [("bwd_chroma 4:2:0", "_jpeg_bwd_chroma_kernel"),
                                          ("bwd_chroma_soft 4:2:0", "_jpeg_bwd_chroma_soft_kernel"),
                                          ("bwd 4:2:0 soft", "_jpeg_bwd_kernel")]),
}
# Kernels whose codec sits in a 3-trip runtime loop (one plane per trip): the static count covers one trip.
LOOP3 = {"fwd 4:4:4", "bwd 4:4:4 soft"}


def cost_model(rows: List[Report], size: int = 224) -> List[dict]:
    """ESTIMATES, not measurements: per pass and GPU, the time of one ``size``^2 image in a large batch as the
    largest of three bounds: DRAM bytes / bandwidth, warp instructions / issue rate (4 per SM per clock) and
    integer instructions / integer rate (IMAD-class: 2 warp instructions per SM per clock on sm_80/sm_90). Warp
    instructions = programs per image x warps x static SASS instructions (no loops but the 3-plane loop, counted
    3x). Ignores latency, occupancy and tails, so real kernels are slower; a GPU run of
    benchmarks/test_bench_gpu.py is the measurement."""
    from .launch import backward_plan, forward_plan
    by = {(r.kernel, r.cc): r for r in rows}
    out = []
    for name, (ch, sub, ks) in PASSES_224.items():
        fwd = name.startswith("forward")
        plan = (forward_plan(1, ch, size, size, sub) if fwd else
                backward_plan(1, ch, size, size, sub, "soft" if "soft" in name else "ste", False))
        for gpu, (sms, ghz, tbs) in GPUS.items():
            cc = 80 if gpu.startswith("A100") else 90
            if any((k, cc) not in by for k, _ in ks):
                continue
            instr = ints = shared = 0.0
            for label, kname in ks:
                r = by[(label, cc)]
                warps = plan[kname].nt * plan[kname].warps * (3 if label in LOOP3 else 1)
                instr += warps * r.sass_instructions
                ints += warps * r.sass_int
                shared += warps * r.sass_shared
            dram = sum(DRAM_BPP[label] for label, _ in ks) * size * size
            t_dram = dram / (tbs * 1e12) * 1e6
            t_issue = instr / (sms * 4 * ghz * 1e9) * 1e6
            t_int = ints / (sms * 2 * ghz * 1e9) * 1e6
            out.append(dict(pass_=name, gpu=gpu, dram_MB=dram / 1e6, warp_instr_k=instr / 1e3, int_instr_k=ints / 1e3,
                            shared_instr_k=shared / 1e3, us_dram=t_dram, us_issue=t_issue, us_int=t_int,
                            us_estimate=max(t_dram, t_issue, t_int)))
    return out


def occupancy(registers: int, warps: int, shared: int, cc: int) -> int:
    """Resident warps per SM (of 64) for a kernel of ``registers`` per thread, ``warps`` per CTA and ``shared``
    bytes per CTA: 64K registers per SM allocated per warp in units of 256, at most 32 CTAs and 64 warps per SM,
    shared memory 164 KB (sm_80) / 228 KB (sm_90) per SM."""
    per_warp = -(-registers * 32 // 256) * 256
    ctas = min(65536 // (per_warp * warps), 32, 64 // warps,
               ((164 if cc == 80 else 228) * 1024) // shared if shared else 32)
    return ctas * warps


def cost_model_executed(rows: List[Report], paths: Dict[int, Dict[str, Dict[str, int]]], size: int = 224,
                        integer: bool = True) -> List[dict]:
    """:func:`cost_model` with the instructions each program executes (:func:`path_counts`, integer or float
    tables) instead of the whole static kernel: luma and chroma programs of the 4:2:x forward counted each with its
    own path, ``NL = HS x VS`` luma programs and 2 chroma programs per tile. Adds the kernels' occupancy (resident
    warps per SM, :func:`occupancy`; the issue bound assumes at least 16, 4 per scheduler, to hide latency) and the
    static count beside for comparison. ESTIMATES, not measurements."""
    from .launch import backward_plan, forward_plan
    by = {(r.kernel, r.cc): r for r in rows}
    kind = "int" if integer else "float"
    out = []
    for name, (ch, sub, ks) in PASSES_224.items():
        fwd = name.startswith("forward")
        plan = (forward_plan(1, ch, size, size, sub) if fwd else
                backward_plan(1, ch, size, size, sub, "soft" if "soft" in name else "ste", False))
        hs, vs = FACTORS[sub]
        for gpu, (sms, ghz, tbs) in GPUS.items():
            cc = 80 if gpu.startswith("A100") else 90
            if cc not in paths or any((k, cc) not in by for k, _ in ks):
                continue
            instr = static = 0.0
            occ = []
            for label, kname in ks:
                r, pl = by[(label, cc)], plan[kname]
                trips = 3 if label in LOOP3 else 1
                counts = paths[cc][label]
                if label.startswith("fwd_sub"):
                    nl = hs * vs
                    per = (nl * counts[f"{kind} luma"] + 2 * counts[f"{kind} chroma"]) / (nl + 2)
                else:
                    per = counts[f"{kind} luma"]
                instr += pl.nt * pl.warps * trips * per
                static += pl.nt * pl.warps * trips * r.sass_instructions
                occ.append(f"{label} {occupancy(r.registers, pl.warps, r.shared, cc)}")
            dram = sum(DRAM_BPP[label] for label, _ in ks) * size * size
            t_dram = dram / (tbs * 1e12) * 1e6
            t_issue = instr / (sms * 4 * ghz * 1e9) * 1e6
            out.append(dict(pass_=name, gpu=gpu, tables=kind, dram_MB=dram / 1e6, executed_k=instr / 1e3,
                            static_k=static / 1e3, occupancy=", ".join(occ), us_dram=t_dram, us_issue=t_issue,
                            us_estimate=max(t_dram, t_issue)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fdgpu.kernels.aot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cc", type=int, nargs="+", default=[80, 90], help="compute capabilities (default 80 90)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--cost", action="store_true", help="also print the cost model (estimates) per 224^2 image")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="parallel compiles (default: "
                    "up to 4 CPUs)")
    args = ap.parse_args(argv)
    rows = report(tuple(args.cc), jobs=args.jobs)
    if args.cost and not args.json:
        print("ESTIMATES per 224x224 image in a large batch (no GPU measured): max of DRAM, issue and integer bounds")
        print(f"| {'pass':<20} | {'GPU':<15} | DRAM MB | warp instr (k) | int (k) | shared (k) | DRAM us | issue us "
              f"| int us | estimate us |")
        for c in cost_model(rows):
            print(f"| {c['pass_']:<20} | {c['gpu']:<15} | {c['dram_MB']:>7.2f} | {c['warp_instr_k']:>14.0f} | "
                  f"{c['int_instr_k']:>7.0f} | {c['shared_instr_k']:>10.1f} | {c['us_dram']:>7.2f} | "
                  f"{c['us_issue']:>8.2f} | {c['us_int']:>6.2f} | {c['us_estimate']:>11.2f} |")
        print()
        paths = {cc: path_counts({label for _, _, ks in PASSES_224.values() for label, _ in ks}, cc)
                 for cc in args.cc}
        print("ESTIMATES per 224x224 image, instructions of the EXECUTED path (integer tables; float in brackets)")
        print(f"| {'pass':<20} | {'GPU':<15} | warp instr executed (k) | static (k) | DRAM us | issue us "
              f"| estimate us | resident warps/SM |")
        flt = {(c["pass_"], c["gpu"]): c for c in cost_model_executed(rows, paths, integer=False)}
        for c in cost_model_executed(rows, paths):
            f = flt[(c["pass_"], c["gpu"])]
            print(f"| {c['pass_']:<20} | {c['gpu']:<15} | {c['executed_k']:>8.0f} ({f['executed_k']:.0f}) | "
                  f"{c['static_k']:>10.0f} | {c['us_dram']:>7.2f} | {c['us_issue']:>8.2f} | "
                  f"{c['us_estimate']:>5.2f} ({f['us_estimate']:.2f}) | {c['occupancy']} |")
        print()
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
        return 0
    print(f"triton {triton.__version__}, num_stages={NUM_STAGES}, enable_fp_fusion={FP_FUSION}, "
          f"size classes (tile, warps): {CONFIGS}")
    print(f"| {'kernel':<28} | sm | regs | spill st/ld (B) | smem (B) | SASS LDG/STG | SASS instr | int | fp32 "
          f"| SHFL | LDS/STS | BAR | dots | unswizzled |")
    print(f"|{'-' * 30}|----|------|-----------------|----------|--------------|------------|-----|------|"
          f"------|---------|-----|------|------------|")
    for r in rows:
        print(f"| {r.kernel:<28} | {r.cc} | {r.registers:>4} | {r.spill_stores:>7} / {r.spill_loads:<5} | "
              f"{r.shared:>8} | {r.sass_ldg:>5} / {r.sass_stg:<5} | {r.sass_instructions:>10} | {r.sass_int:>3} | "
              f"{r.sass_fp32:>4} | {r.sass_shfl:>4} | {r.sass_shared:>7} | {r.sass_bar:>3} | {r.dots:>4} | "
              f"{r.unswizzled_shared:>10} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
