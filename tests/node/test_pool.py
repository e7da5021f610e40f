"""The supervisor's pool: start (scenario 53), replacement of dead workers, recycling,
and workers that cannot start. Real processes, real clock; bounds are upper limits."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pytest
import trio

import trio_am as am
from trio_am import node

from .conftest import SQUARER, children_of, client_options, open_inbox, running, wait_until


class Recorder:
    """Handlers that keep the args of the supervisor's event states."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _keep(self, e: am.Event) -> None:
        self.events.append((e.name.split("_")[0], dict(e.args)))

    ErrWorker_state = _keep
    ErrPool_state = _keep
    KillWorker_state = _keep
    WorkerGone_state = _keep
    WorkerReady_state = _keep

    def of(self, state: str) -> list[dict[str, Any]]:
        return [args for name, args in self.events if name == state]


async def test_pool_start() -> None:
    """Scenario 53: PoolReady within 10 s, exactly 2 worker processes (children of the
    supervisor), WorkersAvailable active; nothing left once it stops."""
    before = set(children_of(os.getpid()))
    async with running(node.Pool(min=2, max=4, warm=1)) as sup:
        with trio.fail_after(10):
            await sup.mach.when1("PoolReady")
            await sup.mach.when1("PoolNormalized")
        kids = set(children_of(os.getpid())) - before
        assert len(kids) == 2
        assert {w.pid for w in sup.workers} == kids
        assert all(w.status == "idle" and w.addr for w in sup.workers)
        assert sup.mach.is1("WorkersAvailable")
        assert sup.mach.is1("Ready")
    assert set(children_of(os.getpid())) == before
    assert sup.mach.disposed


async def test_dead_worker_is_replaced_with_exit_code_and_stderr() -> None:
    """A worker killed from outside: WorkerGone carries its exit code and stderr tail,
    ErrWorker a WorkerExitError, and the pool is normalised back to min."""
    rec = Recorder()
    async with running(node.Pool(min=2, max=3, warm=0)) as sup:
        sup.mach.bind_handlers(rec)
        await sup.wait_ready(timeout=10)
        victim = sup.workers[0]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        with trio.fail_after(10):
            while not rec.of("WorkerGone"):
                await sup.mach.when_next_active("WorkerGone")
        gone = rec.of("WorkerGone")[0]
        assert gone["worker_id"] == victim.id
        assert gone["exit_code"] == -signal.SIGKILL
        assert gone["reason"] == "exited"
        errs = [a["err"] for a in rec.of("ErrWorker")]
        assert any(isinstance(e, node.WorkerExitError) and e.exit_code == -9 for e in errs)
        await wait_until(lambda: len([w for w in sup.workers if w.status == "idle"]) == 2)
        assert victim.id not in {w.id for w in sup.workers}
        assert sup.mach.is1("PoolReady")


async def test_worker_that_crashes_gives_worker_gone_and_err_pool() -> None:
    rec = Recorder()
    crash = [*SQUARER, "--crash"]
    async with running(node.Pool(min=1, max=2, warm=0), cmd=crash, normalize_rounds=2) as sup:
        sup.mach.bind_handlers(rec)
        try:
            await sup.wait_ready(timeout=20)
        except node.PoolError as exc:
            assert "WorkerExitError" in str(exc)
        else:  # pragma: no cover - the worker always crashes
            raise AssertionError("the pool cannot be ready")
        assert sup.mach.is1("ErrPool")
        gone = rec.of("WorkerGone")
        assert len(gone) >= 2  # one per round
        assert gone[0]["exit_code"] == 3
        assert "crashing on purpose" in gone[0]["stderr"]
        assert isinstance(sup.mach.err, node.PoolError)
    assert not children_of(os.getpid())


async def test_missing_executable_is_a_spawn_error() -> None:
    rec = Recorder()
    async with running(
        node.Pool(min=1, max=1, warm=0), cmd=["/nonexistent/worker-binary"], normalize_rounds=1
    ) as sup:
        sup.mach.bind_handlers(rec)
        try:
            await sup.wait_ready(timeout=10)
        except node.PoolError as exc:
            assert "cannot start" in str(exc)
        else:  # pragma: no cover
            raise AssertionError("no worker can start")
        errs = [a["err"] for a in rec.of("ErrWorker")]
        assert errs and isinstance(errs[0], node.SpawnError)
        assert rec.of("WorkerGone")[0]["reason"] == "spawn failed"


