"""The pool formula, the schemas, and bad input to the supervisor and the client
(clear typed errors, never a hang). No worker process is started here."""

from __future__ import annotations

import socket
import sys

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trio_am as am
from trio_am import node

from .conftest import SQUARER


@given(
    lo=st.integers(0, 20),
    extra=st.integers(0, 20),
    warm=st.integers(0, 20),
    busy=st.integers(0, 50),
)
def test_pool_target(lo: int, extra: int, warm: int, busy: int) -> None:
    pool = node.Pool(min=lo, max=max(1, lo + extra), warm=warm)
    target = pool.target(busy)
    assert target == min(pool.max, max(pool.min, busy + warm))
    assert pool.min <= target <= pool.max
    # room for every busy worker plus the warm ones, as far as max allows
    assert target >= min(pool.max, busy + warm)
    assert pool.target(busy + 1) >= target  # more clients never shrink the pool


def test_pool_defaults_and_go_difference() -> None:
    pool = node.Pool()
    assert (pool.min, pool.max, pool.warm, pool.max_per_client, pool.recycle) == (
        2,
        10,
        2,
        None,
        False,
    )
    # scenario 53: min 2, warm 1, nothing busy: 2 workers (Go would keep min + warm = 3)
    assert node.Pool(min=2, max=4, warm=1).target(0) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min": -1},
        {"max": 0},
        {"min": 3, "max": 2},
        {"warm": -1},
        {"min": 1.5},
        {"max_per_client": 0},
        {"max_per_client": True},
    ],
)
def test_bad_pool(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="Pool"):
        node.Pool(**kwargs)  # type: ignore[arg-type]


def test_schemas_build_and_verify() -> None:
    for schema, states in (
        (node.SUPERVISOR_SCHEMA, node.SupervisorStates),
        (node.WORKER_SCHEMA, node.WorkerStates),
        (node.CLIENT_SCHEMA, node.ClientStates),
    ):
        mach = am.Machine(schema, states=states)  # verify_states: the same names
        assert mach.state_names == states.names()


def test_worker_work_status_is_exclusive() -> None:
    mach = am.Machine(node.WORKER_SCHEMA)
    mach.add(["Start", "LocalRpcReady", "PublicRpcReady"])
    mach.add1("Ready")
    assert mach.is1("Idle")
    for state in ("WorkRequested", "Working", "WorkReady"):
        mach.add1(state)
        assert [s for s in node.WORK_STATUS if mach.is1(s)] == [state]
    mach.remove1("Ready")
    assert not mach.any1(*node.WORK_STATUS)


