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
import ast
import functools
from dataclasses import asdict, dataclass, field
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Tuple

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
                        dict(HS=hs, VS=vs, FANCY=fancy, TBH=cfg["_jpeg_bwd_chroma_kernel"][0],
                             TBW=cfg["_jpeg_bwd_chroma_kernel"][1])))
        sig = dict(p_x=f32, p_cq=f32, p_k="*i32", p_gc=f32, s_cq=i32, H=i32, W=i32, HC=i32, WCP=i32, NBHC=i32,
                   NBWC=i32, NT_W=i32, NT=i32, HS="constexpr", VS="constexpr", TBH="constexpr", TBW="constexpr")
        out.append((f"bwd_chroma_soft {name}", K._jpeg_bwd_chroma_soft_kernel, sig,
                    dict(HS=hs, VS=vs, TBH=cfg["_jpeg_bwd_chroma_soft_kernel"][0],
                         TBW=cfg["_jpeg_bwd_chroma_soft_kernel"][1])))
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
    # executed instructions per trip through the kernel, split by the runtime branch regions they sit in
    # (:func:`executed_regions`): "" (every path), "luma", "chroma", "int", "f64", ... joined by "+" when nested;
    # values [all, int, fp32, shared], loop bodies already multiplied by their trip count
    regions: Dict[str, List[int]] = field(default_factory=dict)


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
_SHARED = {"LDS", "STS", "LDSM", "STSM"}

# The kernels' runtime branches (a branch on a constexpr is compiled away; these are not): (function, source of
# the ``if`` test) -> (region of its body, region of its else branch). A warp runs one side of each: the program
# index, the plane and the table are uniform across a program. The cost model sums the regions of a path.
RUNTIME_BRANCHES = {
    ("_quantize", "tl.min(tl.where(b_qi.to(tl.float32) == b_q, 1, 0)) == 1"): ("int", "f64"),
    ("_quotient", "tl.min(tl.where(b_qi.to(tl.float32) == b_qc, 1, 0)) == 1"): ("int", "f64"),
    ("_jpeg_bwd_table_kernel", "i_p < NL"): ("luma", "chroma"),
    ("_dequantize", "tl.min(tl.where(b_qi.to(tl.float32) == b_q, 1, 0)) == 1"): ("int", "f64"),
    ("_jpeg_encode_kernel", "i_p < NL"): ("luma", "chroma"),
    ("_jpeg_decode_kernel", "i_p < NL"): ("luma", "chroma"),
}
# Runtime loops (``for ... in range(n)`` with n not a constexpr): kernel label -> trips.
LOOP_TRIPS = {"fwd 4:4:4": 3, "bwd 4:4:4 soft": 3}


@functools.lru_cache(maxsize=None)
def branch_lines() -> Dict[int, str]:
    """Line of ``kernels/jpeg.py`` -> the branch region (:data:`RUNTIME_BRANCHES`) it belongs to; every branch of
    :data:`RUNTIME_BRANCHES` must be found (a renamed test would otherwise silently count both sides)."""
    src = open(K.__file__).read()
    tree = ast.parse(src)
    out: Dict[int, str] = {}
    found = set()
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for node in (n for n in ast.walk(fn) if isinstance(n, ast.If)):
            key = (fn.name, ast.get_source_segment(src, node.test))
            if key not in RUNTIME_BRANCHES:
                continue
            found.add(key)
            for part, region in zip((node.body, node.orelse), RUNTIME_BRANCHES[key]):
                if not part:
                    continue
                for line in range(part[0].lineno, part[-1].end_lineno + 1):
                    out[line] = region
    missing = set(RUNTIME_BRANCHES) - found
    if missing:
        raise RuntimeError(f"kernels/jpeg.py: runtime branches of the cost model not found: {sorted(missing)}")
    return out


def _disassemble(cubin: bytes) -> str:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        # -g -gi: every instruction preceded by its source location and the whole inlining chain
        return subprocess.run([_tool("nvdisasm"), "-c", "-g", "-gi", path], capture_output=True, text=True,
                              check=True).stdout


