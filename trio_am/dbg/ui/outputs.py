"""Files the debugger keeps in its ``-d`` directory (D51): ``tx.md`` (the current tx with
its steps, ``--output-tx``), ``log.md`` (the selected client's log, ``--output-log``),
``clients.txt`` (the client list, ``--output-clients``) and ``am-dbg-err.log`` (errors of
the UI itself). Written at most every :data:`EVERY` seconds, only after a change."""

from __future__ import annotations

import time
from pathlib import Path

from .. import view
from ..model import Model
from ..view import plain

__all__ = ["EVERY", "Outputs", "clients_text", "log_text", "tx_text"]

#: Smallest interval between two writes of one file.
EVERY = 0.25

_TYPES = {0: "add", 1: "remove", 2: "set", 3: "eval"}


def tx_text(model: Model) -> str:
    """``tx.md``: the address, time, ``[type] States`` and a ``- step`` line per step of
    the current tx."""
    cl = model.client()
    if cl is None:
        return ""
    out = [model.url(), ""]
    if not (0 < cl.c <= len(cl.txs)):
        out.append("Initial machine schema")
        return "\n".join(out) + "\n"
    tx = cl.txs[cl.c - 1]
    left, right = view.tx_bar(model)
    out.append(f"{plain(left)} | {plain(right)}")
    out.append("")
    typ = _TYPES.get(tx.type, str(tx.type))
    states = " ".join(cl.names[i] if 0 <= i < len(cl.names) else f"#{i}" for i in tx.called)
    out.append(f"[{typ}] {states}")
    out.append("")
    out += [f"- {view.step_words(cl, st)}" for st in tx.steps]
    return "\n".join(out) + "\n"


def log_text(model: Model) -> str:
    """``log.md``: the selected client's log lines (as the log pane shows them)."""
    cl = model.client()
    if cl is None:
        return ""
    return "".join(plain(mk) + "\n" for _no, mk in view.log_lines(model, cl))


def clients_text(model: Model) -> str:
    """``clients.txt``: one line per listed client."""
    return "".join(plain(mk) + "\n" for _cid, mk in view.client_list_rows(model))


class Outputs:
    """Keeps the ``-d`` files up to date; call :meth:`tick` often (it throttles itself)."""

    def __init__(
        self, out_dir: Path, *, tx: bool = True, log: bool = False, clients: bool = False
    ) -> None:
        self.dir = out_dir
        self.tx = tx
        self.log = log
        self.clients = clients
        self._seen: dict[str, object] = {}
        self._last = 0.0

    def tick(self, model: Model, force: bool = False) -> None:
        """Rewrite the files whose content may have changed."""
        if not (self.tx or self.log or self.clients):
            return
        now = time.monotonic()
        if not force and now - self._last < EVERY:
            return
        self._last = now
        if self.tx:
            self._write("tx.md", (model.url(), model.version), lambda: tx_text(model))
        if self.log:
            self._write("log.md", model.version, lambda: log_text(model))
        if self.clients:
            self._write("clients.txt", model.version, lambda: clients_text(model))

    def _write(self, name: str, key: object, text: object) -> None:
        if self._seen.get(name) == key:
            return
        self._seen[name] = key
        try:
            (self.dir / name).write_text(text() if callable(text) else str(text))
        except OSError:
            pass

    def error(self, text: str) -> Path | None:
        """Append ``text`` (a traceback) to ``am-dbg-err.log``; its path, or None."""
        path = self.dir / "am-dbg-err.log"
        try:
            with path.open("a") as fh:
                fh.write(time.strftime("%Y-%m-%d %H:%M:%S ") + text.rstrip() + "\n")
        except OSError:
            return None
        return path
