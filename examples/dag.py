"""A dependency graph (DAG) of build steps, expressed with relations.

Run it with ``python examples/dag.py``. Options: ``--fail STEP=N`` makes a step fail
its first N attempts (default: ``Test=1``; try ``--fail Deps=3`` to see the build give
up), ``--real-clock`` waits in real time instead of on a virtual clock.

What it teaches:

* **The graph is the schema.** ``STEPS`` lists each step with its duration and the steps
  it depends on; ``make_schema`` turns it into states. Each step ``S`` has a running state
  ``S`` and a done state ``SDone``:

  - ``S`` is an *auto* state that ``require``\\ s ``Run`` and the done state of each
    dependency. Nobody adds it: the machine does, as soon as its requirements hold, so a
    step starts by itself when its last dependency is done, and independent steps start
    together and run concurrently.
  - ``SDone`` ``remove``\\ s ``S``: finishing a step ends it (and an active ``SDone``
    keeps the auto state from starting again).
  - ``after``: when several steps start in the same transition, their handlers run in
    the table's order (``after`` only orders handlers, it never blocks anything).
  - ``add``: ``Test`` implies ``Coverage``, which requires ``Test``, so ``Coverage``
    comes and goes with every attempt of ``Test``.

* **Steps run as forked Trio work.** ``S_state`` forks the step with ``e.fork``: the
  work lives as long as this activation of ``S``.
* **Failure and retry through states.** A step that raises becomes the ``Exception``
  state (the fork never crashes the nursery). ``Exception_state`` adds ``SRetry``, which
  removes ``S`` and waits (exponential backoff); when ``SRetry`` ends, nothing blocks the
  auto state ``S`` any more and the machine starts it again. The attempt number comes
  from the clock: ``activations(tick(S))``. After ``MAX_ATTEMPTS`` the build adds
  ``Failed``, which removes ``Run``: every state that requires ``Run`` ends, and Trio
  cancels the steps still running.

Virtual time: the steps' work is simulated with ``trio.sleep``, and by default the
program runs on Trio's ``MockClock`` (``autojump_threshold=0``: when every task waits,
the clock jumps to the next deadline). So the run is instant, the printed times are
exact, and the output is the same on every run. ``--real-clock`` takes about 1.7 s.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import trio
import trio.testing

import trio_am as am

#: step -> (seconds of work, the steps it depends on). Listed in a topological order:
#: every dependency comes before the steps that need it.
STEPS: dict[str, tuple[float, list[str]]] = {
    "Fetch": (0.10, []),
    "Deps": (0.30, ["Fetch"]),
    "Audit": (1.50, ["Fetch"]),  # a slow security scan, running beside everything else
    "Compile": (0.40, ["Deps"]),
    "Docs": (0.15, ["Deps"]),
    "Test": (0.25, ["Compile"]),
    "Package": (0.05, ["Test", "Docs", "Audit"]),
}
MAX_ATTEMPTS = 3
BACKOFF = 0.1  # seconds before the 2nd attempt; doubles for every later one

Handler = Callable[[am.Event], None]


def make_schema(steps: dict[str, tuple[float, list[str]]]) -> dict[str, am.State]:
    """Build the machine's schema from the step table.

    Raises:
        ValueError: a step depends on one that is not listed before it (this also rules
            out cycles).
    """
    schema: dict[str, am.State] = {"Run": am.State()}
    earlier: list[str] = []
    for step, (_, deps) in steps.items():
        for dep in deps:
            if dep not in earlier:
                raise ValueError(f"step {step} depends on {dep}, which is not listed before it")
        schema[step] = am.State(
            auto=True,  # started by the machine once its requirements hold
            require=["Run", *(f"{dep}Done" for dep in deps)],
            remove=[f"{step}Done"],
            after=list(earlier),  # handlers of steps starting together: table order
            add=["Coverage"] if step == "Test" else [],  # Test implies Coverage
        )
        schema[f"{step}Done"] = am.State(remove=[step])
        # waiting to retry: blocks the auto state until the backoff is over
        schema[f"{step}Retry"] = am.State(require=["Run"], remove=[step])
        earlier.append(step)
    if "Test" in steps:
        schema["Coverage"] = am.State(require=["Test"])
    # the build is done when every step that no other step needs is done
    needed = {dep for _, deps in steps.values() for dep in deps}
    schema["Done"] = am.State(auto=True, require=[f"{s}Done" for s in steps if s not in needed])
    schema["Failed"] = am.State(remove=["Run"])
    return schema


class StepError(Exception):
    """A step's work failed (simulated)."""

    def __init__(self, step: str, attempt: int) -> None:
        super().__init__(f"{step} failed on attempt {attempt}")
        self.step = step


