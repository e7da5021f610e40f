"""A file-processing workflow with retries: read -> transform -> write, one machine per file.

Run it with ``python examples/file_workflow.py``. Options: ``--seed N`` (another set of
simulated failures), ``--max-tries N`` (failed tries a file may have, default 3),
``--real-clock`` (wait in real time; see "Virtual time" below).

It creates a temporary directory with six small text files and processes them twice:

* **Batch 1**: storage fails now and then (a seeded random generator decides). A failed
  read or write is retried after a growing pause; one file keeps failing and is given up
  after ``--max-tries`` failed tries. A summary ends the batch.
* **Batch 2**: the output disk is nearly full (a simulated quota). The first write that
  does not fit is a *fatal* error: the batch stops, and every file still in flight is
  cancelled cleanly (no half-written file is left behind).

What it teaches:

* **A machine per work item.** Each file gets its own machine (``file:<name>``, a child
  of the batch machine, ``parent=``) whose stages ``Reading``, ``Transforming``,
  ``Writing``, ``Backoff``, ``Done`` and ``Failed`` remove each other: one stage at a
  time. Each stage's handler forks the stage's work with ``e.fork``, and the work adds
  the next stage when it is done.
* **Retries through states.** A transient error becomes ``ErrTransient`` (with
  ``Exception``); its handler adds ``Backoff``, whose forked timer waits
  ``0.1 * 2**(n - 1)`` seconds, clears the error and adds the failed stage again. The
  number of failed tries is read from the clock: ``activations(tick("ErrTransient"))``.
* **Giving up** is a state too: ``Failed``, with the reason in its args.
* **Fatal errors cancel in-flight work.** ``ErrFatal`` is piped to the batch machine
  (``pipes.pipe_add``), where it ``remove``\\ s ``Processing``. The batch's work was
  forked from ``Processing_state``, so Trio cancels it, and with it the task of every
  file, each of which leaves its ``open_machine`` block, which disposes the file's
  machine and cancels its stage. Nothing needs to be stopped by hand.
* **Bounded concurrency** with a ``trio.Semaphore``: at most three files at a time.

Virtual time: storage latency is simulated with ``trio.sleep``, and by default the program
runs on Trio's ``MockClock`` (``autojump_threshold=0``: when every task waits, the clock
jumps to the next deadline): the run is instant, the times are exact, and the output is
the same on every run. The files are tiny, so they are read and written synchronously;
for big files use ``trio.Path`` or ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio
import trio.testing

import trio_am as am
from trio_am import pipes

FILES = ["alpha.txt", "bravo.txt", "charlie.txt", "delta.txt", "echo.txt", "foxtrot.txt"]
WORDS = [
    "state",
    "clock",
    "relation",
    "queue",
    "handler",
    "trio",
    "nursery",
    "scope",
    "cancel",
    "fork",
    "pipe",
    "tick",
]
PARALLEL = 3  # files in flight at once
FAIL_RATE = 0.3  # chance that one read or write fails (transiently)
BACKOFF = 0.1  # seconds before the first retry; doubles after every failure
SEED = 8  # the default seed: some retries, and one file that keeps failing
QUOTA = 500  # batch 2: bytes the output disk can still take

STATUSES = ["done", "FAILED", "FATAL", "cancelled", "not started"]
STAGES = ["Reading", "Transforming", "Writing", "Backoff", "Done", "Failed"]

#: The schema of one file's machine.
FILE_SCHEMA: dict[str, am.State] = {
    # each stage removes the others: exactly one stage at a time
    **{stage: am.State(remove=STAGES) for stage in STAGES},
    "ErrTransient": am.State(require=["Exception"]),  # worth another try
    "ErrFatal": am.State(require=["Exception"], remove=STAGES),  # stops everything
}

#: The schema of the batch machine.
BATCH_SCHEMA: dict[str, am.State] = {
    "Start": am.State(),
    "Processing": am.State(require=["Start"]),
    "Finished": am.State(require=["Start"], remove=["Processing"]),
    # a fatal error in any file ends Processing, and so cancels the whole batch
    "ErrFatal": am.State(require=["Exception"], remove=["Processing"]),
}


class TransientError(Exception):
    """A storage failure that may go away on its own (simulated)."""


class Storage:
    """Reads and writes files; fails at random (transiently), and refuses writes beyond
    ``quota`` bytes with ``OSError(ENOSPC)``, which no retry can fix."""

    def __init__(self, quota: int | None = None) -> None:
        self.quota = quota
        self.written = 0

    def read(self, path: Path, rng: random.Random) -> str:
        if rng.random() < FAIL_RATE:
            raise TransientError("read timed out")
        return path.read_text()

    def write(self, path: Path, text: str, rng: random.Random) -> None:
        if rng.random() < FAIL_RATE:
            raise TransientError("storage busy")
        data = text.encode()
        if self.quota is not None and self.written + len(data) > self.quota:
            raise OSError(errno.ENOSPC, "No space left on device", path.name)
        # write a temporary file, then rename it: readers never see half a file
        part = path.with_name(path.name + ".part")
        part.write_bytes(data)
        part.replace(path)
        self.written += len(data)


def transform(text: str) -> str:
    """The "processing": capitalise and number the lines, add a checksum line."""
    lines = [line.strip().capitalize() for line in text.splitlines() if line.strip()]
    body = "".join(f"{n:3} {line}\n" for n, line in enumerate(lines, 1))
    digest = hashlib.sha256(body.encode()).hexdigest()[:12]
    return body + f"# {sum(len(line.split()) for line in lines)} words, sha256 {digest}\n"


@dataclass
class Outcome:
    """How one file ended, for the summary."""

    status: str  # one of STATUSES
    failures: int = 0
    detail: str = ""


class Clock:
    """Prints times relative to the start of a batch (virtual or real)."""

    def __init__(self) -> None:
        self.t0 = trio.current_time()

    def now(self) -> str:
        return f"t={trio.current_time() - self.t0:.3f}"


class FileJob:
    """Handlers of one file's machine."""

    def __init__(
        self, clock: Clock, src: Path, dst: Path, storage: Storage, seed: str, max_tries: int
    ) -> None:
        self.clock = clock
        self.src, self.dst = src, dst
        self.storage = storage
        self.rng = random.Random(seed)  # one generator per file: independent of scheduling
        self.max_tries = max_tries
        self.text = ""

    def say(self, msg: str) -> None:
        print(f"{self.clock.now()} {self.src.name}: {msg}")

    async def latency(self) -> None:
        """Simulated storage latency (the stage's work can be cancelled here)."""
        await trio.sleep(self.rng.uniform(0.02, 0.08))

    # --- the stages: each handler forks the stage's work ---------------------------------
    def Reading_state(self, e: am.Event) -> None:
        e.fork(self.read, e.machine)

    async def read(self, mach: am.Machine) -> None:
        await self.latency()
        try:
            self.text = self.storage.read(self.src, self.rng)
        except Exception as exc:
            self.failed(mach, "Reading", exc)
            return
        mach.add1("Transforming")

    def Transforming_state(self, e: am.Event) -> None:
        e.fork(self.transform, e.machine)

    async def transform(self, mach: am.Machine) -> None:
        await trio.sleep(0.01)
        self.text = transform(self.text)
        mach.add1("Writing")

    def Writing_state(self, e: am.Event) -> None:
        e.fork(self.write, e.machine)

    async def write(self, mach: am.Machine) -> None:
        await self.latency()
        try:
            self.storage.write(self.dst, self.text, self.rng)
        except Exception as exc:
            self.failed(mach, "Writing", exc)
            return
        mach.add1("Done")

    def failed(self, mach: am.Machine, stage: str, exc: Exception) -> None:
        """Turn a failed storage operation into an error state."""
        if isinstance(exc, TransientError):
            mach.add_err_state("ErrTransient", exc, {"stage": stage})
        else:  # anything else is fatal: retrying will not help
            mach.add_err_state("ErrFatal", exc, {"stage": stage})

    # --- errors, retries, the end --------------------------------------------------------
    def ErrTransient_state(self, e: am.Event) -> None:
        mach = e.machine
        failures = am.helpers.activations(mach.tick("ErrTransient"))  # the clock counts
        stage, err = e.args["stage"], e.args["err"]
        if failures >= self.max_tries:
            self.say(f"{stage} failed: {err} -> giving up after {failures} failed tries")
            mach.add1("Failed", {"reason": repr(err)})
            return
        delay = BACKOFF * 2 ** (failures - 1)
        self.say(f"{stage} failed: {err} (failed try {failures}) -> retry in {delay:.2f} s")
        mach.add1("Backoff", {"stage": stage, "delay": delay})

    def Backoff_state(self, e: am.Event) -> None:
        e.fork(self.retry_after, e.machine, e.args["stage"], e.args["delay"])

    async def retry_after(self, mach: am.Machine, stage: str, delay: float) -> None:
        await trio.sleep(delay)
        mach.remove1("Exception")  # ErrTransient requires it: both go
        mach.add1(stage)  # ends Backoff (one stage at a time)

    def Done_state(self, e: am.Event) -> None:
        self.say(f"done, {self.dst.stat().st_size} bytes written")

    def ErrFatal_state(self, e: am.Event) -> None:
        self.say(f"FATAL in {e.args['stage']}: {e.args['err']}")


