"""Former name of :mod:`fdgpu.defences`, kept so that existing code keeps working.

``import fdgpu.baselines as B``, ``from fdgpu.baselines import make_defence`` and the submodules
(``fdgpu.baselines.data``, ``.quilting``, ``.tvm``) are the very modules of :mod:`fdgpu.defences` under their old
name: same objects, no copies. New code imports :mod:`fdgpu.defences`.
"""
import sys
from importlib import import_module

from fdgpu.defences import *  # noqa: F401,F403
from fdgpu.defences import __all__  # noqa: F401

for _name in ("_common", "data", "quilting", "tvm"):
    sys.modules[f"{__name__}.{_name}"] = _module = import_module(f"fdgpu.defences.{_name}")
    globals().setdefault(_name, _module)  # as in fdgpu.defences: the name tvm stays the function
del _name, _module
