"""The implementations of the JPEG round trip, one module per backend, behind one registry.

* ``torch`` (:mod:`fdgpu.backends.torch`): the reference, pure PyTorch (:mod:`fdgpu.reference`), on any device;
  the definition that the other two equal.
* ``cpu`` (:mod:`fdgpu.backends.cpu`): the C library (``csrc/fused.c``, built and loaded by
  :mod:`fdgpu.backends._library`), CPU tensors: the same bits as ``torch``, several times faster.
* ``triton`` (:mod:`fdgpu.backends.triton`): the Triton kernels (:mod:`fdgpu.kernels`), CUDA tensors (or CPU
  tensors through Triton's interpreter with ``TRITON_INTERPRET=1``).

``backend="auto"`` (:func:`resolve`) picks ``cpu`` for CPU tensors when the C library is available, ``triton`` for
CUDA tensors when Triton is usable, else ``torch`` with a :class:`BackendFallbackWarning` (once per process and
device type) that names the reason and the fix; ``torch`` on every other device. A named backend is used or
refused with an error that says why, never replaced.

The backward modes ``exact`` (autograd of the torch reference's forward) and ``bpda`` (identity) are the same
computation for every backend and run in :mod:`fdgpu.ops`; a backend's ``backward`` implements ``ste`` and
``soft``. :func:`status` says, per backend, whether it is available, why not, and details (the library's path,
its build flags and compile time; the Triton version), as ``fdgpu doctor``, ``fdgpu bench`` and ``fdgpu eval``
report it.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch as _torch  # (``torch`` itself names the submodule below once it is imported)

from . import cpu as _cpu
from . import torch as _reference
from . import triton as _triton


class BackendFallbackWarning(RuntimeWarning):
    """``backend="auto"`` ran the torch reference because the device's fast backend is unavailable: the C library
    for CPU tensors, Triton for CUDA tensors."""


@dataclass(frozen=True)
class Backend:
    """One implementation of the round trip: what :mod:`fdgpu.functional` and :mod:`fdgpu.ops` dispatch to.

    ``forward(x, luma_table, chroma_table, subsampling, save) -> (y, state_luma, state_chroma)``: ``x`` is a
    checked, contiguous ``(N, C, H, W)`` tensor of one of ``dtypes`` on one of ``devices()``, the tables ``(8, 8)``
    or ``(N, 8, 8)`` of the same dtype; the states are the quotients ``z = c / Q`` when ``save`` and
    ``saves_state``, else None. ``backward(grad, x, luma_table, chroma_table, state, subsampling, mode,
    table_grads) -> (grad_x, grad_luma, grad_chroma)`` for ``mode`` "ste" or "soft" (``state``: the forward's
    ``(state_luma, state_chroma)``, entries None when not saved); the table gradients are None unless
    ``table_grads``."""
    name: str
    description: str
    forward: Callable
    backward: Callable
    devices: Callable[[], Tuple[str, ...]]  # device types it takes, or ("any",) (a function: Triton's depends on
    #                                         TRITON_INTERPRET)
    dtypes: Tuple[_torch.dtype, ...]       # compute dtypes; other inputs are computed in float32
    saves_state: bool                      # whether forward returns the quotients (else backward recomputes them)
    checks_input: bool                     # whether forward takes validate=True: x's value checks in its own read
    table_grads: bool                      # whether backward gives table gradients
    tables: str                            # which tables it takes, and how
    unavailable: Callable[[], Optional[str]]  # None when usable, else why not
    details: Callable[[], dict]            # what status() reports beyond availability
    fix: str                               # what to do when it is unavailable

    def available(self) -> bool:
        return self.unavailable() is None

    def status(self) -> dict:
        """``{"available", "reason", "description", "devices", "dtypes", "table_grads", "tables", ...details}``
        (plain values, JSON-ready)."""
        reason = self.unavailable()
        return {"available": reason is None, "reason": reason, "description": self.description,
                "devices": list(self.devices()), "dtypes": [str(d).replace("torch.", "") for d in self.dtypes],
                "table_grads": self.table_grads, "tables": self.tables, **self.details()}


def _record(module) -> Backend:
    return Backend(name=module.NAME, description=module.DESCRIPTION, forward=module.forward,
                   backward=module.backward, devices=module.devices, dtypes=module.DTYPES,
                   saves_state=module.SAVES_STATE, checks_input=module.CHECKS_INPUT,
                   table_grads=module.TABLE_GRADS, tables=module.TABLES, unavailable=module.unavailable,
                   details=module.details, fix=module.FIX)


#: name -> :class:`Backend`, in the order of ``fdgpu.choices.BACKENDS`` (after "auto")
REGISTRY: Dict[str, Backend] = {m.NAME: _record(m) for m in (_reference, _cpu, _triton)}


def get(name: str) -> Backend:
    """The :class:`Backend` called ``name`` (a resolved name, not "auto")."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"backend: expected one of {sorted(REGISTRY)}, got {name!r}") from None