class Batch:
    """Handlers of the batch machine; runs every file and records how each ended."""

    def __init__(
        self, n: int, inputs: list[Path], out: Path, storage: Storage, seed: int, max_tries: int
    ) -> None:
        self.n = n
        self.inputs, self.out = inputs, out
        self.storage = storage
        self.seed = seed
        self.max_tries = max_tries
        self.clock = Clock()
        self.outcomes: dict[str, Outcome] = {p.name: Outcome("not started") for p in inputs}

    def Processing_state(self, e: am.Event) -> None:
        # The whole batch is bound to this activation of Processing.
        e.fork(self.run_batch, e.machine)

    async def run_batch(self, batch: am.Machine) -> None:
        slots = trio.Semaphore(PARALLEL)
        async with trio.open_nursery() as nursery:
            for path in self.inputs:
                # Wait for a free slot *before* starting the task: files start in order.
                await slots.acquire()
                nursery.start_soon(self.run_file, batch, path, slots)
        batch.add1("Finished")

    async def run_file(self, batch: am.Machine, src: Path, slots: trio.Semaphore) -> None:
        name = src.name
        job = FileJob(
            self.clock,
            src,
            self.out / name,
            self.storage,
            f"{self.seed}:{self.n}:{name}",
            self.max_tries,
        )
        try:
            async with am.open_machine(
                FILE_SCHEMA, id=f"file:{name}", parent=batch, handlers=job
            ) as mach:
                pipes.pipe_add(mach, batch, "ErrFatal")  # a fatal error stops the batch
                ended = [mach.when1("Done"), mach.when1("Failed"), mach.when1("ErrFatal")]
                mach.add1("Reading")
                try:
                    await am.wait_for_any(*ended)
                finally:
                    # Record the outcome while the machine still exists. When the batch
                    # is cancelled we get here with trio.Cancelled in flight; leaving the
                    # `async with` then disposes the machine, cancelling its stage.
                    self.outcomes[name] = outcome(mach)
        finally:
            slots.release()

    def ErrFatal_state(self, e: am.Event) -> None:
        print(f"{self.clock.now()} batch: fatal error, Processing ends -> cancelling the rest")


