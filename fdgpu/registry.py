"""The registries of defences and attacks, and the field parsers their spec forms share.

A defence or an attack is one registration, made in the file that implements it (``fdgpu/defences/*.py``,
``fdgpu/attacks/*.py``, or a user's own module): its ``kind`` (the first field of a spec such as ``jpeg:75`` or
``pgd:8:10``), the written ``form`` and a one-line ``summary`` (the CLI help and the docs table are made from
them), a parser of the fields after the kind, and the function that builds the defence or runs the attack.
``fdgpu.eval`` parses, builds and runs only through these registries; the order of registration is the order of
the CLI help, the docs table and the plot's legend. See docs/extending.md for a worked example.

Examples:
    >>> from fdgpu.registry import ATTACKS, DEFENCES
    >>> DEFENCES["jpeg"].form, ATTACKS["pgd"].form
    ('jpeg:Q', 'pgd:EPS:STEPS[:ALPHA]')
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

#: options every attack spec may end with (``apgd:8:100:restarts=2``); an attack lists those it takes
ATTACK_OPTIONS = ("restarts", "eot", "targets")


@dataclass(frozen=True)
class BuildContext:
    """What ``fdgpu eval`` passes every defence builder besides the parsed spec.

    ``backward``: the layer's backward mode for this attacker view (``exact`` / ``ste`` / ``soft`` / ``bpda``;
    defences without one ignore it); ``seed``: the initial seed of a randomised defence (it must also offer
    ``reseed(seed)``, which ``fdgpu eval`` calls per batch); ``subsampling``: chroma subsampling of the JPEG
    family; ``calib``: a callable giving calibration images ``(N, 3, H, W)`` in [0, 1], or ``None``;
    ``data_root``: the data folder for defences that read clean images (``None``: ``$FDGPU_DATA``).
    """
    backward: str = "ste"
    seed: int = 0
    subsampling: str = "4:2:0"
    calib: Optional[Callable[[], Any]] = None
    data_root: Optional[str] = None


@dataclass(frozen=True)
class Defence:
    """One registered defence.

    ``parse(fields, text) -> (args, kwargs)``: the fields after the kind (``"jpeg:75"`` -> ``["75"]``), checked,
    with the whole spec ``text`` for messages; ``build(spec, ctx) -> nn.Module`` from the parsed spec (``spec.args``,
    ``spec.kwargs``, ``spec.text``) and a :class:`BuildContext`; ``nargs``: the (fewest, most) fields after the
    kind (``None``: no most); ``example``: a spec the registry test builds and runs on a tiny input; ``requires``:
    ``(import name, pip package)`` pairs checked before ``fdgpu eval`` starts; ``randomised``: draws anew on each call
    (attacked with EOT); ``factory``: for ``kind[:k=v,...]`` defences, the keyword constructor behind
    :func:`fdgpu.defences.make_defence`. In ``example``, ``{tmp}`` names the registry test's scratch folder, which holds
    ``tables.pt`` (FD 1x tables) and ``data/`` (a data root with synthetic ``cifar10/train10k.npz``).
    """
    kind: str
    form: str
    summary: str
    parse: Callable[[List[str], str], Tuple[tuple, dict]]
    build: Callable[[Any, BuildContext], Any]
    nargs: Tuple[int, Optional[int]] = (0, 0)
    example: str = ""
    requires: Tuple[Tuple[str, str], ...] = ()
    randomised: bool = False
    factory: Optional[Callable[..., Any]] = None
    module: str = field(default="", compare=False)


@dataclass(frozen=True)
class Attack:
    """One registered attack.

    ``parse(fields, text) -> dict``: the fields after the kind, checked, as keyword fields of
    :class:`fdgpu.eval.AttackSpec` (``eps`` in [0, 1] units, ``steps``, ``alpha``, ``samples``); ``run(spec, model,
    x, y, generator, eot_samples, restarts) -> x_adv``; ``nargs`` as for :class:`Defence`; ``options``: the
    :data:`ATTACK_OPTIONS` it takes, and ``refuse``: a reason for an option it does not take, where the generic
    message would not help; ``norm``: ``"linf"`` (reported in pixel levels), ``"l2"`` or ``None``; ``random_start``:
    whether it draws from the generator (rows then record the seeds); ``style``: (matplotlib line style, marker) in
    plots (``None``: a spare one); ``gradient_free``: it queries only the model's outputs (``fdgpu eval`` runs it
    once per defence, in the view ``query``, instead of once per backward mode, which it cannot tell apart) and
    counts its queries per image (``BestIterate.queries``).
    """
    kind: str
    form: str
    summary: str
    parse: Callable[[List[str], str], Dict[str, Any]]
    run: Callable[..., Any]
    nargs: Tuple[int, Optional[int]] = (0, 0)
    example: str = ""
    options: Tuple[str, ...] = ("restarts", "eot")
    refuse: Mapping[str, str] = field(default_factory=dict, compare=False)
    norm: Optional[str] = "linf"
    random_start: bool = True
    style: Optional[Tuple[Any, str]] = None
    gradient_free: bool = False
    module: str = field(default="", compare=False)


class Registry(Mapping[str, Any]):
    """Kinds -> registrations, in registration order. Looking anything up first imports ``package`` (where the
    built-in kinds register themselves), so the registry is complete however it is reached."""

    def __init__(self, what: str, package: str):
        self.what, self.package = what, package
        self._entries: Dict[str, Any] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.package)

    def add(self, entry) -> None:
        """Register ``entry``; a kind registered by another module is an error (choose another name)."""
        if not entry.kind or entry.kind != entry.kind.strip().lower() or ":" in entry.kind:
            raise ValueError(f"{self.what} kind: expected a lower-case name without ':', got {entry.kind!r}")
        old = self._entries.get(entry.kind)
        if old is not None and old.module != entry.module:
            raise ValueError(f"{self.what} kind {entry.kind!r}: already registered by {old.module}; choose another "
                             f"name")
        self._entries[entry.kind] = entry

    def remove(self, kind: str) -> None:
        """Unregister ``kind`` (tests and examples that register a kind for a while)."""
        self._entries.pop(kind, None)

    def __getitem__(self, kind: str):
        self._load()
        return self._entries[kind]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def forms(self) -> str:
        """The written forms, comma-separated, in registration order (error messages and CLI help)."""
        return ", ".join(e.form for e in self.values())

    def table(self) -> str:
        """A markdown table of the registered forms and their summaries (docs/extending.md holds a copy)."""
        rows = [f"| `{e.form}` | {e.summary} |" for e in self.values()]
        return "\n".join([f"| {self.what} | what |", "| --- | --- |"] + rows) + "\n"


DEFENCES = Registry("defence", "fdgpu.defences")
ATTACKS = Registry("attack", "fdgpu.attacks")


def _module_of(fn) -> str:
    return getattr(fn, "__module__", "") or ""


def register_defence(kind: str, *, form: str, summary: str, build, parse=None, nargs=(0, 0), example: str = "",
                     requires=(), randomised: bool = False, factory=None) -> Defence:
    """Register a defence (see :class:`Defence`); ``parse=None`` takes no fields. Returns the registration."""
    entry = Defence(kind, form, summary, parse or _no_defence_fields, build, tuple(nargs), example or kind,
                    tuple(requires), randomised, factory, _module_of(build))
    DEFENCES.add(entry)
    return entry


def register_attack(kind: str, *, form: str, summary: str, run, parse=None, nargs=(0, 0), example: str = "",
                    options=("restarts", "eot"), refuse=None, norm: Optional[str] = "linf", random_start: bool = True,
                    style=None, gradient_free: bool = False) -> Attack:
    """Register an attack (see :class:`Attack`); ``parse=None`` takes no fields. Returns the registration."""
    unknown = set(options) - set(ATTACK_OPTIONS)
    if unknown:
        raise ValueError(f"options: expected a subset of {ATTACK_OPTIONS}, got {sorted(unknown)}")
    entry = Attack(kind, form, summary, parse or _no_attack_fields, run, tuple(nargs), example or kind, tuple(options),
                   dict(refuse or {}), norm, random_start, style, bool(gradient_free), _module_of(run))
    ATTACKS.add(entry)
    return entry


class PluginError(RuntimeError):
    """A plugin tried to end the process (``sys.exit``, ``os._exit``) or raised ``KeyboardInterrupt`` while it was
    being imported: reported as the plugin's error, never taken as the command's own exit."""


class _PluginExit(BaseException):
    """What ``os._exit`` raises while a plugin is imported (so that it unwinds instead of ending the process)."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