#: device types whose fallback to the torch reference has been warned about in this process
_warned: set = set()


def _with_fix(reason: str, backend: Backend) -> str:
    """``reason`` followed by the backend's fix, unless it already says it."""
    return reason if not backend.fix or backend.fix in reason else f"{reason}; {backend.fix}"


#: per device type: the backend ``"auto"`` prefers there, what it is, and what the fallback costs
_PREFERRED = {"cpu": ("cpu", "the C library", "2-6x slower"),
              "cuda": ("triton", "Triton", "several times slower, with more memory")}


def _warn_fallback(device: str, reason: str) -> None:
    if device in _warned:
        return
    _warned.add(device)
    name, what, cost = _PREFERRED[device]
    warnings.warn(f"fdgpu: backend='auto' runs the torch reference on {device.upper()} tensors (the same results, "
                  f"{cost}) because {what} (backend={name!r}) is unavailable: "
                  f"{_with_fix(reason, REGISTRY[name])}; or pass backend='torch' to choose the torch reference "
                  f"(no warning). Shown once per process.", BackendFallbackWarning, stacklevel=_outside_level())


# fdgpu's folder and torch's (nn.Module.__call__ sits between a layer and its caller)
_INSIDE = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
           os.path.dirname(os.path.abspath(_torch.__file__)) + os.sep)


def _outside_level() -> int:
    """The ``stacklevel`` of the caller's first frame outside fdgpu and torch (a warning points at user code)."""
    frame: Any = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_INSIDE):
        frame, level = frame.f_back, level + 1
    return level


@_torch.compiler.assume_constant_result  # torch.compile calls it while tracing and keeps the name as a constant
def _resolve(name: str, device: str) -> str:
    if name == "auto":
        if device in _PREFERRED:
            preferred = _PREFERRED[device][0]
            reason = REGISTRY[preferred].unavailable()
            if reason is None:
                return preferred
            _warn_fallback(device, reason)
        return "torch"
    backend = get(name)
    # the device check first: for Triton, the availability check imports the kernels, which would fix them to
    # compiled mode for the rest of the process
    devices = backend.devices()
    if device not in devices and "any" not in devices:
        raise ValueError(f"backend={name!r}: expected a tensor on {' or '.join(devices)}, got device "
                         f"{device}; use backend='auto' (which picks a backend for the tensor's device) or 'torch'"
                         + (", or set TRITON_INTERPRET=1 before importing triton to run the kernels through "
                            "Triton's interpreter on the CPU" if name == "triton" else ""))
    reason = backend.unavailable()
    if reason is not None:
        raise RuntimeError(f"backend={name!r} is unavailable: {_with_fix(reason, backend)}; or use backend='torch' "
                           f"(the same results) or 'auto'")
    return name


def resolve(name: str, device) -> str:
    """The backend that runs for ``backend=name`` on a tensor on ``device``: ``name`` itself when it is usable
    there (else ValueError for the device, RuntimeError when unavailable, saying why and what to do), or for
    ``"auto"`` the choice described in this module's docstring."""
    return _resolve(name, _torch.device(device).type)


def status() -> Dict[str, dict]:
    """Per backend: :meth:`Backend.status` (available, reason, devices, dtypes, details). Loads (on first use,
    builds) the C library and, where CUDA or ``TRITON_INTERPRET=1`` is there, imports Triton."""
    return {name: b.status() for name, b in REGISTRY.items()}


def summary(st: Optional[Dict[str, dict]] = None) -> str:
    """One line for reports: each backend as ``name`` (available) or ``name unavailable (reason)``."""
    st = status() if st is None else st
    parts = []
    for name, s in st.items():
        if not s["available"]:
            parts.append(f"{name} unavailable ({s['reason']})")
        else:
            parts.append(name + (f" ({s['library']}, {s['isa']})" if s.get("library") else ""))
    return "backends: " + "; ".join(parts)


def _reset_warning() -> None:
    """Show the fallback warnings again (tests)."""
    _warned.clear()


__all__ = ["Backend", "BackendFallbackWarning", "REGISTRY", "get", "resolve", "status", "summary"]