_INSTR = re.compile(r"^\s+/\*([0-9a-f]+)\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)(.*)$")
_LOC = re.compile(r'//## File "([^"]+)", line (\d+)')


def _parse_sass(sass: str, jpeg_py: str) -> List[dict]:
    """The kernel's instructions (the entry function only: the compiler's out-of-line slow paths such as the
    float64 division's are not counted) as dicts: addr, op (opcode without modifiers), pred, target (branch
    label), label (the label opening a block here, if any), lines (jpeg.py lines of the inlining chain)."""
    out: List[dict] = []
    chain: FrozenSet[int] = frozenset()
    pending: List[int] = []
    label: Optional[str] = None
    started = False
    for raw in sass.splitlines():
        if raw.startswith(".text."):
            started = True
            continue
        if not started:
            continue
        if ".type" in raw and "@function" in raw:
            break                                                          # the next function: a subroutine
        m = re.match(r"^(\.L_x_\d+):", raw)
        if m:
            label = m.group(1)
            continue
        if "//##" in raw:
            pending += [int(n) for f, n in _LOC.findall(raw) if os.path.realpath(f) == jpeg_py]
            continue
        m = _INSTR.match(raw)
        if not m:
            continue
        if pending:
            chain, pending = frozenset(pending), []
        t = re.search(r"`\((\.L_x_\d+)\)", m.group(4))
        out.append(dict(addr=int(m.group(1), 16), op=m.group(3).split(".")[0], pred=bool(m.group(2)),
                        target=t.group(1) if t else None, label=label, lines=chain))
        label = None
    return out


def executed_regions(sass: str, label: str) -> Dict[str, List[int]]:
    """Executed instructions of one trip through a kernel, split by branch region: basic blocks (split at labels
    and after branches and exits), each assigned the region set that most of its instructions' inlining chains
    fall in (:func:`branch_lines`), loop bodies (a branch backwards) multiplied by :data:`LOOP_TRIPS`. Both sides
    of data-dependent branches inside a region are counted (lanes of a warp diverge there). Returns
    ``{"region+region": [all, int, fp32, shared]}``, ``""`` for the blocks every path runs."""
    lines = branch_lines()
    ins = _parse_sass(sass, os.path.realpath(K.__file__))
    blocks: List[List[dict]] = []
    for i in ins:
        if i["label"] is not None or not blocks or blocks[-1][-1]["op"] in ("BRA", "EXIT", "BRX", "RET"):
            blocks.append([])
        blocks[-1].append(i)
    start = {b[0]["label"]: b[0]["addr"] for b in blocks if b[0]["label"]}
    loops: List[Tuple[int, int]] = []
    for b in blocks:
        last = b[-1]
        if last["op"] == "BRA" and last["target"] in start and start[last["target"]] <= last["addr"]:
            if len(b) == 1 and start[last["target"]] == last["addr"]:
                continue                                                   # the trap loop after the last EXIT
            loops.append((start[last["target"]], last["addr"]))
    if loops and label.replace(" small", "") not in LOOP_TRIPS:
        raise RuntimeError(f"{label}: a runtime loop the cost model does not know the trips of (LOOP_TRIPS)")
    trips = LOOP_TRIPS.get(label.replace(" small", ""), 1)
    out: Dict[str, List[int]] = {}
    for b in blocks:
        if len(b) == 1 and b[0]["op"] == "BRA" and b[0]["target"] == b[0]["label"]:
            continue
        votes: Dict[str, int] = {}
        for i in b:
            key = "+".join(sorted({lines[n] for n in i["lines"] if n in lines}))
            votes[key] = votes.get(key, 0) + 1
        key = max(votes, key=lambda k: (votes[k], k))
        w = trips if any(lo <= b[0]["addr"] <= hi for lo, hi in loops) else 1
        ops = [i["op"] for i in b]
        row = out.setdefault(key, [0, 0, 0, 0])
        for j, n in enumerate((len(ops), sum(o in _INT for o in ops), sum(o in _FP32 for o in ops),
                               sum(o in _SHARED for o in ops))):
            row[j] += w * n
    return out