@contextlib.contextmanager
def _exits_are_errors(name: str):
    """While a plugin is imported: ``os._exit`` raises instead of ending the process, and ``SystemExit``,
    ``os._exit`` and a ``KeyboardInterrupt`` the plugin raised itself become a :class:`PluginError`. A real Ctrl-C
    or SIGTERM (a signal delivered meanwhile) still stops the command. Exits made below Python (a crash, ``exit()``
    through ctypes) cannot be intercepted in-process."""
    import os
    import signal
    import threading

    from .files import Interrupted

    real_exit, pid = os._exit, os.getpid()

    def exit_here(code=0):
        if os.getpid() != pid:  # a process the plugin forked ends as it asked
            real_exit(code)
        raise _PluginExit(code)

    main = threading.current_thread() is threading.main_thread()
    previous = None
    if main:
        def on_sigint(signum, frame):
            raise Interrupted(signum)
        previous = signal.signal(signal.SIGINT, on_sigint)
    low = sys.modules.get("posix") or sys.modules.get("nt")  # os._exit is this module's _exit
    os._exit = exit_here
    if low is not None:
        low._exit = exit_here  # type: ignore[attr-defined]
    try:
        yield
    except Interrupted:
        raise
    except SystemExit as exc:
        raise PluginError(f"{name!r} called sys.exit({exc.code!r}) while being imported; a plugin only registers "
                          f"defences and attacks") from None
    except _PluginExit as exc:
        raise PluginError(f"{name!r} called os._exit({exc.code!r}) while being imported; a plugin only registers "
                          f"defences and attacks") from None
    except KeyboardInterrupt:
        raise PluginError(f"{name!r} raised KeyboardInterrupt while being imported; a plugin only registers "
                          f"defences and attacks") from None
    finally:
        os._exit = real_exit
        if low is not None:
            low._exit = real_exit  # type: ignore[attr-defined]
        if main:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def load_plugin(name: str):
    """Import a module that registers defences or attacks (``fdgpu eval --plugin``): a ``.py`` file (loaded once per
    process as ``fdgpu_plugin_<stem>``) or the name of an importable module. Returns the module.

    Raises:
        PluginError: the plugin called ``sys.exit`` or ``os._exit``, or raised ``KeyboardInterrupt``, at import.
    """
    with _exits_are_errors(name):
        return _import_plugin(name)


