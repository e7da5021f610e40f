"""Fan-out / fan-in: one machine asks four suppliers for a quote at once.

Run it with ``python examples/fan_out_in.py`` (add ``--real-clock`` to wait in real
time; see "Virtual time" below).

What it teaches:

* **Fan-out with one state per job.** Adding ``Batch`` activates ``AskAcme``,
  ``AskBolt``, ``AskCargo`` and ``AskDyn`` in the same transition (the ``add``
  relation). Each ``Ask<Name>_state`` handler forks its request with ``e.fork``, so every
  request lives exactly as long as its own state.
* **Why not one multi state per job?** Re-activating a multi state ends its previous
  activation, and with it the work forked for that activation. Concurrent jobs need a
  state each (or ``mach.fork(fn, state="Batch")``, if they only need to end together).
* **Fan-in as an auto state.** ``AllIn`` is an *auto* state, and every ``Ask<Name>``
  state ``remove``\\ s it. While any request is pending the machine cannot add it; the
  moment the last one ends, the machine adds it by itself.
* **Results through a multi state.** Every reply adds the multi state ``Quote`` with the
  supplier and the price in its args; its tick counts the replies.
* **A slow job is cancelled when its state ends.** ``Dyn`` never answers. A deadline
  forked for the batch removes ``AskDyn``; Trio cancels its request at once. Removing
  ``Batch`` in round 2 cancels every request still in flight (they all require it).
* **Clocks.** Ticks only grow: an odd tick means active, and each activation adds two.
  The clock tells how many times each job ran without any counter of our own.

Virtual time: requests are simulated with ``trio.sleep``. By default the program runs on
Trio's ``MockClock`` with ``autojump_threshold=0``: when every task is waiting, the
clock jumps to the next deadline. The run takes milliseconds, the printed times are
exact and the output is the same on every run. Nothing else changes: with
``--real-clock`` it takes about a second and the times are only approximately the same.
"""

from __future__ import annotations

import argparse
import random

import trio
import trio.testing

import trio_am as am

#: Supplier name -> how long its quote takes, in seconds. Dyn is stuck: it would take a
#: minute, far beyond the deadline.
SUPPLIERS: dict[str, float] = {"Acme": 0.12, "Bolt": 0.05, "Cargo": 0.30, "Dyn": 60.0}
#: How long a batch waits for quotes before it gives up on the missing ones.
DEADLINE = 0.5
SEED = 7  # prices come from a seeded generator: the same every run


def make_schema(suppliers: list[str]) -> dict[str, am.State]:
    """The schema, generated from the list of suppliers (schemas are plain data)."""
    jobs = [f"Ask{name}" for name in suppliers]
    schema: dict[str, am.State] = {
        "Start": am.State(),
        # add: activating Batch activates every job state too, in the same transition
        "Batch": am.State(require=["Start"], add=jobs),
    }
    for job in jobs:
        # require Batch: removing Batch ends every job (and cancels its work);
        # remove AllIn: while this job is pending, AllIn cannot be active
        schema[job] = am.State(require=["Batch"], remove=["AllIn"])
    # one activation per reply; the args carry the supplier and the price
    schema["Quote"] = am.State(multi=True, require=["Batch"])
    # fan-in: added by the machine itself once no job state blocks it
    schema["AllIn"] = am.State(auto=True, require=["Batch"])
    return schema


class Clock:
    """Prints times relative to the start of the program (virtual or real)."""

    def __init__(self) -> None:
        self.t0 = trio.current_time()

    def now(self) -> str:
        return f"t={trio.current_time() - self.t0:.2f}"


