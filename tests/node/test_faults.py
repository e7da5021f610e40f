"""Faults: failed health checks (scenario 57), a worker that dies under its client,
and a worker link that does not resume (reassignment, arpc.md D2)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import trio
import trio.testing

import trio_am as am
from trio_am import node

from .conftest import children_of, client_options, open_inbox, running, wait_payload, wait_until


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def _keep(self, e: am.Event) -> None:
        self.seen.append((e.name.split("_")[0], dict(e.args)))

    ErrWorker_state = _keep
    KillWorker_state = _keep
    WorkerGone_state = _keep
    Heartbeat_state = _keep

    def of(self, state: str, worker_id: str | None = None) -> list[dict[str, Any]]:
        return [
            a
            for n, a in self.seen
            if n == state and (worker_id is None or a.get("worker_id") == worker_id)
        ]


async def test_failed_health_checks() -> None:
    """Scenario 57: a stopped worker gets ErrWorker for each heartbeat whose 3 checks
    failed; the 4th recorded error adds KillWorker, the process is terminated, and the
    pool is back to min ready workers."""
    ev = Events()
    async with running(
        node.Pool(min=2, max=3, warm=0), heartbeat=0.5, healthcheck_timeout=0.15
    ) as sup:
        sup.mach.bind_handlers(ev)
        await sup.wait_ready(timeout=10)
        victim = sup.workers[0]
        healthy = sup.workers[1]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGSTOP)
        with trio.fail_after(20):
            while not ev.of("KillWorker", victim.id):
                await sup.mach.when_next_active("KillWorker")
        errs = ev.of("ErrWorker", victim.id)
        assert len(errs) == 4
        assert all(isinstance(a["err"], node.WorkerHealthError) for a in errs)
        # one error per heartbeat: the heartbeats before the kill
        kill_at = ev.seen.index(("KillWorker", ev.of("KillWorker", victim.id)[0]))
        beats = [i for i, (n, _) in enumerate(ev.seen[:kill_at]) if n == "Heartbeat"]
        assert len(beats) >= 4
        assert not ev.of("ErrWorker", healthy.id)
        with trio.fail_after(10):
            while not ev.of("WorkerGone", victim.id):
                await sup.mach.when_next_active("WorkerGone")
        gone = ev.of("WorkerGone", victim.id)[0]
        assert gone["reason"] == "4 errors recorded"
        assert gone["exit_code"] == -signal.SIGTERM  # SIGCONT let the stopped worker die
        assert victim.pid not in children_of(os.getpid())
        await wait_until(lambda: len([w for w in sup.workers if w.status == "idle"]) == 2)
        assert sup.mach.is1("PoolReady")


async def test_worker_death_fails_pending_calls_and_reassigns() -> None:
    """The worker of a client dies with a call in flight: the call fails with
    OutcomeUnknownError, the client adds ErrWorker, gets another worker
    (WorkerReassigned), and the re-submitted work completes there."""
    async with running(node.Pool(min=2, max=3, warm=1)) as sup, open_inbox() as (inbox, got):
        await sup.wait_ready(timeout=10)
        async with node.connect(
            sup.url, "squarer", node.WORKER_SCHEMA, consumer=inbox, **client_options()
        ) as nc:
            first = await nc.request_worker()
            old_id = nc.worker_id
            pid = next(w.pid for w in sup.workers if w.id == old_id)
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)  # it will not answer what is sent now
            outcome: list[BaseException] = []

            async def submit() -> None:
                try:
                    await first.add1_remote("WorkRequested", {"input": 4})
                except am.rpc.ConnectionLostError as exc:
                    outcome.append(exc)

            reassigned = nc.mach.when_ticks("WorkerReassigned", 1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit)
                await trio.testing.wait_all_tasks_blocked()
                os.kill(pid, signal.SIGKILL)
            assert len(outcome) == 1 and isinstance(outcome[0], am.rpc.OutcomeUnknownError)
            assert isinstance(nc.mach.err, node.WorkerLostError)
            assert nc.mach.err.worker_id == old_id
            with trio.fail_after(10):
                await reassigned
            assert nc.worker_id != old_id
            assert nc.mach.is1("Ready")
            worker = nc.worker
            assert worker is not None and worker is not first
            await worker.add1_remote("WorkRequested", {"input": 4})
            assert (await wait_payload(inbox, got, "result")).data == 16
            await wait_until(lambda: old_id not in {w.id for w in sup.workers})
            gone = await wait_payload(inbox, got, "node.worker_gone")
            assert gone.data["worker_id"] == old_id
            assert gone.data["exit_code"] == -signal.SIGKILL


async def test_link_that_does_not_resume_is_a_lost_worker() -> None:
    """The worker stops answering but stays alive: after resume_timeout the client
    gives it up, tells the supervisor (WorkerIssues) and moves to another worker; the
    worker it gave up no longer counts for max_per_client."""
    async with running(node.Pool(min=2, max=3, warm=1, max_per_client=1)) as sup:
        await sup.wait_ready(timeout=10)
        opts = client_options(heartbeat=0.1, resume_timeout=0.5)
        async with node.connect(sup.url, "squarer", node.WORKER_SCHEMA, **opts) as nc:
            await nc.request_worker()
            old_id = nc.worker_id
            pid = next(w.pid for w in sup.workers if w.id == old_id)
            assert pid is not None
            reassigned = nc.mach.when_ticks("WorkerReassigned", 1)
            os.kill(pid, signal.SIGSTOP)
            with trio.fail_after(10):
                await reassigned
            assert nc.worker_id != old_id
            err = nc.mach.err
            assert isinstance(err, node.WorkerLostError) and err.worker_id == old_id
            assert "did not resume" in str(err)
            # the supervisor heard about it: an error against the stopped worker
            await wait_until(lambda: any(w.id == old_id and w.errors for w in sup.workers))
            os.kill(pid, signal.SIGCONT)


async def test_no_reassign_without_auto_reassign() -> None:
    async with running(node.Pool(min=2, max=3, warm=1)) as sup:
        await sup.wait_ready(timeout=10)
        async with node.connect(
            sup.url, "squarer", node.WORKER_SCHEMA, auto_reassign=False, **client_options()
        ) as nc:
            await nc.request_worker()
            pid = next(w.pid for w in sup.workers if w.id == nc.worker_id)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            with trio.fail_after(10):
                await nc.mach.when1("WorkerDisconnected")
            assert nc.worker is None and not nc.mach.is1("Ready")
            assert isinstance(nc.mach.err, node.WorkerLostError)
            assert nc.mach.tick("WorkerReassigned") == 0
            # asking again works
            await nc.request_worker()
            assert nc.mach.is1("Ready")


async def test_killed_supervisor_process_takes_its_workers_along() -> None:
    """A supervisor killed abruptly (SIGKILL, no cleanup) leaves no workers behind:
    each one ends when its socketpair closes."""
    code = (
        "import sys, trio\n"
        "from trio_am import node\n"
        "async def main():\n"
        "    sup = node.Supervisor('squarer', [sys.executable, '-m', 'tests.node.squarer_worker'],"
        " node.WORKER_SCHEMA, pool=node.Pool(min=2, max=2, warm=0))\n"
        "    async with sup.run('tcp://127.0.0.1:0'):\n"
        "        await sup.wait_ready(timeout=20)\n"
        "        print('READY', flush=True)\n"
        "        await trio.sleep_forever()\n"
        "trio.run(main)\n"
    )
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", code], stdout=-1, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        with trio.fail_after(20):
            buf = b""
            while b"READY" not in buf:
                chunk = await proc.stdout.receive_some(1024)
                assert chunk, "the supervisor ended early"
                buf += chunk
        workers = children_of(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await wait_until(lambda: not any(os.path.exists(f"/proc/{p}/stat") for p in workers))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()
