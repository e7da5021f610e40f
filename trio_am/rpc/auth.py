"""Authentication and per-state access control (arpc.md B12; asyncmachine-go has none).

A :class:`Grant` says what one client may read, mutate, receive and ask for. ``serve``
takes an ``auth`` callable ``async (client_id, token, peer) -> Grant | None``;
:class:`TokenAuth` is the usual one: a map of tokens to grants, compared in constant
time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

__all__ = ["ALL", "FULL_GRANT", "Grant", "TokenAuth"]


class _All:
    """Everything: the default of each :class:`Grant` field."""

    __slots__ = ()

    def __contains__(self, item: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALL"

    def __reduce__(self) -> str:
        return "ALL"


#: "Every state" / "every getter" in a :class:`Grant`.
ALL: Final = _All()


def _names(value: Any) -> _All | frozenset[str]:
    if value is ALL or value is None:
        return ALL
    if isinstance(value, str):
        return frozenset([value])
    return frozenset(value)


def _ids(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


@attrs.frozen
class Grant:
    """What one client may do.

    Attributes:
        readable: states the client sees (``ALL`` or a set of names).
        mutable: states the client may add or remove; each must also be readable.
        payloads: whether the client receives payloads.
        getters: getter names the client may call (``ALL`` or a set).
        client_ids: if set, only these client ids may use the grant.
    """

    readable: _All | frozenset[str] = attrs.field(default=ALL, converter=_names)
    mutable: _All | frozenset[str] = attrs.field(default=ALL, converter=_names)
    payloads: bool = True
    getters: _All | frozenset[str] = attrs.field(default=ALL, converter=_names)
    client_ids: frozenset[str] | None = attrs.field(default=None, converter=_ids)

    def __attrs_post_init__(self) -> None:
        if self.readable is not ALL and self.mutable is ALL:
            object.__setattr__(self, "mutable", self.readable)
        elif self.readable is not ALL and isinstance(self.mutable, frozenset):
            extra = self.mutable - self.readable  # type: ignore[operator]
            if extra:
                raise ValueError(f"Grant: mutable states must be readable: {sorted(extra)}")

    def can_read(self, state: str) -> bool:
        """True if the grant shows ``state``."""
        return state in self.readable

    def can_mutate(self, state: str) -> bool:
        """True if the grant lets the client add or remove ``state``."""
        return state in self.mutable

    def to_wire(self, names: Iterable[str]) -> dict[str, Any]:
        """The WELCOME ``grant`` map: mutable names among ``names``, payloads, getters."""
        return {
            "mutable": [n for n in names if n in self.mutable],
            "payloads": self.payloads,
            "getters": None if self.getters is ALL else sorted(self.getters),  # type: ignore[arg-type]
        }


#: Full rights: what every client gets when ``serve`` has no ``auth``.
FULL_GRANT: Final = Grant()


class TokenAuth:
    """``auth`` for ``serve``: each token maps to a :class:`Grant`.

    Tokens are compared with :func:`hmac.compare_digest` against every known token, so
    the time taken does not tell which one came close. A grant with ``client_ids``
    also checks the client id.

    Example::

        auth = am.rpc.TokenAuth({"t1": am.rpc.Grant(mutable={"Foo"})})
    """

    def __init__(self, tokens: Mapping[str, Grant]) -> None:
        self._tokens = [(t.encode(), g) for t, g in tokens.items()]

    async def __call__(self, client_id: str, token: str | None, peer: str) -> Grant | None:
        """The grant for ``token``, or None to refuse."""
        given = (token or "").encode()
        found: Grant | None = None
        for known, grant in self._tokens:
            if hmac.compare_digest(known, given):
                found = grant
        if found is not None and found.client_ids is not None and client_id not in found.client_ids:
            return None
        return found
