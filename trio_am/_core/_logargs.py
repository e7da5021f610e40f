"""Which mutation args show in log lines (machine.md §12.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

__all__ = ["DEFAULT_LOG_NAMES", "default_log_args", "log_args_mapper"]

#: Arg names shown by default.
DEFAULT_LOG_NAMES: Final = ("name", "id", "port", "addr", "err", "path", "url", "uri")


def _cut(value: Any, max_len: int) -> str:
    text = str(value)
    if len(text) > max_len:
        return text[: max(0, max_len - 3)] + "..."
    return text


def log_args_mapper(
    max_len: int = 20, names: Iterable[str] = DEFAULT_LOG_NAMES
) -> Callable[[Mapping[str, Any]], dict[str, str]]:
    """Build an args mapper: keeps the given arg names (and typed args' fields marked
    with ``{"log": ...}`` metadata), values cut to ``max_len`` characters ending in ``...``.

    Pass it to ``mach.set_log_args``.
    """
    wanted = frozenset(names)

    def mapper(args: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in args.items():
            if key in wanted:
                out[key] = _cut(value, max_len)
                continue
            fields = getattr(type(value), "__am_log_fields__", None)
            if fields:
                for attr, label in fields.items():
                    out[label] = _cut(getattr(value, attr, None), max_len)
        return out

    return mapper


default_log_args: Final = log_args_mapper()
