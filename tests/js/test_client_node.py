"""am.js's client role (``js/src/client.js``) against a real Python aRPC server: node's
test runner runs ``js/test/client.test.mjs``, which starts ``tests/support/js_server.py``
with this Python and checks the handshake, mutations, waits, payloads, getters, errors,
resync, resume, heartbeat, a new epoch, the relay and BYE."""

from __future__ import annotations

import sys

from tests.js.conftest import run_node_test


def test_client_role_against_python_server() -> None:
    out = run_node_test("test/client.test.mjs", {"TRIO_AM_PYTHON": sys.executable})
    assert "# pass 12" in out