def outcome(mach: am.Machine) -> Outcome:
    """How a file's machine ended."""
    failures = am.helpers.activations(mach.tick("ErrTransient"))
    if mach.is1("Done"):
        return Outcome("done", failures)
    if mach.is1("Failed"):
        return Outcome("FAILED", failures, f"last error: {mach.err!r}")
    if mach.is1("ErrFatal"):
        return Outcome("FATAL", failures, repr(mach.err))
    stage = mach.switch(STAGES) or "?"
    return Outcome("cancelled", failures, f"while {stage}")


def make_inputs(folder: Path, seed: int) -> list[Path]:
    """Write the input files: a few lines of words each, from a seeded generator."""
    rng = random.Random(seed)
    folder.mkdir()
    paths = []
    for name in FILES:
        lines = [
            " ".join(rng.choices(WORDS, k=rng.randint(3, 7))) for _ in range(rng.randint(3, 6))
        ]
        path = folder / name
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


async def run(
    n: int, title: str, inputs: list[Path], out: Path, storage: Storage, seed: int, max_tries: int
) -> dict[str, Outcome]:
    """Run one batch and print its summary."""
    out.mkdir()
    print(f"\n== batch {n}: {title} ==")
    handlers = Batch(n, inputs, out, storage, seed, max_tries)
    async with am.open_machine(BATCH_SCHEMA, id=f"batch-{n}", handlers=handlers) as batch:
        ended = [batch.when1("Finished"), batch.when1("ErrFatal")]
        batch.add(["Start", "Processing"])
        await am.wait_for_any(*ended)
        final = batch.string()
    # The block has ended: every task of the batch has finished, so the outcomes are
    # complete and nothing prints after the summary.
    print(f"-- summary of batch {n}: {final}")
    for name, res in handlers.outcomes.items():
        tries = f"{res.failures} failed tr{'y' if res.failures == 1 else 'ies'}"
        print(f"  {name:12} {res.status:11} {tries:16} {res.detail}".rstrip())
    statuses = [res.status for res in handlers.outcomes.values()]
    counts = [f"{status}: {statuses.count(status)}" for status in STATUSES if status in statuses]
    print("  " + ", ".join(counts))
    leftovers = sorted(p.name for p in out.iterdir() if p.suffix == ".part")
    written = sorted(p.name for p in out.iterdir() if p.suffix != ".part")
    print(f"  output files: {written}; partial files: {leftovers}")
    return handlers.outcomes


