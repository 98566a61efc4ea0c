"""The 8-bit samples the layer reads from a float image: :func:`to_uint8`.

Every fdgpu layer turns its float input into the 8-bit samples an encoder receives as ``floor(255 x + 0.5)``,
clamped to [0, 255]: halves round **up**. ``torch.round`` (and ``numpy.round``) round halves to the **even**
neighbour, so ``(x * 255).round()`` differs from the layer's reading wherever ``255 x`` is exactly ``k + 0.5`` with
``k`` even (e.g. ``x = 0.5 / 255`` gives 0, the layer reads 1). Adversarial images land on such half levels (a step
of ``eps / 2`` from a pixel level); an image saved with ``torch.round`` is then not the image the layer saw. Save
with ``to_uint8`` instead.
"""
from __future__ import annotations

import torch

from ._checks import check_values, minmax, x_error


def to_uint8(x: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """The layer's 8-bit reading of a float image: ``floor(255 x + 0.5)`` (halves up), clamped to [0, 255], as uint8.

    Shape:
        ``x``: any shape, e.g. ``(..., C, H, W)``; float16, bfloat16, float32 or float64 with values in [0, 1].
        Returns a uint8 tensor of the same shape, device and memory format. ``255 x`` is computed in float32 (in
        float64 for float64 input, as the layer's torch backend does), so ``to_uint8(x)`` is exactly what
        :func:`fdgpu.jpeg` and the other layers encode: ``fdgpu.jpeg(x) == fdgpu.jpeg(to_uint8(x).float() / 255)``.

    Args:
        x: the float image(s).
        validate: check that the values are finite and within [0, 1] (one host sync). With ``False`` values are read
            as the layer reads unchecked input: NaN becomes 0, values outside [0, 1] clamp to 0 or 255.

    Note:
        ``torch.round`` rounds halves to even: ``(x * 255).round()`` is not this reading (see the module docstring).

    Example:
        >>> import torch, fdgpu
        >>> x = torch.tensor([0.5, 1.5, 2.5, 254.5]) / 255
        >>> fdgpu.to_uint8(x)
        tensor([  1,   2,   3, 255], dtype=torch.uint8)
        >>> (x * 255).round().to(torch.uint8)  # halves to even
        tensor([  0,   2,   2, 254], dtype=torch.uint8)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a float torch.Tensor with values in [0, 1], got {type(x).__name__}")
    if not x.is_floating_point():
        hint = " (it already is 8-bit: use it as it is)" if x.dtype == torch.uint8 else ""
        raise TypeError(f"x: expected a floating tensor with values in [0, 1], got dtype {x.dtype}{hint}")
    if validate:
        check_values([(x, minmax, x_error)])
    u = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32) * 255.0
    return u.add_(0.5).floor_().nan_to_num_(nan=0.0).clamp_(0, 255).to(torch.uint8)
