"""Naming classes in checkpoints, and loading them back without importing arbitrary modules.

A checkpoint names its process class as ``"module:qualname"``. Loading one means importing
``module``, and importing runs code, so a checkpoint from an untrusted place must not be able to
name any module it likes (``"os:system"`` is harmless only because it is not a class; the import
of some other module might not be). :class:`ClassLoader` therefore imports a module only when it
is under one of its *allowed prefixes*, and checks that before touching ``importlib``; and what
it returns is a class defined in an allowed module, reached through classes only (never through
a module or function an allowed module happens to refer to).

The default policy (``allowed_prefixes=None``) allows plumio's own package (``corelib``) and
every module that :func:`class_identifier` has named in this interpreter: a process that was
saved here can be reloaded here. A daemon that resumes checkpoints written by *other*
interpreters must say where its process classes live, e.g.
``ClassLoader(allowed_prefixes=("myapp.workflows",))``, passed as ``loader=`` to
``load_process``, ``continue_process``, ``Runner``, ``ProcessLauncher``, ``Worker`` or
``LocalCluster`` (importing the module beforehand is not enough: importing is not trusting).
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
import types
from collections.abc import Iterable
from typing import Any, Final, TypeVar, final, overload

import attrs

from ._checkpoint import CheckpointEncodeError, ForbiddenClassError, UnknownClassError

__all__ = ["DEFAULT_ALLOWED_PREFIXES", "ClassLoader", "class_identifier"]

T = TypeVar("T")

#: Module prefixes the default loader always allows.
DEFAULT_ALLOWED_PREFIXES: Final = ("corelib",)

# Where a loader is passed (as ``loader=``), for the advice in ForbiddenClassError.
_LOADER_TAKERS: Final = (
    "load_process, continue_process, Runner, ProcessLauncher, Worker or LocalCluster"
)

_DOTTED_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# Modules of the classes class_identifier() has named in this interpreter (the default policy).
_identified_lock = threading.Lock()
_identified_modules: set[str] = set()
# class -> (module, qualname, identifier) of the classes named so far: checkpoints and status
# replies name the same few classes again and again (an entry counts only while the class
# keeps that module and qualname).
_class_ids: dict[type, tuple[str, str, str]] = {}


def class_identifier(cls: type) -> str:
    """Return ``"module:qualname"`` for ``cls``, the form a checkpoint stores.

    The module is also remembered, so the default :class:`ClassLoader` of this interpreter may
    load it back.

    Raises:
        CheckpointEncodeError: ``cls`` is defined inside a function (its qualname contains
            ``<locals>``): such a class can't be found again by name.
    """
    module, qualname = cls.__module__, cls.__qualname__
    known = _class_ids.get(cls)
    if known is not None and known[0] == module and known[1] == qualname:
        return known[2]  # checked and recorded before, under this very name
    if not _DOTTED_NAME.match(qualname):
        raise CheckpointEncodeError(
            f"can't identify class {qualname!r}: a class defined inside a function"
            " can't be reloaded by name"
        )
    with _identified_lock:
        _identified_modules.add(module)
    identifier = f"{module}:{qualname}"
    _class_ids[cls] = (module, qualname, identifier)
    return identifier


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _check_prefixes(prefixes: Iterable[str] | None) -> tuple[str, ...] | None:
    if prefixes is None:
        return None
    if isinstance(prefixes, str):
        raise TypeError(f"allowed_prefixes must be a sequence of strings, not {prefixes!r}")
    checked = tuple(prefixes)
    for prefix in checked:
        if not isinstance(prefix, str) or not _DOTTED_NAME.match(prefix):
            raise ValueError(f"allowed prefix {prefix!r} is not a dotted module name")
    return checked


@final
@attrs.frozen
class ClassLoader:
    """Resolves ``"module:qualname"`` identifiers, importing only allowed modules.

    A module is allowed when it equals one of ``allowed_prefixes`` or is inside it
    (``"myapp"`` allows ``myapp`` and ``myapp.flows.x``, not ``myapplication``). Importing
    ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``, so allowing a sub-package
    implies trusting its parents' ``__init__`` code.

    Args:
        allowed_prefixes: module prefixes to allow; ``None`` (the default) allows
            :data:`DEFAULT_ALLOWED_PREFIXES` plus the module of every class named by
            :func:`class_identifier` in this interpreter.
    """

    allowed_prefixes: tuple[str, ...] | None = attrs.field(default=None, converter=_check_prefixes)

    def is_allowed(self, module: str) -> bool:
        """Whether this loader may import ``module``."""
        if self.allowed_prefixes is not None:
            return any(_under(module, prefix) for prefix in self.allowed_prefixes)
        if any(_under(module, prefix) for prefix in DEFAULT_ALLOWED_PREFIXES):
            return True
        with _identified_lock:
            return module in _identified_modules

    def _refusal(self, module: str) -> str:
        """Why ``module`` is refused, and how to allow it (for :class:`ForbiddenClassError`)."""
        if self.allowed_prefixes is None:
            allowed = (
                f"the default loader's: {', '.join(map(repr, DEFAULT_ALLOWED_PREFIXES))} and the"
                " modules of classes this interpreter checkpointed or sent"
            )
            suggested: tuple[str, ...] = (module,)
        else:
            allowed = ", ".join(map(repr, self.allowed_prefixes)) or "none"
            suggested = (*self.allowed_prefixes, module)
        text = f"module {module!r} is outside the allowed prefixes ({allowed})"
        if module == "__main__":
            return (
                f"{text}; a class defined in a script can't be found by name in another"
                " interpreter: define it in an importable module"
            )
        return (
            f"{text}; to allow it, pass loader=ClassLoader(allowed_prefixes={suggested!r})"
            f" to {_LOADER_TAKERS}"
        )

    @overload
    def load(self, identifier: str, *, pid: str | None = None) -> type[Any]: ...
    @overload
    def load(self, identifier: str, *, pid: str | None = None, base: type[T]) -> type[T]: ...

    def load(
        self, identifier: str, *, pid: str | None = None, base: type[Any] | None = None
    ) -> type[Any]:
        """Return the class named by ``identifier``.

        The qualname is followed through classes only, and the class found must be defined
        in an allowed module too: an allowed module's attributes may be modules, functions
        or classes it imported from anywhere (``allowed:subprocess.Popen``,
        ``allowed:Popen``), and those are refused. A class aliased under another name inside
        the allowed modules is accepted.

        Args:
            identifier: ``"module:qualname"``, as made by :func:`class_identifier`.
            pid: the pid of the checkpoint being loaded, for error messages.
            base: when given, the class must be ``base`` or a subclass of it (e.g.
                ``Process``); this stops a checkpoint from naming any other class that
                happens to live in an allowed module.

        Raises:
            ForbiddenClassError: the module is not allowed (nothing was imported), the
                qualname goes through something other than a class, the class is defined in
                a module that is not allowed, or it is not a subclass of ``base``.
            UnknownClassError: the identifier is malformed, the module can't be imported, or
                it has no such class.
        """
        what = f"class {identifier!r}" + ("" if pid is None else f" of pid {pid!r}")
        module_name, sep, qualname = identifier.partition(":")
        if not sep or not _DOTTED_NAME.match(module_name) or not _DOTTED_NAME.match(qualname):
            raise UnknownClassError(f"can't load {what}: not a 'module:qualname' identifier")
        if not self.is_allowed(module_name):
            raise ForbiddenClassError(f"{what} is not allowed: {self._refusal(module_name)}")
        obj: Any = sys.modules.get(module_name)
        if obj is None:
            obj = _import(module_name, what)
        parts = qualname.split(".")
        for index, part in enumerate(parts):
            if index and not isinstance(obj, type):
                # Only a class may lead to a class: through a module, a function or any other
                # object, an allowed module would hand out whatever it imported or refers to.
                raise ForbiddenClassError(
                    f"{what} is not allowed: {'.'.join(parts[:index])!r} is"
                    f" {_kind(obj)}, not a class"
                )
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise UnknownClassError(
                    f"can't load {what}: module {module_name!r} has no attribute {qualname!r}"
                ) from None
        if not isinstance(obj, type):
            raise UnknownClassError(f"can't load {what}: it is not a class")
        defined_in = getattr(obj, "__module__", None)
        if defined_in != module_name and (
            not isinstance(defined_in, str) or not self.is_allowed(defined_in)
        ):
            # e.g. ``allowed:Popen`` after ``from subprocess import Popen`` in ``allowed``
            raise ForbiddenClassError(
                f"{what} is not allowed: it is {obj.__qualname__!r} of module {defined_in!r},"
                f" outside the allowed prefixes"
            )
        if base is not None and not issubclass(obj, base):
            raise ForbiddenClassError(
                f"{what} is not allowed: it is not a subclass of {base.__qualname__}"
            )
        return obj


def _kind(obj: Any) -> str:
    """What ``obj`` is, for an error message: ``"module 'subprocess'"``, ``"a function"``."""
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__!r}"
    if isinstance(obj, types.FunctionType | types.BuiltinFunctionType):
        return "a function"
    return f"an object of type {type(obj).__name__}"


def _import(module_name: str, what: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only "this module doesn't exist" is unknown; a missing dependency inside it is an error
        # in that module, reported with its cause.
        if exc.name is not None and _under(module_name, exc.name):
            raise UnknownClassError(
                f"can't load {what}: module {module_name!r} not found"
            ) from None
        raise UnknownClassError(
            f"can't load {what}: importing {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise UnknownClassError(
            f"can't load {what}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
