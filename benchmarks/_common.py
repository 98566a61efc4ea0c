"""Pieces the CPU benchmark suites share: Pillow's round trip as a provider, and a summary printed past capture."""
import io

import numpy as np


def pillow_roundtrip(images, quality: int):
    """A callable that saves and loads every image of ``images`` ``(N, 3, H, W)`` in [0, 1] through Pillow's JPEG
    (libjpeg-turbo, one image at a time, 4:2:0 by default), as a user without a differentiable layer would."""
    from PIL import Image

    arrays = [np.ascontiguousarray((x.permute(1, 2, 0) * 255).round().byte().numpy()) for x in images]

    def roundtrip():
        for a in arrays:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "JPEG", quality=quality)
            buf.seek(0)
            np.asarray(Image.open(buf).convert("RGB"))
    return roundtrip


def print_past_capture(request, lines) -> None:
    """Write ``lines`` to the terminal even under pytest's output capture (beside pytest-benchmark's tables)."""
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            tr.write_line("\n".join(lines))
