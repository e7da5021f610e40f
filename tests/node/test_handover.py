"""Hand-over (scenario 55): a client gets a worker from the supervisor with a one-time
token and works with it directly; what a client may and may not do."""

from __future__ import annotations

import socket

import pytest
import trio

import trio_am as am
from trio_am import node

from .conftest import SQUARER, client_options, open_inbox, running, wait_payload, wait_until


async def test_handover_and_work() -> None:
    """Scenario 55, first part: the node.worker payload, WorkerReady then Ready, and a
    WorkRequested {"input": 3} that comes back as the payload 9."""
    async with running(node.Pool(min=2, max=4, warm=1)) as sup, open_inbox() as (inbox, got):
        await sup.wait_ready(timeout=10)
        async with node.connect(
            sup.url, "squarer", node.WORKER_SCHEMA, consumer=inbox, **client_options()
        ) as nc:
            order: list[str] = []

            class Order:
                def WorkerReady_state(self, e: am.Event) -> None:
                    order.append("WorkerReady")

                def Ready_state(self, e: am.Event) -> None:
                    order.append("Ready")

            nc.mach.bind_handlers(Order())
            with trio.fail_after(10):
                await nc.mach.when1("SuperReady")
                worker = await nc.request_worker()
            offer = await wait_payload(inbox, got, "node.worker")
            assert set(offer.data) >= {"addr", "token", "worker_id"}
            assert offer.data["worker_id"] == nc.worker_id
            assert offer.data["addr"] == next(w.addr for w in sup.workers if w.id == nc.worker_id)
            assert order == ["WorkerReady", "Ready"]
            assert nc.mach.is1("Ready") and not nc.mach.is1("WorkerRequested")
            busy = [w for w in sup.workers if w.status == "busy"]
            assert [(w.id, w.client_id) for w in busy] == [(nc.worker_id, nc.id)]

            assert await worker.add1_remote("WorkRequested", {"input": 3}) == am.Result.EXECUTED
            result = await wait_payload(inbox, got, "result")
            assert result.data == 9
            await worker.when1("WorkReady")


async def test_token_is_for_one_client_and_one_assignment() -> None:
    """Scenario 55: the same token from another client raises AuthError; after the
    client left, the token is spent for it too."""
    async with running(node.Pool(min=1, max=2, warm=0)) as sup, open_inbox() as (inbox, got):
        await sup.wait_ready(timeout=10)
        async with node.connect(
            sup.url, "squarer", node.WORKER_SCHEMA, consumer=inbox, **client_options()
        ) as nc:
            await nc.request_worker()
            offer = node.WorkerOffer.from_payload(
                (await wait_payload(inbox, got, "node.worker")).data
            )
            with pytest.raises(am.rpc.AuthError):
                async with node.open_worker(offer, id="thief"):
                    pass  # pragma: no cover
            bad = node.WorkerOffer(offer.worker_id, offer.addr, "x" * 32)
            with pytest.raises(am.rpc.AuthError):
                async with node.open_worker(bad, id=nc.id):
                    pass  # pragma: no cover
            # the rightful client keeps working
            assert await nc.worker.add1_remote("WorkRequested", {"input": 5}) == am.Result.EXECUTED  # type: ignore[union-attr]
            assert (await wait_payload(inbox, got, "result")).data == 25
            await nc.release_worker()
            await wait_until(lambda: [w.status for w in sup.workers] == ["idle"])
            with pytest.raises(am.rpc.AuthError):
                async with node.open_worker(offer, id=nc.id):
                    pass  # pragma: no cover


async def test_max_per_client() -> None:
    """Scenario 55: with max_per_client=1, a second ProvideWorker from the same client
    gets node.no_worker {reason: max_per_client} and no second ServeClient."""
    async with (
        running(node.Pool(min=2, max=4, warm=1, max_per_client=1)) as sup,
        open_inbox() as (inbox, got),
    ):
        await sup.wait_ready(timeout=10)
        async with node.connect(
            sup.url, "squarer", node.WORKER_SCHEMA, consumer=inbox, **client_options()
        ) as nc:
            await nc.request_worker()
            assert nc.supervisor is not None
            res = await nc.supervisor.add1_remote("ProvideWorker", {"req": 1000})
            assert res == am.Result.EXECUTED
            refusal = await wait_payload(inbox, got, "node.no_worker")
            assert refusal.data == {"req": 1000, "reason": "max_per_client"}
            mirrors = {wid: w.mirror for wid, w in sup._workers.items()}
            others = [m for wid, m in mirrors.items() if wid != nc.worker_id]
            assert others and all(m is not None and m.tick("ServeClient") == 0 for m in others)
            assert [w.client_id for w in sup.workers if w.status == "busy"] == [nc.id]
            assert len(got.named("node.worker")) == 1


