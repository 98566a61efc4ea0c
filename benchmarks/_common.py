"""Pieces the benchmark suites share: providers from fdgpu's one table (``fdgpu.bench.PROVIDERS``, also what
``fdgpu bench`` times), and a summary printed past capture."""
from fdgpu.bench import Settings, make


def provider(name: str, images, **settings):
    """The zero-argument call of ``fdgpu.bench.PROVIDERS[name]`` on the batch ``images`` ``(N, 3, H, W)`` in [0, 1],
    with :class:`fdgpu.bench.Settings` ``settings`` (quality, strength, backward, validate, seed)."""
    return make(name, images, Settings(**settings))


def pillow_roundtrip(images, quality: int):
    """A callable that saves and loads every image of ``images`` ``(N, 3, H, W)`` in [0, 1] through Pillow's JPEG
    (libjpeg-turbo, one image at a time, 4:2:0), as a user without a differentiable layer would: the table's
    ``pillow_codec`` (the uint8 images are prepared before the clock starts)."""
    return provider("pillow_codec", images, quality=quality)


def print_past_capture(request, lines) -> None:
    """Write ``lines`` to the terminal even under pytest's output capture (beside pytest-benchmark's tables)."""
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            tr.write_line("\n".join(lines))


def require_c_library() -> str:
    """Fail the run unless ``backend="auto"`` runs the C library on CPU tensors (fdgpu's providers would otherwise
    time the torch reference in its place); the backend and the library's target as ``fdgpu.backends.summary``
    words them."""
    import pytest

    from fdgpu import backends

    reason = backends.get("cpu").unavailable()
    if reason is not None or backends.resolve("auto", "cpu") != "cpu":
        pytest.fail(f"backend='auto' would time the torch reference: the C library is unavailable ({reason})")
    return next(p for p in backends.summary().removeprefix("backends: ").split("; ") if p.startswith("cpu"))
