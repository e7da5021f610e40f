"""Waiting for states: ``when*`` subscriptions, the wait helpers, and Trio timeouts.

Run it with ``python examples/subscriptions.py``.

Every ``mach.when*()`` call *registers at call time* and returns an ``am.Waiter``;
``await w`` returns once the condition held (at once if it already holds). Because the
waiter exists before the change happens, it cannot miss it, even when the state is
already gone again by the time you await.

There is no ``timeout=`` on waiters: use Trio scopes (``trio.move_on_after``,
``trio.fail_after``) or the helpers ``am.wait_for_all`` / ``am.wait_for_err_all``, whose
``timeout`` raises ``am.TimeoutError`` (a ``trio.TooSlowError`` too).

The machine is a job worker: it connects, then receives ``Job`` activations (a *multi*
state, one activation per job, the job id in the args) from a forked producer task.
"""

from __future__ import annotations

import trio

import trio_am as am

# The schema written with am.State values (plain dicts work as well, see basic.py).
SCHEMA: dict[str, am.State] = {
    "Start": am.State(),
    "Connected": am.State(require=["Start"]),
    "Ready": am.State(require=["Connected"]),
    "Job": am.State(multi=True, require=["Connected"]),
    "Done": am.State(),
}


async def produce_jobs(mach: am.Machine, ids: range, delay: float) -> None:
    """Add one ``Job`` every ``delay`` seconds (runs as forked work)."""
    for job_id in ids:
        await trio.sleep(delay)
        print(f"  producer: Job id={job_id}")
        mach.add1("Job", {"id": job_id})


async def fail_soon(mach: am.Machine) -> None:
    await trio.sleep(0.02)
    print("  worker: the disk is full")
    mach.add_err(OSError("disk full"))


async def disconnect_soon(mach: am.Machine) -> None:
    await trio.sleep(0.02)
    print("  network: connection lost")
    mach.remove1("Connected")


async def main() -> None:
    async with am.open_machine(SCHEMA, id="worker") as mach:
        mach.add(["Start", "Connected"])

        print("# 1. Registered before the change, a waiter cannot miss it")
        ready = mach.when1("Ready")  # registered now
        mach.add1("Ready")
        mach.remove1("Ready")  # Ready is already gone again...
        await ready  # ...yet the waiter saw it
        print(f"when1(Ready) resolved; Ready active now: {mach.is1('Ready')}")
        # a condition that already holds resolves at once
        await mach.when1("Connected")
        print("when1(Connected) resolved at once (already active)")

        print("\n# 2. when_args: wait for the Job with id=3")
        w_args = mach.when_args("Job", {"id": 3})
        mach.fork(produce_jobs, mach, range(1, 5), 0.02)
        await w_args
        print(f"when_args(Job, id=3) resolved, Job tick {mach.tick('Job')}")

        print("\n# 3. when_time: wait until Job's tick reaches a value")
        target = mach.tick("Job") + 2  # one more activation (multi: +2 each)
        await mach.when_time(["Job"], [target])
        print(f"when_time(Job >= {target}) resolved")

        print("\n# 4. when_query: any predicate over the whole clock")
        mach.fork(produce_jobs, mach, range(5, 8), 0.02)
        await mach.when_query(lambda clock: am.helpers.activations(clock["Job"]) >= 7)
        print(f"when_query(7 jobs) resolved: {am.helpers.activations(mach.tick('Job'))} jobs")

        print("\n# 5. wait_for_all: several waiters, one deadline")
        w_two_more = mach.when_ticks("Job", 4)  # two more activations (4 ticks)
        w_nine = mach.when_query(lambda clock: am.helpers.activations(clock["Job"]) >= 9)
        mach.fork(produce_jobs, mach, range(8, 10), 0.02)
        await am.wait_for_all(w_two_more, w_nine, timeout=1)
        print("wait_for_all resolved")
        try:
            await am.wait_for_all(mach.when1("Done"), timeout=0.05)
        except am.TimeoutError as exc:
            print(f"wait_for_all(Done) failed: {exc}")

        print("\n# 6. wait_for_err_all fails as soon as Exception activates")
        mach.fork(fail_soon, mach)
        try:
            await am.wait_for_err_all(mach, mach.when1("Done"), timeout=1)
        except am.ExceptionActiveError as exc:
            print(f"wait_for_err_all failed: {exc} (err={exc.err!r})")
        mach.remove1("Exception")

        print("\n# 7. when_not1, and a Trio scope as the deadline")
        mach.fork(disconnect_soon, mach)
        with trio.fail_after(1):
            await mach.when_not1("Connected")
        print(f"when_not1(Connected) resolved: {mach}")
        with trio.move_on_after(0.05) as scope:
            await mach.when1("Done")  # nobody adds Done
        print(f"move_on_after: gave up waiting for Done: {scope.cancelled_caught}")

        # a waiter still pending when the machine is disposed
        pending = mach.when1("Done")

    print("\n# 8. Leaving open_machine disposes the machine")
    try:
        await pending
    except am.MachineDisposedError as exc:
        print(f"pending waiter: MachineDisposedError: {exc}")


if __name__ == "__main__":
    trio.run(main)
