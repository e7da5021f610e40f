"""trio_am demo: a file pipeline watched by a monitor machine.

Run it with ``python examples/demo.py`` (or ``python3 -m nox -s demo``).

The *pipeline* machine fetches three files concurrently, processes them and becomes
Ready. The fake server drops the connection for ``b.txt`` on the first attempt, so the
demo also shows:

* relations doing the bookkeeping: ``Processing`` and ``Ready`` are *auto* states that
  turn on by themselves as soon as their requirements hold;
* forked Trio work tied to a state: when the error ends ``Fetching``, the download of
  ``c.txt`` still in flight is cancelled by Trio, not by hand;
* an error state (``ErrNetwork``), a cool-down, and a retry with ``am.MutRequest`` that
  keeps trying to add ``Fetching`` until the cool-down allows it;
* a second machine, the *monitor*, fed by pipes (``trio_am.pipes``) from the pipeline.

Everything is deterministic: the only "randomness" is a seeded generator for file sizes.
"""

from __future__ import annotations

import random

import trio

import trio_am as am
from trio_am import pipes

FILES = ["a.txt", "b.txt", "c.txt"]
FETCH_TIME = {"a.txt": 0.02, "b.txt": 0.06, "c.txt": 0.15}  # b.txt fails at 0.06 s
COOL_DOWN = 0.3  # seconds to wait after a network error before fetching again
RETRY_DELAY = 0.2  # MutRequest: seconds between attempts to add Fetching

PIPELINE_SCHEMA = am.schema_merge(
    am.BASIC_SCHEMA,  # Exception, ErrNetwork (requires Exception), Start, Ready, ...
    {
        "Fetching": {"require": ["Start"], "remove": ["Fetched"]},
        "Fetched": {"require": ["Start"], "remove": ["Fetching"]},
        # auto: activates by itself once Fetched is active (and Processed is not)
        "Processing": {"auto": True, "require": ["Fetched"], "remove": ["Processed"]},
        "Processed": {"require": ["Fetched"], "remove": ["Processing"]},
        "Ready": {"auto": True, "require": ["Processed"]},
        # while cooling down, Fetching cannot be active: adding it is CANCELED
        "CoolDown": {"remove": ["Fetching"]},
    },
)

MONITOR_SCHEMA = {
    "Downloading": {},
    "Busy": {},
    "PipelineReady": {},
    "ErrPipeline": {"require": ["Exception"]},
}


class Pipeline:
    """Handlers of the pipeline machine (bound by name: ``<State>_state`` etc.)."""

    def __init__(self) -> None:
        self.failed_once: set[str] = set()
        self.data: dict[str, int] = {}
        self.sizes = random.Random(42)  # seeded: the same "file sizes" every run

    # --- fetching -------------------------------------------------------------------
    def Fetching_state(self, e: am.Event) -> None:
        # The forked task lives exactly as long as this activation of Fetching.
        e.fork(self.fetch_all, e.machine)

    async def fetch_all(self, mach: am.Machine) -> None:
        async with trio.open_nursery() as nursery:
            for name in FILES:
                if name not in self.data:
                    nursery.start_soon(self.fetch, mach, name)
        mach.add1("Fetched", {"files": len(self.data)})

    async def fetch(self, mach: am.Machine, name: str) -> None:
        try:
            await trio.sleep(FETCH_TIME[name])
        except trio.Cancelled:
            print(f"    fetch {name}: cancelled (Fetching ended)")
            raise
        if name == "b.txt" and name not in self.failed_once:
            self.failed_once.add(name)
            print(f"    fetch {name}: connection reset")
            # ErrNetwork + Exception, with the error in the args
            mach.add_err_state("ErrNetwork", ConnectionResetError(f"reset while fetching {name}"))
            return
        self.data[name] = self.sizes.randint(100, 999)
        print(f"    fetch {name}: {self.data[name]} bytes")

    # --- errors and retry -----------------------------------------------------------
    def ErrNetwork_state(self, e: am.Event) -> None:
        print(f"    ErrNetwork: {e.args['err']!r} -> cool-down {COOL_DOWN} s, then retry")
        e.machine.add1("CoolDown")  # queued: runs right after this transition
        e.machine.fork(self.retry, e.machine)

    def CoolDown_state(self, e: am.Event) -> None:
        e.fork(self.cool_down, e.machine)

    async def cool_down(self, mach: am.Machine) -> None:
        await trio.sleep(COOL_DOWN)
        mach.remove1("CoolDown")

    async def retry(self, mach: am.Machine) -> None:
        # Each attempt to add Fetching is CANCELED while CoolDown is active; MutRequest
        # retries with a fixed delay (backoff=0) until it is accepted.
        req = am.MutRequest(mach, "add", ["Fetching"], delay=RETRY_DELAY, backoff=0, retries=5)
        await req.run()
        print(f"    retry: Fetching accepted after {req.attempts} attempt(s)")
        # A fresh attempt clears the old error; ErrNetwork requires Exception, so the
        # resolver removes it in the same transition.
        mach.remove1("Exception")

    # --- processing -----------------------------------------------------------------
    def Processing_state(self, e: am.Event) -> None:
        e.fork(self.process, e.machine)

    async def process(self, mach: am.Machine) -> None:
        total = 0
        for name in FILES:
            await trio.sleep(0.01)
            total += self.data[name]
            print(f"    processed {name}")
        mach.add1("Processed", {"total": total})

    def Ready_state(self, e: am.Event) -> None:
        print(f"    Ready: {len(self.data)} files, {sum(self.data.values())} bytes")


class Monitor:
    """Handlers of the monitor machine: it only reacts to what the pipes tell it."""

    def ErrPipeline_state(self, e: am.Event) -> None:
        print(f"    monitor ALERT: {e.args['err']}")


def log_changes(level: int, text: str, mach: am.Engine) -> None:
    """Log sink: print the machine's own log lines ([state] +Added -Removed, ...)."""
    print(f"  [{mach.id:8}] {text}")


async def main() -> None:
    print("== trio_am demo: a file pipeline and its monitor ==")
    print("([id] lines are the machines' own change logs; indented lines come from handlers)")
    async with (
        am.open_machine(MONITOR_SCHEMA, id="monitor", handlers=Monitor()) as monitor,
        am.open_machine(PIPELINE_SCHEMA, id="pipeline", handlers=Pipeline()) as pipeline,
    ):
        for mach in (pipeline, monitor):
            mach.set_logger(log_changes)
            mach.set_log_level(am.LogLevel.CHANGES)

        # Pipes: final handlers on the pipeline that mutate the monitor.
        pipes.bind(pipeline, monitor, "Fetching", target_on="Downloading")
        pipes.bind(pipeline, monitor, "Processing", target_on="Busy")
        pipes.bind_ready(pipeline, monitor, target_state="PipelineReady")
        pipes.bind_err(pipeline, monitor, "ErrPipeline")

        # Register the waiter first: it cannot miss Ready, however fast the pipeline is.
        ready = monitor.when1("PipelineReady")
        pipeline.add(["Start", "Fetching"])
        await am.wait_for_all(ready, timeout=2)

        print("== final state ==")
        print(f"pipeline: {pipeline.string_all()}")
        print(f"monitor:  {monitor.string_all()}")
        print(f"last pipeline error: {pipeline.err!r}")
        print("== leaving the block disposes both machines (Start is removed first) ==")


if __name__ == "__main__":
    trio.run(main)