async def main(seed: int, max_tries: int) -> None:
    with tempfile.TemporaryDirectory(prefix="file_workflow-") as tmp:
        root = Path(tmp)
        inputs = make_inputs(root / "in", seed)
        print(
            f"{len(inputs)} input files, {PARALLEL} at a time, up to {max_tries} failed tries each"
        )
        first = await run(1, "flaky storage", inputs, root / "out1", Storage(), seed, max_tries)
        done = [name for name, res in first.items() if res.status == "done"]
        if done:  # show what the processing did to one file
            lines = (root / "out1" / done[0]).read_text().splitlines()
            print(f"  {done[0]}, first and last line: {lines[0]!r} ... {lines[-1]!r}")
        quota = f"the output disk takes only {QUOTA} bytes"
        await run(2, quota, inputs, root / "out2", Storage(QUOTA), seed, max_tries)


def positive(text: str) -> int:
    """argparse type: an int from 1 to 10."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 10:
        raise argparse.ArgumentTypeError(f"must be from 1 to 10, not {value}")
    return value


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A file workflow with retries, on trio_am.")
    parser.add_argument(
        "--seed", type=int, default=SEED, help=f"simulated failures (default {SEED})"
    )
    parser.add_argument(
        "--max-tries", type=positive, default=3, help="failed tries before giving up (default 3)"
    )
    parser.add_argument("--real-clock", action="store_true", help="wait in real time")
    args = parser.parse_args(argv)
    clock = None if args.real_clock else trio.testing.MockClock(autojump_threshold=0)
    trio.run(main, args.seed, args.max_tries, clock=clock)


if __name__ == "__main__":
    cli()
