"""The providers that the speed comparisons time, in one table: ``fdgpu bench`` and the pytest-benchmark suites
(``benchmarks/``) take them from here.

A provider turns a batch ``x`` ``(N, 3, H, W)`` float in [0, 1] and the :class:`Settings` into a zero-argument
callable that runs it once; the caller times the callable. Example::

    from fdgpu.bench import PROVIDERS, Settings
    call = PROVIDERS["pillow"].make(x, Settings(quality=75))
    call()

Adding a provider is one :class:`Provider` in :data:`PROVIDERS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch

Call = Callable[[], Any]


@dataclass
class Settings:
    """What providers read. ``database`` gives quilting's patch database for an image size (built on demand)."""
    quality: float = 75
    strength: float = 1.0
    backward: str = "ste"
    validate: bool = True
    seed: int = 0
    database: Optional[Callable[[int], Any]] = None


@dataclass(frozen=True)
class Provider:
    """One timed method: ``make(x, settings) -> call``.

    ``requires``: ``(import name, pip package)`` pairs it needs. ``slow``: warm it up on one image (its one-time
    costs do not depend on the batch, and a warm-up call on a large batch takes minutes). ``cuda``: it runs on a
    CUDA copy of ``x`` (only where CUDA is available)."""
    description: str
    make: Callable[[torch.Tensor, Settings], Call]
    requires: Tuple[Tuple[str, str], ...] = ()
    slow: bool = False
    cuda: bool = False


def _fwdbwd(op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, seed: int) -> Call:
    """Forward + backward of ``op`` at ``x`` with a fixed random output gradient."""
    xg = x.clone().requires_grad_()
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device)

    def fwdbwd():
        xg.grad = None
        op(xg).backward(grad)
    return fwdbwd


def _fdgpu(kind: str, backend: str, fwdbwd: bool = False):
    """``fdgpu.feature_distillation`` (``kind="fd"``) or ``fdgpu.jpeg`` (``"jpeg"``) with ``backend``; forward, or
    forward + backward (``Settings.backward``)."""
    def make(x, s: Settings) -> Call:
        import fdgpu

        def op(t):
            if kind == "fd":
                return fdgpu.feature_distillation(t, s.strength, backward=s.backward, backend=backend,
                                                  validate=s.validate)
            return fdgpu.jpeg(t, s.quality, backward=s.backward, backend=backend, validate=s.validate)
        return _fwdbwd(op, x, s.seed) if fwdbwd else (lambda: op(x))
    return make


def _pillow(x, s: Settings) -> Call:
    from ..pillow import roundtrip_batch

    return lambda: roundtrip_batch(x, int(round(s.quality)))


def _pillow_codec(x, s: Settings) -> Call:
    from ..pillow import roundtrip, to_uint8_hwc

    arrays, q = to_uint8_hwc(x), int(round(s.quality))

    def codec():
        for a in arrays:
            roundtrip(a, q)
    return codec


def _simplejpeg_codec(x, s: Settings) -> Call:
    import simplejpeg

    from ..pillow import to_uint8_hwc

    arrays, q = [a.copy(order="C") for a in to_uint8_hwc(x)], int(round(s.quality))

    def codec():
        for a in arrays:
            # libjpeg-turbo's own SIMD codec through TurboJPEG: the accurate DCT, 4:2:0, fancy upsampling
            simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(a, quality=q, colorspace="RGB", colorsubsampling="420",
                                                          fastdct=False), colorspace="RGB", fastdct=False,
                                   fastupsample=False)
    return codec


def _kornia_op(x, s: Settings):
    import kornia

    qt = torch.full((x.shape[0],), float(s.quality), device=x.device)
    return lambda t: kornia.enhance.jpeg_codec_differentiable(t, qt)


def _kornia(x, s: Settings) -> Call:
    op = _kornia_op(x, s)
    return lambda: op(x)


def _kornia_fwdbwd(x, s: Settings) -> Call:
    return _fwdbwd(_kornia_op(x, s), x, s.seed)