def region_counts(regions: Dict[str, List[int]], path: FrozenSet[str]) -> List[int]:
    """[all, int, fp32, shared] executed on the path (a set of regions, e.g. {"luma", "int"}): the blocks of
    every region key whose regions all lie on the path."""
    tot = [0, 0, 0, 0]
    for key, row in regions.items():
        if set(filter(None, key.split("+"))) <= path:
            tot = [a + b for a, b in zip(tot, row)]
    return tot


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
    opts = dict(num_warps=warps, num_stages=NUM_STAGES, enable_fp_fusion=FP_FUSION)
    compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=opts)
    sass = _disassemble(compiled.asm["cubin"])
    if _LOC.search(sass) and not any(os.path.realpath(f) == os.path.realpath(K.__file__) for f, _ in
                                     _LOC.findall(sass)):
        # from Triton's cache, compiled in another checkout of the same source: its line numbers (which the
        # executed-path model reads) may be that checkout's
        triton.knobs.compilation.always_compile = True
        try:
            compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=opts)
        finally:
            triton.knobs.compilation.always_compile = False
        sass = _disassemble(compiled.asm["cubin"])
    ptx = compiled.asm["ptx"]
    info = _ptxas_info(ptx, cc)
    ops = _sass_opcodes(compiled.asm["cubin"])
    n = lambda *names: sum(o in names for o in ops)  # noqa: E731
    return Report(label, cc, info["registers"], info["spill_stores"], info["spill_loads"],
                  int(compiled.metadata.shared), len(re.findall(r"\bld\.global", ptx)),
                  len(re.findall(r"\bst\.global", ptx)), n("LDG"), n("STG"), len(ops),
                  sum(o in _INT for o in ops), sum(o in _FP32 for o in ops), n("SHFL"),
                  n("LDS", "STS", "LDSM", "STSM"), n("BAR"), **shared_memory_findings(compiled.asm["ttgir"]),
                  regions=executed_regions(sass, label))


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


# ------------------------------------------------------------------ executed paths, compiled apart (a cross-check)
# A second way to count a path, used to check :func:`executed_regions`: each side of the runtime branches compiled
# on its own, from a copy of kernels/jpeg.py whose branch conditions are replaced by constants (the compiler then
# drops the other side), so that its static count is what that program executes. Four extra compiles per variant,
# and the compiler schedules a pinned kernel a little differently, so the model reads the regions of the one
# compile instead; tests/test_kernels_aot.py compares the two.
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


class Gpu(NamedTuple):
    sms: int
    ghz: float          # SM boost clock
    tbs: float          # DRAM bandwidth, TB/s
    smem_kb: int        # shared memory a CTA may use per SM
    cc: int


# GPUs of the cost model (data-sheet figures). Both: 65,536 registers, 64 resident warps, 32 CTAs and 4 warp
# schedulers per SM.
GPUS = {"A100-SXM4-40GB": Gpu(108, 1.41, 1.555, 164, 80), "H100-SXM5": Gpu(132, 1.98, 3.35, 228, 90)}
# Assumed: a scheduler issues every clock when it holds >= 4 resident warps (ALU latency ~4 clocks, one
# independent instruction per warp); with fewer, its issue rate drops in proportion.
WARPS_TO_HIDE = 4
# DRAM bytes per pixel of each kernel (fp32 image planes, uint8 decoded planes; each input read once, neighbours
# and the re-reads of one MCU's RGB from L1/L2), from the code: see docs/kernels.md.
DRAM_BPP = {"fwd gray": 8, "fwd 4:4:4": 24, "fwd_sub 4:2:2": 14, "fwd_sub 4:2:0": 13.5, "up 4:2:2": 14,
            "up 4:2:0": 13.5,
            "bwd_chroma 4:2:2": 16, "bwd_chroma 4:2:0": 14, "bwd_chroma_soft 4:2:2": 20, "bwd_chroma_soft 4:2:0": 16,
            "bwd 4:4:4 ste": 24, "bwd 4:2:2 ste": 28, "bwd 4:2:0 ste": 26, "bwd gray soft": 12,
            "bwd 4:4:4 soft": 36, "bwd 4:2:2 soft": 40, "bwd 4:2:0 soft": 38}