def _import_plugin(name: str):
    if not name.endswith(".py"):
        return importlib.import_module(name)
    from pathlib import Path

    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    module_name = f"fdgpu_plugin_{path.stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{str(path)!r} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


# --- field parsers shared by the spec forms ---------------------------------------------------------------------------

def _no_defence_fields(fields, text):
    return (), {}


def _no_attack_fields(fields, text):
    return {}


def number(text: str, what: str, spec: str) -> float:
    """A finite number, or a fraction such as ``8/255``; ``what`` and ``spec`` name it in the error."""
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            value = float(a) / float(b)
        else:
            value = float(text)
    except ValueError:
        raise ValueError(f"{what} in {spec!r}: expected a number, got {text!r}") from None
    except ZeroDivisionError:
        raise ValueError(f"{what} in {spec!r}: expected a number, got {text!r} (a division by zero)") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} in {spec!r}: expected a finite number, got {text!r}")
    return value


def levels(text: str, spec: str, what: str = "EPS") -> float:
    """An L-inf size in [0, 1] units: ``"8"`` or ``"0.5"`` are pixel levels (8/255, 0.5/255); a fraction ``"8/255"``
    is already in [0, 1] units."""
    value = number(text, what, spec)
    if "/" not in text:
        value = value / 255.0
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{what} in {spec!r}: expected pixel levels in [0, 255] (or a fraction like 8/255), "
                         f"got {text}")
    return value


def step_size(text: str, what: str, spec: str, in_levels: bool) -> float:
    """A step size > 0 (a zero or negative step never moves, or moves away from the attack's goal)."""
    value = levels(text, spec, what) if in_levels else number(text, what, spec)
    if not value > 0:
        raise ValueError(f"{what} in {spec!r}: expected a step size > 0, got {text}")
    return value


def integer(text: str, what: str, spec: str, low: int = 1) -> int:
    """An integer >= ``low``."""
    try:
        v = int(text)
    except ValueError:
        raise ValueError(f"{what} in {spec!r}: expected an integer, got {text!r}") from None
    if v < low:
        raise ValueError(f"{what} in {spec!r}: expected an integer >= {low}, got {v}")
    return v


def key_values(fields: Sequence[str], spec: str) -> Tuple[tuple, dict]:
    """``k=v,k=v`` options in the one field after the kind (``quilting:source=natural,size=224``): ints, else
    floats, else strings. Returns ``((), kwargs)`` as a defence parser does."""
    kwargs: Dict[str, Any] = {}
    if fields and fields[0]:
        for item in fields[0].split(","):
            if "=" not in item:
                raise ValueError(f"{spec!r}: expected key=value options after ':', got {item!r}")
            key, value = item.split("=", 1)
            try:
                kwargs[key] = int(value)
            except ValueError:
                try:
                    kwargs[key] = float(value)
                except ValueError:
                    kwargs[key] = value
    return (), kwargs


# --- the one kind of each that is no defence / no attack -------------------------------------------------------------

def _identity(spec, ctx: BuildContext):
    from torch import nn

    return nn.Identity()


def _unattacked(spec, model, x, y, generator, eot_samples, restarts):
    return x


register_defence("none", form="none", summary="identity (the undefended model)", build=_identity)
register_attack("none", form="none", summary="no attack (clean accuracy)", run=_unattacked, options=(), norm=None,
                random_start=False)
