"""Process specifications: the declared inputs, outputs and exit codes of a process class.

A process class builds one :class:`ProcessSpec` and hands it to ``cls.define(spec)``; each
subclass's ``define`` calls ``super().define(spec)`` first and then extends the same spec, so a
spec is inherited by replaying the base class declarations. Re-declaring therefore has to be
well defined, and the rule is *the last declaration wins*:

* ``input``/``output`` with an existing leaf name replaces that port (keeping its position);
* ``input_namespace``/``output_namespace`` with an existing namespace name replaces that
  namespace's options and keeps its ports;
* a leaf can't become a namespace or the other way round (``ValueError``);
* exit codes can't be re-declared: a duplicate status or label is a ``ValueError``;
* ``expose_inputs``/``expose_outputs`` never replace anything: a clash is a ``ValueError``.

Once sealed (the process class seals its spec after ``define``), every change raises
:class:`SpecSealedError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

import attrs

from ._exit_code import ExitCode
from ._frozen import AttributesFrozenDict, thaw
from ._namespace import NamespaceValidator, PortNamespace, merge_ports, select_ports
from ._ports import (
    UNSPECIFIED,
    InputPort,
    OutputPort,
    Port,
    PortValidator,
    SpecSealedError,
    ValidType,
)

__all__ = ["ProcessSpec", "HasSpec"]


class HasSpec(Protocol):
    """Anything with a ``spec()`` returning a :class:`ProcessSpec`: in practice a process class
    (``spec`` is a classmethod there)."""

    def spec(self) -> ProcessSpec: ...


@attrs.define
class _Exposure:
    """What one ``expose_*`` call (or several, merged) copied from one class into one place."""

    names: list[str]
    # The source namespace was dynamic and was exposed whole, so undeclared keys of the
    # destination namespace belong to the source class too.
    dynamic: bool


_Kind = Literal["inputs", "outputs"]


def _class_name(process_class: object) -> str:
    return str(getattr(process_class, "__name__", repr(process_class)))


@attrs.define(eq=False, repr=False)
class ProcessSpec:
    """The declared inputs, outputs and exit codes of a process class.

    ``inputs`` and ``outputs`` are root :class:`PortNamespace` objects named ``"inputs"`` and
    ``"outputs"``, so validation errors read ``"inputs.sub.x: ..."``. Port names may be dotted
    (``"sub.x"``); missing intermediate namespaces are then created with default options.

    See the module docstring for how re-declaration works in inherited specs. The class may be
    subclassed (e.g. a WorkChain spec adding an outline).

    The class is a little over 400 lines, half of them docstrings: it is plumpy's public spec
    API (declaring ports and namespaces, exit codes, exposing, validating), each method a thin
    layer over :class:`PortNamespace`, which does the work (:mod:`._namespace`,
    :mod:`._parse`).
    """

    _inputs: PortNamespace = attrs.field(init=False, factory=lambda: PortNamespace("inputs"))
    _outputs: PortNamespace = attrs.field(init=False, factory=lambda: PortNamespace("outputs"))
    _exit_codes: dict[str, ExitCode] = attrs.field(init=False, factory=dict)
    _sealed: bool = attrs.field(init=False, default=False)
    _exposed: dict[tuple[_Kind, str | None, object], _Exposure] = attrs.field(
        init=False, factory=dict
    )

    def __repr__(self) -> str:
        return (
            f"ProcessSpec(inputs={list(self._inputs)!r}, outputs={list(self._outputs)!r}, "
            f"exit_codes={list(self._exit_codes)!r}, sealed={self._sealed!r})"
        )

    @property
    def inputs(self) -> PortNamespace:
        """The root input namespace (named ``"inputs"``)."""
        return self._inputs

    @property
    def outputs(self) -> PortNamespace:
        """The root output namespace (named ``"outputs"``)."""
        return self._outputs

    # -- sealing ---------------------------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        """Whether the spec can no longer be changed."""
        return self._sealed

    def seal(self) -> None:
        """Forbid any further change to this spec (idempotent)."""
        self._sealed = True
        self._inputs.seal()
        self._outputs.seal()

    def _check_not_sealed(self, action: str) -> None:
        if self._sealed:
            raise SpecSealedError(f"spec is sealed, can't {action}")

    # -- declaring -------------------------------------------------------------------------------

    def input(
        self,
        name: str,
        valid_type: ValidType | None = None,
        default: Any = UNSPECIFIED,
        required: bool = True,
        validator: PortValidator | None = None,
        help: str | None = None,
    ) -> None:
        """Declare (or re-declare) the input port ``name`` (dotted for nested namespaces).

        A port with a default is never required (the default fills in an absent value). A
        non-callable default is checked now; a callable default is called for every parse.

        Raises:
            SpecSealedError: if the spec is sealed.
            ValueError: if the default is invalid, or the name clashes with a namespace.
            TypeError: if ``valid_type`` is not a type or a tuple of types.
        """
        self._check_not_sealed(f"add input {name!r}")
        *parents, last = _split(name)
        port = InputPort(
            last,
            valid_type=valid_type,
            help=help,
            required=required,
            validator=validator,
            default=default,
        )
        parent, path = self._inputs._ensure_namespace(parents)
        parent._add_port(port, path)

    def output(
        self,
        name: str,
        valid_type: ValidType | None = None,
        required: bool = True,
        validator: PortValidator | None = None,
        help: str | None = None,
    ) -> None:
        """Declare (or re-declare) the output port ``name`` (dotted for nested namespaces).

        Raises:
            SpecSealedError: if the spec is sealed.
            ValueError: if the name clashes with a namespace.
            TypeError: if ``valid_type`` is not a type or a tuple of types.
        """
        self._check_not_sealed(f"add output {name!r}")
        *parents, last = _split(name)
        port = OutputPort(
            last, valid_type=valid_type, help=help, required=required, validator=validator
        )
        parent, path = self._outputs._ensure_namespace(parents)
        parent._add_port(port, path)

    def input_namespace(
        self,
        name: str,
        *,
        dynamic: bool = False,
        valid_type: ValidType | None = None,
        validator: NamespaceValidator | None = None,
        default: Any = UNSPECIFIED,
        required: bool = True,
        help: str | None = None,
    ) -> PortNamespace:
        """Declare an input namespace, or replace the options of an existing one.

        See :class:`PortNamespace` for what ``required``, ``dynamic``, ``valid_type`` (which
        implies ``dynamic``) and ``default`` mean.

        Returns:
            The namespace.

        Raises:
            SpecSealedError: if the spec is sealed.
            ValueError: if the name clashes with a leaf port.
        """
        self._check_not_sealed(f"add input namespace {name!r}")
        return self._inputs.create_namespace(
            name,
            help=help,
            required=required,
            validator=validator,
            valid_type=valid_type,
            default=default,
            dynamic=dynamic,
        )

    def output_namespace(
        self,
        name: str,
        *,
        dynamic: bool = False,
        valid_type: ValidType | None = None,
        validator: NamespaceValidator | None = None,
        required: bool = True,
        help: str | None = None,
    ) -> PortNamespace:
        """Declare an output namespace, or replace the options of an existing one.

        Returns:
            The namespace.

        Raises:
            SpecSealedError: if the spec is sealed.
            ValueError: if the name clashes with a leaf port.
        """
        self._check_not_sealed(f"add output namespace {name!r}")
        return self._outputs.create_namespace(
            name,
            help=help,
            required=required,
            validator=validator,
            valid_type=valid_type,
            dynamic=dynamic,
        )

    def has_input(self, name: str) -> bool:
        """Whether a port (leaf or namespace) is declared at dotted input path ``name``."""
        return _has(self._inputs, name)

    def has_output(self, name: str) -> bool:
        """Whether a port (leaf or namespace) is declared at dotted output path ``name``."""
        return _has(self._outputs, name)

    # -- exit codes ------------------------------------------------------------------------------

    def exit_code(self, status: int, label: str, message: str) -> None:
        """Declare an exit code.

        Args:
            status: a non-negative integer, unique within the spec.
            label: an identifier (so ``spec.exit_codes.LABEL`` works), unique within the spec.
            message: a human-readable message; may contain ``{name}`` fields for
                :meth:`ExitCode.format`.

        Raises:
            SpecSealedError: if the spec is sealed.
            ValueError: if the status or label is invalid or already declared.
            TypeError: if an argument has the wrong type.
        """
        self._check_not_sealed(f"add exit code {label!r}")
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError(f"exit code status must be an int, got {status!r}")
        if not isinstance(label, str) or not isinstance(message, str):
            raise TypeError(f"exit code label and message must be str, got {label!r}, {message!r}")
        if status < 0:
            raise ValueError(f"exit code status must be >= 0, got {status}")
        if not label.isidentifier():
            raise ValueError(f"exit code label must be an identifier, got {label!r}")
        if label in self._exit_codes:
            raise ValueError(f"exit code label {label!r} is already declared")
        for existing in self._exit_codes.values():
            if existing.status == status:
                raise ValueError(
                    f"exit code status {status} is already declared as {existing.label!r}"
                )
        self._exit_codes[label] = ExitCode(status=status, message=message, label=label)

    @property
    def exit_codes(self) -> AttributesFrozenDict:
        """A read-only snapshot mapping label to :class:`ExitCode`; ``spec.exit_codes.LABEL``
        works too."""
        return AttributesFrozenDict(self._exit_codes)

    # -- exposing --------------------------------------------------------------------------------

    def expose_inputs(
        self,
        process_class: HasSpec,
        namespace: str | None = None,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> None:
        """Copy the input ports of ``process_class`` into this spec (exit codes are not copied).

        With ``namespace`` (dotted allowed) the ports go into that namespace. If it doesn't
        exist yet it is created with the source namespace's ``help``, its ``dynamic`` and
        ``valid_type`` (unless ``include`` is given), and its validator (only if nothing was
        left out, since it would otherwise see values it was not written for); it is required
        exactly when one of the exposed ports is (:attr:`PortNamespace.requires_value`).
        If it already exists (declare it first to choose its options), its options are kept.
        Either way, exposing a dynamic source without ``include`` makes the destination
        dynamic (taking the source's ``valid_type`` if it has none), so undeclared keys can be
        passed through.

        ``include`` and ``exclude`` are mutually exclusive dotted paths relative to the source's
        inputs; see :meth:`PortNamespace.absorb`. The copy is a snapshot: later changes to the
        source spec don't show here. Use :meth:`exposed_inputs` to get the values back.

        Raises:
            SpecSealedError: if this spec is sealed.
            ValueError: if include and exclude are both given, a rule names no port, an exposed
                port already exists, or the namespace path runs through a leaf port. Nothing is
                changed in that case.
        """
        self._expose("inputs", process_class, namespace, include, exclude)

    def expose_outputs(
        self,
        process_class: HasSpec,
        namespace: str | None = None,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> None:
        """Copy the output ports of ``process_class`` into this spec; see :meth:`expose_inputs`."""
        self._expose("outputs", process_class, namespace, include, exclude)

    def _expose(
        self,
        kind: _Kind,
        process_class: HasSpec,
        namespace: str | None,
        include: Iterable[str] | None,
        exclude: Iterable[str] | None,
    ) -> None:
        class_name = _class_name(process_class)
        self._check_not_sealed(f"expose {kind} of {class_name}")
        source_spec = process_class.spec()
        source = source_spec.inputs if kind == "inputs" else source_spec.outputs
        root = self._inputs if kind == "inputs" else self._outputs
        selected, complete = select_ports(source, include, exclude)
        action = f"expose {class_name}'s"
        dynamic = source.dynamic and include is None

        if namespace is None:
            destination: PortNamespace | None = root
        else:
            destination = _find_namespace(root, namespace)

        if destination is None:
            assert namespace is not None
            *parents, last = _split(namespace)
            created = PortNamespace(
                last,
                help=source.help,
                required=any(
                    port.requires_value if isinstance(port, PortNamespace) else port.required
                    for port in selected.values()
                ),
                validator=source.validator if complete else None,
                valid_type=source.valid_type if dynamic else None,
                dynamic=dynamic,
            )
            merge_ports(created, selected, action=action)
            parent, parent_path = root._ensure_namespace(parents)
            parent._add_port(created, parent_path)
        else:
            path = root.name if namespace is None else f"{root.name}.{namespace}"
            merge_ports(destination, selected, action=action, path=path)
            if dynamic and not destination.dynamic:
                destination.dynamic = True
                if destination.valid_type is None:
                    destination.valid_type = source.valid_type

        key = (kind, namespace, process_class)
        exposure = self._exposed.get(key)
        if exposure is None:
            self._exposed[key] = _Exposure(list(selected), dynamic)
        else:
            exposure.names.extend(name for name in selected if name not in exposure.names)
            exposure.dynamic = exposure.dynamic or dynamic

    def exposed_inputs(
        self, inputs: Mapping[str, Any], process_class: HasSpec, namespace: str | None = None
    ) -> dict[str, Any]:
        """Return the part of ``inputs`` that was exposed from ``process_class``.

        ``inputs`` is a parsed (or raw) input mapping of *this* spec. The result holds the
        values of the ports exposed from ``process_class`` under ``namespace`` (plus, if a
        dynamic source was exposed whole, the undeclared keys of that namespace), as plain
        nested ``dict`` objects ready to be passed to ``process_class``. Absent values are left
        out, so the class fills in its own defaults. Only the given namespace is searched
        (unlike aiida-core, parent namespaces are not merged in).

        Raises:
            ValueError: if nothing of ``process_class`` was exposed under ``namespace``.
        """
        return self._exposed_values("inputs", inputs, process_class, namespace)

    def exposed_outputs(
        self, outputs: Mapping[str, Any], process_class: HasSpec, namespace: str | None = None
    ) -> dict[str, Any]:
        """Return the part of ``outputs`` that was exposed from ``process_class``; see
        :meth:`exposed_inputs`."""
        return self._exposed_values("outputs", outputs, process_class, namespace)

    def _exposed_values(
        self,
        kind: _Kind,
        values: Mapping[str, Any],
        process_class: HasSpec,
        namespace: str | None,
    ) -> dict[str, Any]:
        exposure = self._exposed.get((kind, namespace, process_class))
        if exposure is None:
            where = "at the top level" if namespace is None else f"in namespace {namespace!r}"
            raise ValueError(f"no {kind} of {_class_name(process_class)} were exposed {where}")
        root = self._inputs if kind == "inputs" else self._outputs
        declared = root if namespace is None else _find_namespace(root, namespace)
        assert declared is not None  # exposing created it, and ports are never removed
        current: Any = values
        for part in _split(namespace) if namespace is not None else ():
            if not isinstance(current, Mapping) or part not in current:
                return {}
            current = current[part]
        if not isinstance(current, Mapping):
            return {}
        result = {name: thaw(current[name]) for name in exposure.names if name in current}
        if exposure.dynamic:
            result.update(
                (key, thaw(value)) for key, value in current.items() if key not in declared
            )
        return result

    # -- validating ------------------------------------------------------------------------------

    def validate_inputs(self, raw: Mapping[str, Any] | None) -> AttributesFrozenDict:
        """Parse raw process inputs: fill in defaults, check everything, freeze the result.

        ``raw`` (and any dict inside it) is never changed; ``None`` means no inputs. Callable
        defaults are called on every call.

        Raises:
            PortValidationError: naming the full path (``inputs....``) of the first problem.
        """
        return self._inputs.validate(raw)

    def validate_output(self, name: str, value: Any) -> None:
        """Check one emitted output against the (dotted) output port ``name``.

        See :meth:`PortNamespace.validate_value`: required-ness and namespace validators are
        left for the end (:meth:`missing_required_outputs`, :meth:`validate_outputs`).

        Raises:
            PortValidationError: e.g. ``"outputs.x: undeclared port in non-dynamic namespace"``.
        """
        self._outputs.validate_value(name, value)

    def validate_outputs(self, outputs: Mapping[str, Any] | None) -> AttributesFrozenDict:
        """Check a complete set of outputs: types, required ports, all validators.

        Raises:
            PortValidationError: naming the full path (``outputs....``) of the first problem.
        """
        return self._outputs.validate_outputs(outputs)

    def missing_required_outputs(self, outputs: Mapping[str, Any]) -> list[str]:
        """Return the dotted names (relative to ``outputs``, e.g. ``"sub.x"``, the same form
        that :meth:`validate_output` takes) of required outputs absent from ``outputs``.

        A required output namespace that is absent counts as empty (its required ports are
        listed); an absent optional one is skipped.
        """
        return self._outputs.missing_required(outputs)


def _split(name: str) -> list[str]:
    parts = name.split(".") if isinstance(name, str) else [""]
    if not all(parts):
        raise ValueError(f"invalid port name {name!r}")
    return parts


def _has(root: PortNamespace, name: str) -> bool:
    try:
        root.get_port(name)
    except KeyError:
        return False
    return True


def _find_namespace(root: PortNamespace, path: str) -> PortNamespace | None:
    """Return the namespace at ``path`` (``None`` if absent); ``ValueError`` if a leaf blocks it."""
    node: Port | PortNamespace = root
    walked = root.name
    for part in _split(path):
        assert isinstance(node, PortNamespace)
        child = node.get(part)
        walked = f"{walked}.{part}"
        if child is None:
            return None
        if not isinstance(child, PortNamespace):
            raise ValueError(f"{walked!r} is a port, not a namespace")
        node = child
    assert isinstance(node, PortNamespace)
    return node
