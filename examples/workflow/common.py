"""What the orchestrator and the workers of the workflow example share.

* the configuration (environment variables, overridable by flags);
* the schemas: the orchestrator's DAG, a worker, and the dispatcher (a worker that also
  drives two other workers);
* the work itself (SHA-512 hashing) and the fault plan;
* running a child process: wait for its ``READY <url>`` line, pass its other output on
  with a ``[name]`` prefix, and fail loudly when it dies.

See README.md in this folder for the whole picture.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

import trio_am as am

HERE = Path(__file__).resolve().parent
WORKERS = ("browser1", "browser2", "browser3", "browser4")
#: What each first-level worker hashes first; workers 3 and 4 get what 1 and 2 delivered.
SEEDS = {"browser1": b"wasm-workflow-1", "browser2": b"wasm-workflow-2"}
#: The expected final results (arpc.md F7): sha512(sha512(seed + b"browser1") + b"browser3")
#: and the same for 2 and 4, as hex.
EXPECTED = {
    "browser3": "798084a3599272353ed165b1ef2717344a89246ca3756680059b7b1340053007"
    "b7af049916f67388bea5cdc007dbf7368522d808bd5a6ad68b57612b5fc804b2",
    "browser4": "7f8db768c3ff3bd492c68f48006f6e5d77981501df604eb77b9577e87acd5ee8"
    "6772cb00b6f621ce9209d1e74c770d95e2b78d658c0e0f399989bb98421f6e95",
}
OUTCOMES = ("ok", "fail", "corrupt")
#: Hashing runs in a worker thread in chunks of this many rounds, so that cancelling the
#: work takes effect between chunks and the Trio loop stays free for the network.
CHUNK = 5_000


class ConfigError(ValueError):
    """A bad setting (environment variable or flag); the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value}: must be at least {minimum}")
    return value