def test_supervisor_pool_status_relations() -> None:
    mach = am.Machine(node.SUPERVISOR_SCHEMA)
    mach.add1("Start")
    assert mach.is1("PoolStarting")
    mach.add1("PublicRpcReady")
    mach.add1("PoolReady")
    assert not mach.is1("PoolStarting") and mach.is1("Ready")
    mach.remove1("PoolReady")
    assert not mach.is1("Ready")
    mach.add1("NormalizingPool")
    mach.add1("PoolNormalized")
    assert not mach.is1("NormalizingPool")


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("no spaces", SQUARER, node.WORKER_SCHEMA), {}, ValueError, "kind"),
        (("sq", [], node.WORKER_SCHEMA), {}, ValueError, "worker_cmd"),
        (("sq", "python w.py", node.WORKER_SCHEMA), {}, ValueError, "worker_cmd"),
        (("sq", SQUARER, {"Foo": {}}), {}, am.SchemaError, "WORKER_SCHEMA"),
        (("sq", SQUARER, {"Foo": {"require": ["Nope"]}}), {}, am.SchemaError, "Nope"),
        (("sq", SQUARER, node.WORKER_SCHEMA), {"heartbeat": 0}, ValueError, "heartbeat"),
        (("sq", SQUARER, node.WORKER_SCHEMA), {"pool": "big"}, ValueError, "Pool"),
        (("sq", SQUARER, node.WORKER_SCHEMA), {"transport": "udp"}, ValueError, "transport"),
        (("sq", SQUARER, node.WORKER_SCHEMA), {"worker_url": "http://x"}, ValueError, "scheme"),
        (("sq", SQUARER, node.WORKER_SCHEMA), {"normalize_rounds": 0}, ValueError, "rounds"),
    ],
)
def test_bad_supervisor_arguments(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        node.Supervisor(*args, **kwargs)  # type: ignore[arg-type]


async def test_bad_public_url_and_running_twice() -> None:
    sup = node.Supervisor("sq", SQUARER, node.WORKER_SCHEMA, pool=node.Pool(min=0, warm=0))
    with pytest.raises(ValueError, match="scheme"):
        sup.run("http://127.0.0.1:0")
    with pytest.raises(ValueError, match="wss"):
        sup.run("wss://127.0.0.1:0")
    with pytest.raises(node.NodeError, match="not running"):
        _ = sup.url
    async with sup.run("tcp://127.0.0.1:0"):
        await sup.wait_ready(timeout=5)  # min 0: ready with no worker at all
        assert sup.workers == []
        with pytest.raises(node.NodeError, match="runs only once"):
            sup.run("tcp://127.0.0.1:0")
    with pytest.raises(node.NodeError, match="not running"):
        _ = sup.url
    with pytest.raises(node.NodeError, match="runs only once"):
        sup.run("tcp://127.0.0.1:0")


async def test_port_in_use_is_an_os_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        sup = node.Supervisor("sq", SQUARER, node.WORKER_SCHEMA)
        with pytest.raises(BaseException) as info:
            async with sup.run(f"tcp://127.0.0.1:{port}"):
                pass  # pragma: no cover
        assert (
            info.group_contains(OSError)
            if isinstance(info.value, BaseExceptionGroup)
            else isinstance(info.value, OSError)
        )


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (([], "sq", node.WORKER_SCHEMA), {}, ValueError, "empty"),
        (("bogus", "sq", node.WORKER_SCHEMA), {}, ValueError, "scheme"),
        (("tcp://127.0.0.1:1", "s q", node.WORKER_SCHEMA), {}, ValueError, "kind"),
        (("tcp://127.0.0.1:1", "sq", "schema"), {}, am.SchemaError, "mapping"),
        (("tcp://127.0.0.1:1", "sq", node.WORKER_SCHEMA), {"id": "a b"}, ValueError, "id"),
        (("tcp://127.0.0.1:1", "sq", node.WORKER_SCHEMA), {"heartbeat": -1}, ValueError, "heart"),
    ],
)
async def test_bad_client_arguments(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        async with node.connect(*args, **kwargs):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_consumer_must_take_payloads() -> None:
    async with am.open_machine({"Foo": {}}, id="c") as bad:
        with pytest.raises(am.SchemaError, match="ServerPayload"):
            async with node.connect("tcp://127.0.0.1:1", "sq", node.WORKER_SCHEMA, consumer=bad):
                pass  # pragma: no cover


async def test_no_supervisor_reachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    async with node.connect(
        dead, "sq", node.WORKER_SCHEMA, super_retry=0.2, blacklist=0.2, connect_timeout=0.5
    ) as nc:
        with trio.fail_after(5):
            with pytest.raises(node.NoWorkerError) as info:
                await nc.request_worker(timeout=0.8)
        assert info.value.reason == "no_supervisor"
        assert nc.mach.tick("ErrSupervisor") >= 1
        assert dead in nc.blacklisted
        assert not nc.mach.is1("WorkerRequested")


def test_offer_from_payload() -> None:
    good = {"worker_id": "w-1", "addr": "tcp://127.0.0.1:5", "token": "t" * 20, "req": 3}
    offer = node.WorkerOffer.from_payload(good)
    assert (offer.worker_id, offer.req) == ("w-1", 3)
    assert "t" * 20 not in repr(offer)  # the token never shows in reprs
    for bad in (
        None,
        {},
        {**good, "addr": "nope"},
        {**good, "token": ""},
        {**good, "worker_id": 1},
    ):
        with pytest.raises(ValueError):
            node.WorkerOffer.from_payload(bad)


def test_exports_have_docstrings() -> None:
    import inspect

    for name in node.__all__:
        obj = getattr(node, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
    assert sys.modules["trio_am.node"].__doc__