PASSES = {  # pass -> (channels, subsampling, [(kernel label, launcher kernel name, paths)])
    "forward gray": (1, "4:2:0", [("fwd gray", "_jpeg_fwd_kernel", None)]),
    "forward 4:4:4": (3, "4:4:4", [("fwd 4:4:4", "_jpeg_fwd_kernel", None)]),
    "forward 4:2:0": (3, "4:2:0", [("fwd_sub 4:2:0", "_jpeg_fwd_sub_kernel", None),
                                    ("up 4:2:0", "_jpeg_up_kernel", None)]),
    "backward ste 4:2:0": (3, "4:2:0", [("bwd_chroma 4:2:0", "_jpeg_bwd_chroma_kernel", None),
                                         ("bwd 4:2:0 ste", "_jpeg_bwd_kernel", None)]),
    "backward soft 4:4:4": (3, "4:4:4", [("bwd 4:4:4 soft", "_jpeg_bwd_kernel", None)]),
    "backward soft 4:2:0": (3, "4:2:0", [("bwd_chroma 4:2:0", "_jpeg_bwd_chroma_kernel", None),
                                          ("bwd_chroma_soft 4:2:0", "_jpeg_bwd_chroma_soft_kernel", None),
                                          ("bwd 4:2:0 soft", "_jpeg_bwd_kernel", None)]),
}


