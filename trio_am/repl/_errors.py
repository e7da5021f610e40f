"""The REPL's error: a message meant for the person at the prompt."""

from __future__ import annotations

from .._errors import Error

__all__ = ["ReplError"]


class ReplError(Error):
    """A REPL command or target failed: a bad address, an unknown machine or state, bad
    arguments, a lost connection. The message is shown as ``err> …``; in CLI mode the
    exit code is 1.

    Attributes:
        usage: the error is in how a command was written (its usage is worth showing).
    """

    def __init__(self, message: str = "", *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage
