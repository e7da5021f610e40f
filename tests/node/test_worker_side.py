"""``am.node.worker`` in-process: the test plays the supervisor over a socketpair, so
the token rules, the claim timeout and the environment checks run without spawning."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import trio_am as am
from trio_am import node
from trio_am.rpc.transport import TcpFrameStream

TOKEN = "t" * 24


@asynccontextmanager
async def worker_pair(
    schema: am.SchemaLike = node.WORKER_SCHEMA, **options: float
) -> AsyncIterator[tuple[node.Worker, am.rpc.Client]]:
    """A worker served by ``node.worker`` and the supervisor's link to it."""
    ours, theirs = socket.socketpair()
    env = {
        "AM_NODE_FD": str(theirs.detach()),
        "AM_NODE_KIND": "sq",
        "AM_NODE_ID": "sq-1",
        "AM_NODE_URL": "tcp://127.0.0.1:0",
    }
    async with am.open_machine(schema, id="w") as mach, trio.open_nursery() as nursery:
        w: node.Worker = await nursery.start(
            lambda task_status: node.worker(mach, "sq", env=env, task_status=task_status, **options)
        )
        stream = TcpFrameStream(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        async with am.rpc.attach(stream, id="sv", heartbeat=None) as sv:
            await sv.rpc.when1("Ready")
            yield w, sv
        with trio.fail_after(5):
            await mach.when_not1("Ready")  # the worker stops once the link is gone


async def test_node_addr_and_states() -> None:
    async with worker_pair() as (w, sv):
        info = await sv.get("node.addr")
        assert info["addr"] == w.public_url and info["id"] == "sq-1" and info["kind"] == "sq"
        assert sv.mach.is_all(["Ready", "LocalRpcReady", "PublicRpcReady", "SuperConnected"])
        assert sv.mach.is1("Idle")
        assert w.client_id is None


async def test_only_the_assigned_pair_gets_in_and_leaving_frees_the_worker() -> None:
    async with worker_pair() as (w, sv):
        offer = node.WorkerOffer("sq-1", w.public_url, TOKEN)
        with pytest.raises(am.rpc.AuthError):  # nobody assigned yet
            async with node.open_worker(offer, id="c1"):
                pass  # pragma: no cover
        assert await sv.mach.add1_remote("ServeClient", {"client_id": "c1", "token": TOKEN}) == (
            am.Result.EXECUTED
        )
        assert w.client_id == "c1"
        with pytest.raises(am.rpc.AuthError):
            async with node.open_worker(offer, id="c2"):
                pass  # pragma: no cover
        async with node.open_worker(offer, id="c1") as c:
            await sv.mach.when1("ClientConnected")
            assert c.grant["mutable"] == ["Exception", "ErrOnClient", "Idle", "WorkRequested"]
            assert w.send_payload_nowait("hello", 1) == 1
        with trio.fail_after(5):
            await sv.mach.when_not1("ServeClient")
        assert w.client_id is None
        with pytest.raises(am.rpc.AuthError):  # spent
            async with node.open_worker(offer, id="c1"):
                pass  # pragma: no cover


async def test_claim_timeout_releases_an_unclaimed_worker() -> None:
    async with worker_pair(claim_timeout=0.2) as (w, sv):
        await sv.mach.add1_remote("ServeClient", {"client_id": "c1", "token": TOKEN})
        with trio.fail_after(5):
            await sv.mach.when_not1("ServeClient")
        assert w.client_id is None


async def test_bad_serve_client_args_are_refused() -> None:
    async with worker_pair() as (_w, sv):
        for args in (
            {},
            {"client_id": "c1"},
            {"client_id": "c 1", "token": TOKEN},
            {"client_id": "c1", "token": "short"},
        ):
            assert await sv.mach.add1_remote("ServeClient", args) == am.Result.CANCELED
        # a payload needs a connected client
        assert await sv.mach.add1_remote("ClientSendPayload", {"name": "x"}) == am.Result.CANCELED


async def test_app_states_are_mutable_by_the_client() -> None:
    schema = am.schema_merge(node.WORKER_SCHEMA, {"Resize": {"require": ["Ready"]}})
    async with worker_pair(schema) as (w, sv):
        await sv.mach.add1_remote("ServeClient", {"client_id": "c1", "token": TOKEN})
        offer = node.WorkerOffer("sq-1", w.public_url, TOKEN)
        async with node.open_worker(offer, id="c1") as c:
            assert await c.mach.add1_remote("Resize") == am.Result.EXECUTED
            with pytest.raises(am.rpc.AuthError):
                await c.mach.add1_remote("WorkReady")


def env_of(**extra: str) -> dict[str, str]:
    base = {"AM_NODE_FD": "3", "AM_NODE_KIND": "sq", "AM_NODE_ID": "sq-1"}
    base.update(extra)
    return {k: v for k, v in base.items() if v != "-"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "not started by a supervisor"),
        (env_of(AM_NODE_KIND="cube"), "the supervisor wants 'cube'"),
        (env_of(AM_NODE_ID="a b"), "AM_NODE_ID"),
        (env_of(AM_NODE_FD="x"), "file descriptor"),
        (env_of(AM_NODE_FD="-"), "file descriptor"),
        (env_of(AM_NODE_URL="http://x"), "AM_NODE_URL"),
        (env_of(AM_NODE_TRANSPORT="udp"), "AM_NODE_TRANSPORT"),
        (env_of(AM_NODE_TRANSPORT="tcp"), "AM_NODE_SECRET"),
        (env_of(AM_NODE_FD="987"), "not an open socket"),
    ],
)
async def test_bad_environment(env: dict[str, str], message: str) -> None:
    async with am.open_machine(node.WORKER_SCHEMA, id="w") as mach:
        with pytest.raises(node.WorkerEnvError, match=message):
            await node.worker(mach, "sq", env=env)


async def test_worker_needs_the_node_states_and_a_valid_kind() -> None:
    async with am.open_machine({"Foo": {}}, id="w") as mach:
        with pytest.raises(am.SchemaError, match="WORKER_SCHEMA"):
            await node.worker(mach, "sq", env=env_of())
        with pytest.raises(ValueError, match="kind"):
            await node.worker(mach, "no spaces", env=env_of())
    async with am.open_machine(node.WORKER_SCHEMA, id="w") as mach:
        with pytest.raises(ValueError, match="claim_timeout"):
            await node.worker(mach, "sq", claim_timeout=0, env=env_of())


async def test_a_broken_supervisor_link_stops_the_worker_with_err_supervisor() -> None:
    ours, theirs = socket.socketpair()
    env = {
        "AM_NODE_FD": str(theirs.detach()),
        "AM_NODE_KIND": "sq",
        "AM_NODE_ID": "sq-1",
    }
    async with am.open_machine(node.WORKER_SCHEMA, id="w") as mach, trio.open_nursery() as nursery:
        done = trio.Event()

        async def run_worker(task_status: trio.TaskStatus[node.Worker]) -> None:
            try:
                await node.worker(mach, "sq", env=env, task_status=task_status)
            finally:
                done.set()

        await nursery.start(run_worker)
        stream = TcpFrameStream(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        async with am.rpc.attach(stream, id="sv", heartbeat=None) as sv:
            await sv.rpc.when1("Ready")
            await stream.abort()  # no goodbye
            with trio.fail_after(5):
                await done.wait()
        assert mach.is1("ErrSupervisor")
        assert isinstance(mach.err, node.NodeError) and "broke" in str(mach.err)
        assert not mach.is1("Ready")