class Quotes:
    """Handlers of the ``quotes`` machine, and the results it collects."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.rng = random.Random(SEED)
        self.quotes: dict[str, float] = {}
        self.cancelled: list[tuple[str, float]] = []  # (supplier, seconds waited)
        # set when a job's task has really finished (returned, or unwound after being
        # cancelled): a cancelled task runs its `except` block at its next turn, after
        # the state change, so main() waits for these before it reads `cancelled`
        self.exited: dict[str, trio.Event] = {}

    # --- fan-out ------------------------------------------------------------------------
    def Batch_state(self, e: am.Event) -> None:
        self.quotes = {}
        self.cancelled = []
        # Forked from Batch_state: the deadline lives as long as this batch. If every
        # quote comes in first and the batch is removed, the deadline is cancelled too.
        e.fork(self.deadline, e.machine)

    def start_job(self, e: am.Event, supplier: str) -> None:
        """Common part of the ``Ask<Name>_state`` handlers."""
        price = round(self.rng.uniform(90, 130), 2)  # drawn in handler order: deterministic
        self.exited[supplier] = trio.Event()
        # e.fork: the request is cancelled when this activation of Ask<Name> ends
        e.fork(self.request_quote, e.machine, supplier, price)

    def AskAcme_state(self, e: am.Event) -> None:
        self.start_job(e, "Acme")

    def AskBolt_state(self, e: am.Event) -> None:
        self.start_job(e, "Bolt")

    def AskCargo_state(self, e: am.Event) -> None:
        self.start_job(e, "Cargo")

    def AskDyn_state(self, e: am.Event) -> None:
        self.start_job(e, "Dyn")

    async def request_quote(self, mach: am.Machine, supplier: str, price: float) -> None:
        """The forked work of one job: "call" the supplier, report the quote."""
        started = trio.current_time()
        try:
            await trio.sleep(SUPPLIERS[supplier])  # stands for a network call
            # Report back by mutating the machine. Removing our own state ends this
            # activation; we return right away, so the cancellation never reaches us.
            mach.add1("Quote", {"supplier": supplier, "price": price})
            mach.remove1(f"Ask{supplier}")
        except trio.Cancelled:
            # Ask<Name> ended while we waited: Trio cancelled us. (Several requests
            # can unwind at the same moment, in any order, so main() prints these.)
            self.cancelled.append((supplier, trio.current_time() - started))
            raise  # always let Cancelled through
        finally:
            self.exited[supplier].set()

    async def deadline(self, mach: am.Machine) -> None:
        await trio.sleep(DEADLINE)
        pending = mach.active_states([f"Ask{name}" for name in SUPPLIERS])
        print(f"{self.clock.now()} deadline: giving up on {pending}")
        mach.remove(pending)  # ends those states: Trio cancels their requests

    # --- fan-in -------------------------------------------------------------------------
    def Quote_state(self, e: am.Event) -> None:
        supplier, price = e.args["supplier"], e.args["price"]
        self.quotes[supplier] = price
        ticks = e.machine.tick("Quote")
        print(f"{self.clock.now()} quote from {supplier}: {price:.2f} (Quote tick {ticks})")

    def AllIn_state(self, e: am.Event) -> None:
        # Synchronous: this runs inside the transition that removed the last job state.
        best = min(self.quotes, key=self.quotes.__getitem__, default=None)
        got = f"best: {best} {self.quotes[best]:.2f}" if best else "no quotes"
        print(f"{self.clock.now()} AllIn: {len(self.quotes)} of {len(SUPPLIERS)} quotes, {got}")


def print_cancelled(handlers: Quotes) -> None:
    """One line per cancelled request, sorted by supplier."""
    for supplier, waited in sorted(handlers.cancelled):
        print(f"  {supplier}: request cancelled after {waited:.2f} s (Ask{supplier} ended)")


def job_ticks(mach: am.Machine) -> str:
    """The ticks of the job states, e.g. ``AskAcme:2 AskBolt:2 ...``."""
    return " ".join(f"{s}:{t}" for s, t in mach.clock([f"Ask{n}" for n in SUPPLIERS]).items())


async def main() -> None:
    clock = Clock()
    handlers = Quotes(clock)
    schema = make_schema(list(SUPPLIERS))
    async with am.open_machine(schema, id="quotes", handlers=handlers) as mach:
        mach.add1("Start")

        print("# Round 1: fan out to 4 suppliers; Dyn never answers")
        all_in = mach.when1("AllIn")  # registered before the fan-out: it cannot miss it
        mach.add1("Batch")  # Batch + the 4 job states, in one transition
        print(f"{clock.now()} fan-out: {mach}")
        await all_in
        for done in handlers.exited.values():  # let the cancelled request unwind
            await done.wait()
        print(f"after the fan-in: {mach}")
        print(f"quotes: {handlers.quotes}")
        print_cancelled(handlers)
        print(f"job ticks: {job_ticks(mach)}")  # 2 each: activated once, ended once
        tick = mach.tick("Quote")  # a multi state: +2 per reply while it stays active
        print(f"Quote tick {tick}: {am.helpers.activations(tick)} replies")

        print("\n# Round 2: a new batch, cancelled by hand after the first quote")
        mach.remove1("Batch")  # ends round 1: AllIn (requires Batch) and the deadline go
        first = mach.when_next_active("Quote")  # the first reply of the new batch
        mach.add1("Batch")  # a new activation: the job states are activated again
        print(f"{clock.now()} fan-out: {mach}")
        await first
        print(f"{clock.now()} removing Batch: every job that requires it ends")
        mach.remove1("Batch")
        for done in handlers.exited.values():
            await done.wait()
        print_cancelled(handlers)
        print(f"job ticks: {job_ticks(mach)}")  # 4 each: two activations
        print(f"final: {mach.string_all()}")


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fan-out / fan-in with trio_am.")
    parser.add_argument(
        "--real-clock", action="store_true", help="wait in real time (about a second)"
    )
    args = parser.parse_args(argv)
    # MockClock(autojump_threshold=0): virtual time that jumps whenever all tasks wait
    clock = None if args.real_clock else trio.testing.MockClock(autojump_threshold=0)
    trio.run(main, clock=clock)


if __name__ == "__main__":
    cli()
