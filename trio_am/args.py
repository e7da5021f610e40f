"""Typed mutation arguments with attrs and cattrs (machine.md §13, §17.7).

An attrs class decorated with :func:`typed_args` is stored in an args dict under
``"<prefix>__<state>"`` (``state`` defaults to ``Any``) by :func:`pass_args` and read
back by :func:`parse_args`. Locally the object itself travels; over the wire
(:data:`args_converter`, msgpack-friendly) it becomes a dict and :func:`parse_args`
structures it back into the class.

Example::

    @am.typed_args(prefix="worker")
    @attrs.define
    class WorkerArgs:
        job_id: str = attrs.field(metadata={"log": "job"})
        retries: int = 0

    mach.add1("Work", am.pass_args(WorkerArgs("j1")))
    # in a handler:
    a = am.parse_args(WorkerArgs, e.args)      # WorkerArgs(job_id='j1', retries=0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs

from ._core._logargs import DEFAULT_LOG_NAMES, log_args_mapper
from ._errors import Error

__all__ = [
    "args_converter",
    "args_key",
    "log_args_mapper",
    "log_field",
    "merge_args",
    "parse_args",
    "pass_args",
    "structure_args",
    "typed_args",
    "unstructure_args",
]

T = TypeVar("T")

#: The converter that (un)structures typed args for the wire (msgpack-friendly values).
args_converter: cattrs.Converter = cattrs.Converter()

_REGISTRY: dict[str, type[Any]] = {}


def args_key(cls: type[Any]) -> str:
    """The args key of a typed-args class: ``"<prefix>__<state>"``.

    Raises:
        Error: the class is not decorated with :func:`typed_args`.
    """
    key = getattr(cls, "__am_args_key__", None)
    if key is None:
        raise Error(f"{cls.__name__} is not a typed-args class (use @am.typed_args)")
    return str(key)


def typed_args(prefix: str, state: str = "Any") -> Callable[[type[T]], type[T]]:
    """Class decorator registering an attrs class as typed args stored under
    ``f"{prefix}__{state}"``. Fields whose metadata has ``"log"`` are shown in logs
    under that label.

    Raises:
        TypeError: the class is not an attrs class.
        Error: the key is taken by another class.
    """
    if not prefix or "__" in prefix:
        raise ValueError(f"typed_args prefix must be non-empty and without '__': {prefix!r}")

    def deco(cls: type[T]) -> type[T]:
        if not attrs.has(cls):
            raise TypeError(f"@typed_args needs an attrs class, got {cls.__name__}")
        key = f"{prefix}__{state}"
        other = _REGISTRY.get(key)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise Error(f"typed args key {key!r} is taken by {other.__name__}")
        _REGISTRY[key] = cls
        cls.__am_args_key__ = key  # type: ignore[attr-defined]
        cls.__am_log_fields__ = {  # type: ignore[attr-defined]
            f.name: str(f.metadata["log"]) for f in attrs.fields(cls) if "log" in f.metadata
        }
        return cls  # type: ignore[return-value]  # attrs.has narrows to AttrsInstance

    return deco


def log_field(label: str, **kwargs: Any) -> Any:
    """``attrs.field`` shown in logs and telemetry under ``label``."""
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata["log"] = label
    return attrs.field(metadata=metadata, **kwargs)


def pass_args(*objs: Any, **extra: Any) -> dict[str, Any]:
    """An args dict holding typed-args objects under their keys (plus ``extra`` keys)."""
    out: dict[str, Any] = {}
    for obj in objs:
        out[args_key(type(obj))] = obj
    out.update(extra)
    return out


def parse_args(cls: type[T], args: Mapping[str, Any] | None) -> T | None:
    """Read typed args of ``cls`` from an args mapping (an object passed locally, or the
    dict it became on the wire). None when absent.

    Raises:
        cattrs.BaseValidationError: the wire form does not fit ``cls``.
    """
    if not args:
        return None
    value = args.get(args_key(cls))
    if value is None:
        return None
    if isinstance(value, cls):
        return value
    return args_converter.structure(value, cls)


def merge_args(*dicts: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge args mappings; later keys win."""
    out: dict[str, Any] = {}
    for d in dicts:
        if d:
            out.update(d)
    return out


def unstructure_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Args made wire-ready: typed-args objects become dicts (others pass through
    ``args_converter``)."""
    return {k: args_converter.unstructure(v) for k, v in args.items()}


def structure_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The reverse of :func:`unstructure_args` for keys of registered typed-args classes."""
    out: dict[str, Any] = {}
    for k, v in args.items():
        cls = _REGISTRY.get(k)
        out[k] = (
            args_converter.structure(v, cls) if cls is not None and isinstance(v, Mapping) else v
        )
    return out


_ = (DEFAULT_LOG_NAMES,)