def _quilting(x, s: Settings) -> Call:
    from ..defences import Quilting

    if s.database is None:
        raise ValueError("quilting: expected Settings.database (a function of the image size giving the patch "
                         "database), got None")
    layer = Quilting(s.database(x.shape[-1]), seed=s.seed)
    return lambda: layer(x)


def _tvm(x, s: Settings) -> Call:
    from ..defences import TVM

    layer = TVM(seed=s.seed)
    return lambda: layer(x)


_PILLOW = (("PIL", "pillow"),)
_KORNIA = (("kornia", "kornia"),)

#: name -> :class:`Provider`. ``fdgpu_fd`` (Feature Distillation's forward, ``backend="auto"``: the C library on a
#: CPU tensor, or the torch reference where the library is unavailable, as the JSON's ``meta.backends`` says) is the
#: reference of every ratio that ``fdgpu bench`` reports; ``fdgpu_fd_torch`` is the torch reference itself.
PROVIDERS: Dict[str, Provider] = {
    "fdgpu_fd": Provider("fdgpu.feature_distillation forward (backend='auto': on CPU the C library)",
                         _fdgpu("fd", "auto")),
    "fdgpu_fd_torch": Provider("the same on the torch reference (backend='torch')", _fdgpu("fd", "torch")),
    "fdgpu_fd_fwdbwd": Provider("the same, forward + backward (Settings.backward, default ste)",
                                _fdgpu("fd", "auto", fwdbwd=True)),
    "fdgpu_jpeg": Provider("fdgpu.jpeg at Settings.quality, forward (backend='auto')", _fdgpu("jpeg", "auto")),
    "fdgpu_jpeg_fwdbwd": Provider("the same, forward + backward (Settings.backward)",
                                  _fdgpu("jpeg", "auto", fwdbwd=True)),
    "fdgpu_fd_cuda": Provider("fdgpu_fd on a CUDA tensor (the Triton path, backend='auto')", _fdgpu("fd", "auto"),
                              cuda=True),
    "fdgpu_fd_fwdbwd_cuda": Provider("fdgpu_fd_fwdbwd on a CUDA tensor", _fdgpu("fd", "auto", fwdbwd=True), cuda=True),
    "fdgpu_jpeg_cuda": Provider("fdgpu_jpeg on a CUDA tensor", _fdgpu("jpeg", "auto"), cuda=True),
    "pillow": Provider("Pillow (libjpeg-turbo) save + load at Settings.quality, 4:2:0, one image at a time, "
                       "including the tensor <-> uint8 conversions a tensor pipeline needs", _pillow, _PILLOW),
    "pillow_codec": Provider("Pillow's save + load alone: the uint8 images are prepared before the clock starts",
                             _pillow_codec, _PILLOW),
    "simplejpeg_codec": Provider("simplejpeg (libjpeg-turbo's SIMD codec through TurboJPEG) encode + decode at "
                                 "Settings.quality, 4:2:0, accurate DCT, fancy upsampling, one image at a time; the "
                                 "uint8 images are prepared before the clock starts", _simplejpeg_codec,
                                 (("simplejpeg", "simplejpeg"),)),
    "kornia": Provider("kornia.enhance.jpeg_codec_differentiable at Settings.quality", _kornia, _KORNIA),
    "kornia_fwdbwd": Provider("the same, forward + backward", _kornia_fwdbwd, _KORNIA),
    "quilting": Provider("image quilting (Guo et al. 2018; fdgpu.defences.quilting), faiss over a patch database",
                         _quilting, (("faiss", "faiss-cpu"),), slow=True),
    "tvm": Provider("TV minimisation (fdgpu.defences.tvm)", _tvm, (("skimage", "scikit-image"),), slow=True),
}


def make(name: str, x: torch.Tensor, settings: Settings) -> Optional[Call]:
    """``PROVIDERS[name]``'s call on ``x`` (moved to CUDA for a ``cuda`` provider), or None when it needs CUDA and
    there is none."""
    p = PROVIDERS[name]
    if p.cuda:
        if not torch.cuda.is_available():
            return None
        x = x.cuda()
    return p.make(x, settings)