async def test_no_free_worker_backs_off_then_gives_up() -> None:
    async with running(node.Pool(min=1, max=1, warm=0)) as sup:
        await sup.wait_ready(timeout=10)
        async with (
            node.connect(
                sup.url, "squarer", node.WORKER_SCHEMA, id="first", **client_options()
            ) as a,
            open_inbox() as (inbox, got),
            node.connect(
                sup.url,
                "squarer",
                node.WORKER_SCHEMA,
                id="second",
                consumer=inbox,
                backoff=am.rpc.Backoff(initial=0.05, max=0.1),
                **client_options(),
            ) as b,
        ):
            await a.request_worker()
            with pytest.raises(node.NoWorkerError) as info:
                await b.request_worker(timeout=0.5)
            assert info.value.reason == "none_free"
            assert len(got.named("node.no_worker")) >= 2  # it asked again
            assert not b.mach.is1("WorkerRequested")
            # once the first client lets go, the second one gets that worker
            await a.release_worker()
            await b.request_worker(timeout=10)
            assert b.mach.is1("Ready")


async def test_grants_of_clients() -> None:
    """A client mutates only ProvideWorker and WorkerIssues on the supervisor, and not
    the node's own states on its worker."""
    async with running(node.Pool(min=1, max=2, warm=0)) as sup:
        await sup.wait_ready(timeout=10)
        async with node.connect(sup.url, "squarer", node.WORKER_SCHEMA, **client_options()) as nc:
            worker = await nc.request_worker()
            assert nc.supervisor is not None
            for state in ("KillWorker", "ForkWorker", "Start", "ErrWorker"):
                with pytest.raises(am.rpc.AuthError):
                    await nc.supervisor.add1_remote(state, {"worker_id": nc.worker_id})
            for state in ("ServeClient", "ClientSendPayload", "Ready", "Healthcheck"):
                with pytest.raises(am.rpc.AuthError):
                    await worker.add1_remote(state, {"client_id": "x", "token": "y" * 20})
            assert [w.status for w in sup.workers] == ["busy"]
            # a complaint about somebody else's worker is ignored
            await nc.supervisor.add1_remote("WorkerIssues", {"worker_id": "nope", "reason": "x"})
            assert sup.workers[0].errors == 0
            # ErrOnClient is the client's way to report an error to its worker
            assert await worker.add_err_remote(ValueError("bad input")) == am.Result.EXECUTED
            assert worker.is1("ErrOnClient")


async def test_worker_issues_release_the_worker() -> None:
    async with running(node.Pool(min=1, max=2, warm=0)) as sup:
        await sup.wait_ready(timeout=10)
        async with node.connect(sup.url, "squarer", node.WORKER_SCHEMA, **client_options()) as nc:
            await nc.request_worker()
            assert nc.supervisor is not None
            await nc.supervisor.add1_remote(
                "WorkerIssues", {"worker_id": nc.worker_id, "reason": "too slow"}
            )
            err = sup.mach.err
            assert isinstance(err, node.NodeError) and "too slow" in str(err)
            assert sup.workers[0].errors == 1 and not sup.workers[0].healthy


async def test_supervisor_list_order_and_blacklist() -> None:
    """A dead URL and a server that is no supervisor are skipped (and blacklisted);
    the third URL serves."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    async with (
        running(node.Pool(min=1, max=1, warm=0)) as sup,
        am.open_machine({"Foo": {}}, id="plain") as plain,
        am.rpc.serve(plain, "tcp://127.0.0.1:0") as other,
    ):
        await sup.wait_ready(timeout=10)
        urls = [dead, other.urls[0], sup.url]
        async with node.connect(urls, "squarer", node.WORKER_SCHEMA, **client_options()) as nc:
            await nc.request_worker()
            assert nc.super_url == sup.url
            assert set(nc.blacklisted) == {dead, other.urls[0]}
            assert nc.mach.tick("ErrSupervisor") >= 1


async def test_tcp_transport() -> None:
    """transport="tcp": workers announce themselves with AM-NODE-READY on stdout."""
    async with (
        running(node.Pool(min=1, max=2, warm=0), transport="tcp") as sup,
        open_inbox() as (inbox, got),
    ):
        await sup.wait_ready(timeout=10)
        async with node.connect(
            sup.url, "squarer", node.WORKER_SCHEMA, consumer=inbox, **client_options()
        ) as nc:
            worker = await nc.request_worker()
            await worker.add1_remote("WorkRequested", {"input": 7})
            assert (await wait_payload(inbox, got, "result")).data == 49


async def test_websocket_urls() -> None:
    """A ws:// public URL: clients reach the supervisor and their worker over WebSocket."""
    sup = node.Supervisor(
        "squarer", SQUARER, node.WORKER_SCHEMA, pool=node.Pool(min=1, max=1, warm=0)
    )
    async with sup.run("ws://127.0.0.1:0"), open_inbox() as (inbox, got):
        await sup.wait_ready(timeout=10)
        assert sup.url.startswith("ws://") and sup.workers[0].addr.startswith("ws://")  # type: ignore[union-attr]
        async with node.connect(
            sup.url, "squarer", node.WORKER_SCHEMA, consumer=inbox, **client_options()
        ) as nc:
            worker = await nc.request_worker()
            await worker.add1_remote("WorkRequested", {"input": 12})
            assert (await wait_payload(inbox, got, "result")).data == 144