class Build:
    """Handlers of the ``build`` machine: the fixed ones are methods, found by name
    (``Done_state``, ...); the per-step ones are made by :meth:`step_handlers`."""

    def __init__(self, steps: dict[str, tuple[float, list[str]]], fails: dict[str, int]) -> None:
        self.steps = steps
        self.fails = fails  # step -> how many attempts fail
        self.t0 = trio.current_time()
        self.order: list[str] = []  # "Step" or "Step#2" for a second attempt, ...
        self.events: list[tuple[str, str]] = []  # ("start" | "done", step), in order
        self.final = ""  # the active states at the end

    def step_handlers(self) -> dict[str, Handler]:
        """Final handlers for every step, for ``mach.bind_handler_maps``."""
        final: dict[str, Handler] = {}
        for step in self.steps:
            final[f"{step}_state"] = self.make_start(step)
            final[f"{step}Done_state"] = self.make_done(step)
            final[f"{step}Retry_state"] = self.make_retry(step)
        if "Test" in self.steps:
            final["Coverage_state"] = self.coverage_on
            final["Coverage_end"] = self.coverage_off
        return final

    def now(self) -> str:
        return f"t={trio.current_time() - self.t0:.2f}"

    # --- running a step -----------------------------------------------------------------
    def make_start(self, step: str) -> Handler:
        def start(e: am.Event) -> None:
            # the clock counts the attempts: every activation of the step adds 2 ticks
            attempt = am.helpers.activations(e.machine.tick(step))
            self.order.append(step if attempt == 1 else f"{step}#{attempt}")
            self.events.append(("start", step))
            print(f"{self.now()} start {step}" + (f" (attempt {attempt})" if attempt > 1 else ""))
            e.fork(self.work, e.machine, step, attempt)

        return start

    async def work(self, mach: am.Machine, step: str, attempt: int) -> None:
        try:
            await trio.sleep(self.steps[step][0])  # stands for the real work
        except trio.Cancelled:
            print(f"{self.now()} {step}: cancelled (its state ended)")
            raise  # always let Cancelled through
        if attempt <= self.fails.get(step, 0):
            # raising from forked work: the machine adds Exception with this error
            raise StepError(step, attempt)
        mach.add1(f"{step}Done")

    def make_done(self, step: str) -> Handler:
        def done(e: am.Event) -> None:
            self.events.append(("done", step))
            print(f"{self.now()} done  {step}")

        return done

    def coverage_on(self, e: am.Event) -> None:
        print(f"{self.now()}   (Coverage on, implied by Test)")

    def coverage_off(self, e: am.Event) -> None:
        print(f"{self.now()}   (Coverage off: it requires Test)")

    # --- failure and retry --------------------------------------------------------------
    def Exception_state(self, e: am.Event) -> None:
        err = e.args["err"]
        mach = e.machine
        if not isinstance(err, StepError):  # a bug, not a step failure: stop
            mach.add1("Failed", {"reason": repr(err)})
            return
        attempt = am.helpers.activations(mach.tick(err.step))
        if attempt >= MAX_ATTEMPTS:
            print(f"{self.now()} {err} -> giving up")
            mach.add1("Failed", {"reason": str(err)})
            return
        delay = BACKOFF * 2 ** (attempt - 1)
        print(f"{self.now()} {err} -> retry in {delay:.2f} s")
        mach.add1(f"{err.step}Retry", {"delay": delay})  # queued: runs right after

    def make_retry(self, step: str) -> Handler:
        def retry(e: am.Event) -> None:
            # bound to this activation of SRetry: Failed (which removes Run) cancels it
            e.fork(self.backoff, e.machine, step, e.args["delay"])

        return retry

    async def backoff(self, mach: am.Machine, step: str, delay: float) -> None:
        await trio.sleep(delay)
        # The error is handled. Removing SRetry unblocks the auto state: the machine
        # starts the step again in the same call.
        mach.remove([f"{step}Retry", "Exception"])

    # --- the end ------------------------------------------------------------------------
    def Done_state(self, e: am.Event) -> None:
        print(f"{self.now()} Done: every step finished")

    def Failed_state(self, e: am.Event) -> None:
        print(f"{self.now()} Failed: {e.args['reason']}; Run removed")


async def main(steps: dict[str, tuple[float, list[str]]], fails: dict[str, int]) -> Build:
    """Run the build once; returns its handlers, which recorded what happened."""
    handlers = Build(steps, fails)
    async with am.open_machine(make_schema(steps), id="build", handlers=handlers) as mach:
        # the generated handlers: a second binding, from a dict of names
        mach.bind_handler_maps(final=handlers.step_handlers(), id="steps")
        finished = [mach.when1("Done"), mach.when1("Failed")]
        mach.add1("Run")  # the steps without dependencies start in this call
        await am.wait_for_any(*finished)
        handlers.final = mach.string()
        ticks = " ".join(f"{s}:{t}" for s, t in mach.clock(list(steps)).items())
        errors = am.helpers.activations(mach.tick("Exception"))
    # Leaving the block disposed the machine and waited for every forked task, so
    # nothing a step prints can come after this point.
    print(f"run order: {', '.join(handlers.order)}")
    print(f"final: {handlers.final}")
    print(f"step ticks: {ticks}")  # 2 per attempt: activated, then ended
    print(f"errors: {errors}")
    return handlers


def parse_fails(values: list[str]) -> dict[str, int]:
    """``["Test=1", "Deps=3"]`` -> ``{"Test": 1, "Deps": 3}``.

    Raises:
        ValueError: not ``STEP=N``, an unknown step or a negative N.
    """
    fails: dict[str, int] = {}
    for value in values:
        step, sep, count = value.partition("=")
        if not sep or step not in STEPS or not count.isdigit():
            raise ValueError(f"--fail {value!r}: expected STEP=N with STEP one of {list(STEPS)}")
        fails[step] = int(count)
    return fails


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A DAG of build steps with trio_am.")
    parser.add_argument(
        "--fail",
        action="append",
        metavar="STEP=N",
        help="make STEP fail its first N attempts (repeatable; default: Test=1)",
    )
    parser.add_argument("--real-clock", action="store_true", help="wait in real time (about 1.7 s)")
    args = parser.parse_args(argv)
    try:
        fails = parse_fails(args.fail if args.fail is not None else ["Test=1"])
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2
    clock = None if args.real_clock else trio.testing.MockClock(autojump_threshold=0)
    trio.run(main, STEPS, fails, clock=clock)


if __name__ == "__main__":
    cli()
