"""Structured concurrency: async work that lives exactly as long as a state.

Run it with ``python examples/fork_cancel.py``.

Handlers are synchronous, so a handler that needs to do I/O *forks* it:
``e.fork(async_fn, *args)`` in a ``Foo_state`` handler starts ``async_fn`` in the
machine's nursery, inside a cancel scope tied to this activation of ``Foo``. When
``Foo`` ends (removed, or re-activated if it is multi, or the machine is disposed),
Trio cancels that work: no flags to check, no task handles to keep.

* Part 1: removing ``Download`` mid-way cancels the forked download at once.
* Part 2: a forked task that raises does not crash the nursery: the error becomes the
  ``Exception`` state (``mach.err`` holds it).
* Part 3: ``mach.state_ctx(state)`` gives the same lifetime to code that is not
  forked: ``with ctx:`` is a cancel scope that ends with the state.

Forked work reports back by mutating the machine (here: one ``Chunk`` activation per
downloaded chunk); the main task follows it with waiters.
"""

from __future__ import annotations

import trio

import trio_am as am

SCHEMA = {
    "Download": {},
    # one activation per chunk; requires Download, so it ends with it
    "Chunk": {"multi": True, "require": ["Download"]},
    "Verify": {},
    "Session": {},
}


class Downloader:
    def __init__(self) -> None:
        self.stopped = trio.Event()

    def Download_state(self, e: am.Event) -> None:
        print(f"  Download_state: forking the download of {e.args['url']}")
        self.stopped = trio.Event()
        # e.fork is allowed in <State>_state handlers only; from a negotiation handler
        # it raises am.Error (use mach.fork(fn, state=...) elsewhere)
        e.fork(self.download, e.machine, e.args["url"])

    async def download(self, mach: am.Machine, url: str) -> None:
        received = 0
        try:
            while received < 100:  # 100 chunks: far more than we will wait for
                await trio.sleep(0.01)  # "receive" one chunk
                received += 1
                mach.add1("Chunk", {"n": received})
            mach.remove1("Download")
        except trio.Cancelled:
            # Download ended while we waited for the next chunk: Trio cancelled us
            print(f"  download of {url}: cancelled after {received} chunks")
            raise  # always re-raise Cancelled
        finally:
            self.stopped.set()

    def Verify_state(self, e: am.Event) -> None:
        e.fork(self.verify)

    async def verify(self) -> None:
        await trio.sleep(0.01)
        raise ValueError("checksum mismatch")

    def Exception_state(self, e: am.Event) -> None:
        print(f"  Exception_state: {e.args['err']!r}")


async def end_session_later(mach: am.Machine) -> None:
    await trio.sleep(0.03)
    print("  (another task removes Session)")
    mach.remove1("Session")


async def main() -> None:
    handlers = Downloader()
    async with am.open_machine(SCHEMA, id="dl", handlers=handlers) as mach:
        print("# 1. Removing a state cancels the work forked for it")
        chunk3 = mach.when_args("Chunk", {"n": 3})  # registered before the download
        mach.add1("Download", {"url": "https://example.invalid/big.iso"})
        await chunk3
        print(f"3 chunks received: {mach}; removing Download")
        mach.remove1("Download")  # synchronous: the download's scope is cancelled now
        await handlers.stopped.wait()
        print(f"after the remove: {mach}")

        print("\n# 2. A forked task that raises becomes the Exception state")
        mach.add1("Verify")
        await mach.when_err()
        print(f"mach.err = {mach.err!r}; the nursery is fine: {mach.string_all()}")
        # Verify is still active: the error is a separate state. Clean up both.
        mach.remove(["Verify", "Exception"])

        print("\n# 3. state_ctx: `with ctx:` ends when the state ends")
        mach.add1("Session")
        ctx = mach.state_ctx("Session")  # bound to this activation of Session
        mach.fork(end_session_later, mach)
        with ctx:
            await trio.sleep_forever()  # e.g. serve requests while the session lasts
        print(f"left `with ctx:` when Session ended; ctx.expired={ctx.expired}")
        with ctx as scope:  # an expired context cancels at once
            await trio.sleep(1)
        print(f"entering it again: cancelled at once: {scope.cancelled_caught}")
        await ctx.wait_expired()  # returns at once too
        mach.add1("Session")
        print(f"a new activation gets a new context: {mach.state_ctx('Session') is not ctx}")

    print(f"\nafter open_machine: disposed={mach.disposed}")


if __name__ == "__main__":
    trio.run(main)