def occupancy(registers: int, warps: int, shared: int, gpu: Gpu) -> int:
    """Resident warps per SM of a kernel: registers are allocated per warp in units of 256 (32 lanes x registers
    rounded up to 8), 65,536 per SM; at most 64 warps and 32 CTAs per SM; shared memory per CTA plus the 1 KB
    the driver reserves per CTA."""
    per_warp = -(-registers * 32 // 256) * 256
    ctas = min(65536 // per_warp // warps, 64 // warps, 32)
    if shared:
        ctas = min(ctas, gpu.smem_kb * 1024 // (shared + 1024))
    return ctas * warps


def padding_share(h: int, w: int, subsampling: str, launch) -> float:
    """The share of ``_jpeg_bwd_kernel``'s tiles that hold edge replication (none for images of whole MCUs). The
    cost model weighs a ``"fold"`` region by it; ``kernels/jpeg.py`` has no such runtime branch (the fold is
    compiled in by the constexpr ``FOLD``: soft, or 4:2:x), so every tile counts the same instructions."""
    from ..choices import FACTORS
    hs, vs = FACTORS[subsampling]
    hp, wp = -(-h // (8 * vs)) * 8 * vs, -(-w // (8 * hs)) * 8 * hs
    (tbh, tbw), nt_w = launch.tile, launch.nt_w
    nt_h = launch.nt // nt_w
    hit = sum(((h < hp) and (i + 1) * tbh * 8 > h) or ((w < wp) and (j + 1) * tbw * 8 > w)
              for i in range(nt_h) for j in range(nt_w))
    return hit / launch.nt


def cost_model(rows: List[Report], size: int = 224) -> List[dict]:
    """ESTIMATES, not measurements: per pass, table kind (integer steps: every JPEG table; fractional steps: the
    float64 quantizer) and GPU, the time of one ``size``^2 image in a large batch.

    Per kernel: warp instructions executed = programs per image (``forward_plan`` / ``backward_plan``) x warps x
    the instructions of the path each program runs (:func:`executed_regions`: the integer or float64 quantizer,
    runtime loops times their trips), of which integer ALU. Bounds: DRAM bytes / bandwidth; warp instructions / (SMs x 4
    schedulers x clock x e); integer instructions / (SMs x 2 x clock x e) (IMAD-class: half the issue rate on
    sm_80/sm_90), with e = min(1, resident warps per scheduler / :data:`WARPS_TO_HIDE`) from :func:`occupancy`.
    A kernel takes the largest of its bounds; a pass the sum of its kernels. Ignores tails, launch gaps, memory
    latency beyond the occupancy factor and shared-memory cycles."""
    from .launch import backward_plan, forward_plan
    by = {(r.kernel, r.cc): r for r in rows}
    out = []
    for name, (ch, sub, ks) in PASSES.items():
        fwd = name.startswith("forward")
        plan = (forward_plan(1, ch, size, size, sub) if fwd else
                backward_plan(1, ch, size, size, sub, "soft" if "soft" in name else "ste", False))
        for tables in ("int", "f64"):
            for gpu_name, gpu in GPUS.items():
                if any((k, gpu.cc) not in by for k, _, _ in ks):
                    continue
                tot = dict(instr=0.0, ints=0.0, dram=0.0, us_dram=0.0, us_issue=0.0, us_int=0.0, us=0.0)
                warps_min = 64
                for label, kname, paths in ks:
                    r = by[(label, gpu.cc)]
                    if kname == "_jpeg_bwd_kernel":
                        share = padding_share(size, size, sub, plan[kname])
                        paths = [({"fold"}, share), (set(), 1.0 - share)]
                    elif paths is None:
                        paths = [(set(), 1.0)]
                    per_program = [0.0, 0.0]
                    for regions, share in paths:
                        cnt = region_counts(r.regions, frozenset(regions | {tables}))
                        per_program[0] += share * cnt[0]
                        per_program[1] += share * cnt[1]
                    warps = plan[kname].nt * plan[kname].warps
                    resident = occupancy(r.registers, plan[kname].warps, r.shared, gpu)
                    warps_min = min(warps_min, resident)
                    e = min(1.0, resident / 4 / WARPS_TO_HIDE)
                    instr, ints = warps * per_program[0], warps * per_program[1]
                    dram = DRAM_BPP[label] * size * size
                    t_dram = dram / (gpu.tbs * 1e12) * 1e6
                    t_issue = instr / (gpu.sms * 4 * gpu.ghz * 1e9 * e) * 1e6
                    t_int = ints / (gpu.sms * 2 * gpu.ghz * 1e9 * e) * 1e6
                    for k, v in dict(instr=instr, ints=ints, dram=dram, us_dram=t_dram, us_issue=t_issue,
                                     us_int=t_int, us=max(t_dram, t_issue, t_int)).items():
                        tot[k] += v
                out.append(dict(pass_=name, tables=tables, gpu=gpu_name, dram_MB=tot["dram"] / 1e6,
                                warp_instr_k=tot["instr"] / 1e3, int_instr_k=tot["ints"] / 1e3,
                                min_resident_warps=warps_min, us_dram=tot["us_dram"], us_issue=tot["us_issue"],
                                us_int=tot["us_int"], us_estimate=tot["us"], x_roofline=tot["us"] / tot["us_dram"]))
    return out


def cost_table(rows: List[Report]) -> str:
    """The cost model as the markdown table of docs/kernels.md (``--cost`` prints it; a test compares)."""
    out = ["| pass | tables | GPU | DRAM MB | warp instr (k) | int (k) | min warps/SM | DRAM µs | issue µs | int µs "
           "| **estimate µs** | × DRAM |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cost_model(rows):
        out.append(f"| {c['pass_']} | {c['tables']} | {c['gpu'].split('-')[0]} | {c['dram_MB']:.2f} | "
                   f"{c['warp_instr_k']:.0f} | {c['int_instr_k']:.0f} | {c['min_resident_warps']} | "
                   f"{c['us_dram']:.2f} | {c['us_issue']:.2f} | {c['us_int']:.2f} | **{c['us_estimate']:.2f}** | "
                   f"{c['x_roofline']:.2f} |")
    return "\n".join(out)


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
        print("ESTIMATES per 224x224 image in a large batch (no GPU measured): executed instructions per path and "
              "occupancy; per kernel the largest of its DRAM, issue and integer bounds, summed over a pass")
        print(cost_table(rows))
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