def parse_fault_plan(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``"browser1:fail,browser3:corrupt"`` into ``(worker, outcome)`` pairs.

    Each entry is used once, by that worker's next attempt, before the random draw; a
    worker named twice gets both entries on its first two attempts.
    """
    plan = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        worker, _, outcome = entry.partition(":")
        if worker not in WORKERS or outcome not in OUTCOMES:
            raise ConfigError(
                f"FAULT_PLAN entry {entry!r}: expected WORKER:OUTCOME with WORKER one of "
                f"{', '.join(WORKERS)} and OUTCOME one of {', '.join(OUTCOMES)}"
            )
        plan.append((worker, outcome))
    return tuple(plan)


@attrs.frozen
class Config:
    """The example's settings; every process reads them from its environment."""

    #: Rounds of SHA-512 each attempt burns as load before computing its result.
    hash_iterations: int = 10_000
    #: A worker draws ``randrange(success_rate)``: 0 corrupts, 1 fails, others succeed.
    #: None: no random faults (the fault plan alone decides).
    success_rate: int | None = 5
    #: Seed of the workers' generators (each worker seeds with ``f"{seed}:{id}"``).
    seed: int = 6
    #: Scripted outcomes, applied before the random draw.
    fault_plan: tuple[tuple[str, str], ...] = ()
    #: Exit with status 0 once the final hashes are right (else keep serving).
    exit_on_completed: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read ``HASH_ITERATIONS``, ``SUCCESS_RATE``, ``SEED``, ``FAULT_PLAN`` and
        ``EXIT_ON_COMPLETED``. A fault plan without an explicit ``SUCCESS_RATE`` turns the
        random faults off, so the plan's outcome is exact.

        Raises:
            ConfigError: a variable has a bad value.
        """
        env = os.environ if env is None else env
        plan = parse_fault_plan(env.get("FAULT_PLAN", ""))
        rate: int | None = _int(env, "SUCCESS_RATE", 5, 3)
        if plan and not env.get("SUCCESS_RATE", "").strip():
            rate = None
        flag = env.get("EXIT_ON_COMPLETED", "").strip()
        if flag not in ("", "0", "1"):
            raise ConfigError(f"EXIT_ON_COMPLETED={flag!r}: expected 0 or 1")
        return cls(
            hash_iterations=_int(env, "HASH_ITERATIONS", 10_000, 0),
            success_rate=rate,
            seed=_int(env, "SEED", 6, 0),
            fault_plan=plan,
            exit_on_completed=flag == "1",
        )

    def to_env(self) -> dict[str, str]:
        """The variables that give a child process this configuration."""
        return {
            "HASH_ITERATIONS": str(self.hash_iterations),
            "SUCCESS_RATE": "" if self.success_rate is None else str(self.success_rate),
            "SEED": str(self.seed),
            "FAULT_PLAN": ",".join(f"{w}:{o}" for w, o in self.fault_plan),
            "EXIT_ON_COMPLETED": "1" if self.exit_on_completed else "0",
        }


# --------------------------------------------------------------------------- schemas
#: The worker's own states (Working, Retrying, Completed and Failed exclude each other).
WORK = ["Working", "Retrying", "Completed", "Failed"]

WORKER_SCHEMA = am.schema_merge(
    am.BASIC_SCHEMA,  # Exception, Start, Ready (requires Start), ...
    {
        # Working carries the payload to hash; Retrying hashes the stored one again.
        "Working": {"require": ["Start"], "remove": WORK},
        "Retrying": {"require": ["Start"], "remove": WORK},
        "Completed": {"require": ["Start"], "remove": WORK},
        "Failed": {"require": ["Start"], "remove": WORK},
    },
)

#: The states a worker's parent mirrors from it, under a ``BrowserN`` prefix.
PIPED = ["Ready", "Working", "Retrying", "Completed", "Failed"]


def prefixed(worker: str, states: list[str]) -> list[str]:
    """``prefixed("browser3", ["Ready"])`` is ``["Browser3Ready"]``."""
    return [worker.capitalize() + s for s in states]


#: The dispatcher (browser2) is a worker that also drives browsers 3 and 4: its multi
#: states ``Browser3Work`` / ``Browser3Retry`` turn into ``Working`` / ``Retrying`` there,
#: and their states come back with a prefix. Payloads it receives from them (its
#: ``ServerPayload`` state) go on to its own clients with the source unchanged.
DISPATCHER_SCHEMA = am.schema_merge(
    WORKER_SCHEMA,
    am.rpc.CONSUMER_SCHEMA,
    {
        name: {"multi": True}
        for name in ("Browser3Work", "Browser4Work", "Browser3Retry", "Browser4Retry")
    },
    {name: {} for w in ("browser3", "browser4") for name in prefixed(w, PIPED)},
)

DELIVERED = [f"Browser{n}Delivered" for n in (1, 2, 3, 4)]

#: The orchestrator: its workflow is a DAG drawn with relations.
ORCHESTRATOR_SCHEMA = am.schema_merge(
    am.BASIC_SCHEMA,
    am.rpc.CONSUMER_SCHEMA,  # ServerPayload: the workers' results arrive here
    {
        # links to the two first-level workers (the rc-* machines' Ready, piped)
        "Browser1Conn": {},
        "Browser2Conn": {},
        "WorkersReady": {
            "auto": True,
            "require": ["Browser1Conn", "Browser2Conn", *(f"Browser{n}Ready" for n in range(1, 5))],
        },
        # the whole network is up: (re)start the workflow
        "NetworkReady": {"auto": True, "require": ["Ready", "WorkersReady"], "add": ["StartWork"]},
        "StartWork": {"require": ["NetworkReady"], "remove": DELIVERED},
        # one trigger per node; args {"retry": True} re-run the node on its stored input
        "Browser1Work": {"multi": True, "require": ["NetworkReady"]},
        "Browser2Work": {"multi": True, "require": ["NetworkReady"]},
        "Browser3Work": {"multi": True, "require": ["NetworkReady", "Browser1Delivered"]},
        "Browser4Work": {"multi": True, "require": ["NetworkReady", "Browser2Delivered"]},
        # a node's result arrived; 1 and 2 start the next level
        "Browser1Delivered": {"add": ["Browser3Work"]},
        "Browser2Delivered": {"add": ["Browser4Work"]},
        "Browser3Delivered": {},
        "Browser4Delivered": {},
        "WorkDelivered": {"auto": True, "require": ["Browser3Delivered", "Browser4Delivered"]},
    },
    # the workers' states, piped in with a prefix (informational, and WorkersReady)
    {name: {} for w in WORKERS for name in prefixed(w, PIPED)},
)


# --------------------------------------------------------------------------- work
def simulate_load(iterations: int) -> None:
    """Burn CPU: feed SHA-512 its own digest ``iterations`` times."""
    data = b"example_wasm_workflow_data"
    for _ in range(iterations):
        data = hashlib.sha512(data).digest()


def compute(payload: bytes, worker_id: str) -> bytes:
    """A node's result: ``sha512(payload + worker_id)``."""
    return hashlib.sha512(payload + worker_id.encode()).digest()


class Faults:
    """Decides each attempt's outcome for one worker: the fault plan first, then a draw."""

    def __init__(self, worker_id: str, cfg: Config) -> None:
        self.plan = [o for w, o in cfg.fault_plan if w == worker_id]
        self.rate = cfg.success_rate
        self.rng = random.Random(f"{cfg.seed}:{worker_id}")

    def next(self) -> str:
        """``"ok"``, ``"fail"`` or ``"corrupt"`` for the next attempt."""
        if self.plan:
            return self.plan.pop(0)
        if self.rate is None:
            return "ok"
        draw = self.rng.randrange(self.rate)
        return "corrupt" if draw == 0 else "fail" if draw == 1 else "ok"


async def hash_work(iterations: int, payload: bytes, worker_id: str) -> bytes:
    """The load, in chunks run in a thread, then the result."""
    left = iterations
    while left > 0:
        step = min(left, CHUNK)
        await trio.to_thread.run_sync(simulate_load, step)
        left -= step
    return compute(payload, worker_id)


# --------------------------------------------------------------------------- processes
def say(line: str) -> None:
    """Print one progress line at once (stdout may be a pipe)."""
    print(line, flush=True)


class ChildError(Exception):
    """A child process ended before it was ready, or while it was still needed."""


class LineReader:
    """Lines (str, without the newline) from a Trio receive stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = bytearray()

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 1]
                return line.decode(errors="replace").rstrip("\r")
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                if self._buf:
                    line = bytes(self._buf)
                    self._buf.clear()
                    return line.decode(errors="replace")
                raise StopAsyncIteration
            self._buf += chunk


#: ``AM_SERVICE`` names the process in OpenTelemetry; when the user did not set one,
#: each process is named after its machine.
_AUTO_SERVICE = "AM_SERVICE" not in os.environ


def name_service(machine_id: str) -> None:
    """Set ``AM_SERVICE`` to ``machine_id`` unless the user chose a service name."""
    if _AUTO_SERVICE:
        os.environ["AM_SERVICE"] = machine_id


async def run_child(
    name: str,
    args: list[str],
    cfg: Config,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``python worker.py ARGS`` and report its URL once it prints ``READY <url>``.

    Its other output lines are printed with a ``  [name]`` prefix. The child gets a pipe
    as stdin and exits when it closes, so it never outlives this process, even one that
    is killed. Cancelling this task terminates the child (SIGTERM, SIGKILL after 5 s).

    Raises:
        ChildError: the child exited, before it was ready or later.
    """
    env = {**os.environ, **cfg.to_env()}
    if _AUTO_SERVICE:
        env.pop("AM_SERVICE", None)
    cmd = [sys.executable, "-u", str(HERE / "worker.py"), "--id", name, "--stdin-watch", *args]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                check=False,
                env=env,
                start_new_session=True,  # Ctrl+C reaches the parent only; it stops us
            )
        )
        assert proc.stdout is not None
        lines = LineReader(proc.stdout)
        ready = False
        async for line in lines:
            if not ready and line.startswith("READY "):
                ready = True
                task_status.started(line.split()[1])
                continue
            say(f"  [{name}] {line}")
    code = proc.returncode
    when = "while the workflow needed it" if ready else "before it was ready"
    raise ChildError(f"{name} exited with code {code} {when}")


def leaves(group: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in leaves(exc)]
    return [group]


def child_urls(peers: Mapping[str, str]) -> list[str]:
    """``--peer NAME=URL`` arguments for a dispatcher."""
    out: list[str] = []
    for name, url in peers.items():
        out += ["--peer", f"{name}={url}"]
    return out


def payload_hex(data: Any) -> str:
    """A payload's hex, or a marker for a non-bytes value."""
    return data.hex() if isinstance(data, bytes) else f"<{type(data).__name__}>"


Printer = Callable[[str], None]