async def test_worker_of_another_kind_is_refused() -> None:
    """The worker checks the kind itself: it exits with a message, nothing starts."""
    rec = Recorder()
    other = [*SQUARER, "--kind", "cuber"]
    async with running(node.Pool(min=1, max=1, warm=0), cmd=other, normalize_rounds=1) as sup:
        sup.mach.bind_handlers(rec)
        try:
            await sup.wait_ready(timeout=20)
        except node.PoolError:
            pass
        else:  # pragma: no cover
            raise AssertionError("a worker of another kind cannot serve")
        gone = rec.of("WorkerGone")[0]
        assert gone["exit_code"] == 2
        assert "kind 'cuber'" in gone["stderr"]


async def test_recycle_replaces_the_worker_its_client_left() -> None:
    rec = Recorder()
    async with running(node.Pool(min=1, max=2, warm=0, recycle=True)) as sup:
        sup.mach.bind_handlers(rec)
        await sup.wait_ready(timeout=10)
        async with node.connect(sup.url, "squarer", node.WORKER_SCHEMA, **client_options()) as nc:
            await nc.request_worker()
            used = nc.worker_id
            used_pid = next(w.pid for w in sup.workers if w.id == used)
            assert [w.status for w in sup.workers] == ["busy"]
            await nc.release_worker()
            with trio.fail_after(10):
                while not rec.of("WorkerGone"):
                    await sup.mach.when_next_active("WorkerGone")
            gone = rec.of("WorkerGone")[0]
            assert (gone["worker_id"], gone["reason"]) == (used, "recycle")
            await wait_until(lambda: [w.status for w in sup.workers] == ["idle"])
            assert sup.workers[0].id != used
            assert used_pid not in children_of(os.getpid())
            # the fresh worker serves the same client again
            w = await nc.request_worker()
            assert nc.worker_id == sup.workers[0].id
            assert w.is1("Ready")


async def test_without_recycle_a_released_worker_goes_back_to_the_pool() -> None:
    async with running(node.Pool(min=1, max=2, warm=0)) as sup:
        await sup.wait_ready(timeout=10)
        async with node.connect(sup.url, "squarer", node.WORKER_SCHEMA, **client_options()) as nc:
            await nc.request_worker()
            first = nc.worker_id
            await nc.release_worker()
            await wait_until(lambda: [w.status for w in sup.workers] == ["idle"])
            await nc.request_worker()
            assert nc.worker_id == first


async def test_stop_kills_workers_that_ignore_sigterm_and_their_children() -> None:
    """Workers that never get ready, ignore SIGTERM and started a child of their own:
    leaving the block still ends every process (the no_orphans fixture checks the
    grandchildren too)."""
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    before = set(children_of(os.getpid()))
    with trio.fail_after(15):
        async with running(
            node.Pool(min=2, max=2, warm=0),
            cmd=[sys.executable, "-c", code],
            term_timeout=0.3,
            conn_timeout=30.0,
        ):
            await wait_until(lambda: len(set(children_of(os.getpid())) - before) == 2)
    assert set(children_of(os.getpid())) == before


async def test_cancelling_a_starting_supervisor_leaves_nothing() -> None:
    with trio.move_on_after(0.3):
        async with running(node.Pool(min=2, max=2, warm=0)):
            await trio.sleep_forever()
    assert not children_of(os.getpid())


async def test_consumer_of_a_node_client_gets_the_payloads() -> None:
    async with running(node.Pool(min=1, max=2, warm=0)) as sup, open_inbox() as (inbox, got):
        await sup.wait_ready(timeout=10)
        async with node.connect(
            sup.url, "squarer", node.WORKER_SCHEMA, consumer=inbox, **client_options()
        ) as nc:
            await nc.request_worker()
            assert [p.name for p in got.payloads] == ["node.worker"]


async def test_a_failed_pool_retries_on_the_heartbeat_not_in_a_loop() -> None:
    """After ErrPool, what failed during the pass does not start the next pass at once:
    nothing is forked until the next heartbeat, which tries again."""
    rec = Recorder()
    crash = [*SQUARER, "--crash"]
    async with running(
        node.Pool(min=1, max=1, warm=0), cmd=crash, normalize_rounds=1, heartbeat=0.5
    ) as sup:
        sup.mach.bind_handlers(rec)
        with pytest.raises(node.PoolError):
            await sup.wait_ready(timeout=20)
        forks = sup.mach.tick("ForkWorker")
        with trio.fail_after(10):
            await sup.mach.when_next_active("Heartbeat")
        assert sup.mach.tick("ForkWorker") == forks
        with trio.fail_after(10):
            await sup.mach.when_ticks("ForkWorker", 1)  # the heartbeat's pass
