"""Telemetry overhead cases: the debugger reporter and the OpenTelemetry tracer.

Each case measures the same loop twice, on a bare machine and on one with the telemetry
bound, in the same process and run, so the ratio is what a user pays for it:

* 9: the debugger reporter (``trio_am.telemetry.bind_debugger``) attached to a live
  debugger: ``trio-am-dbg --headless`` started as a subprocess on a free loopback port,
  recording what it receives, so the reporter really encodes and sends every record.
* 10: the OpenTelemetry tracer (``bind_otel(transitions=True)``) on an SDK provider with a
  ``BatchSpanProcessor`` and an exporter that drops the spans (the real pipeline up to the
  network).

Loops: case 1's toggle (one state, one final handler: the cheapest transition, so the worst
ratio) and case 2's 20-state cycle (a transition with relations, auto states and handlers).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    from . import bench_core, timing
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import bench_core  # type: ignore[no-redef]
    import timing  # type: ignore[no-redef]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_debugger() -> Iterator[str]:
    """A headless ``trio-am-dbg`` in a subprocess; yields its ``host:port``."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "bench.amdbg"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AM_")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trio_am.dbg",
                "--headless",
                "--record",
                str(rec),
                "-l",
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 20
            for line in proc.stdout:
                if line.startswith("Listening on"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the headless debugger did not start")
            else:
                raise RuntimeError("the headless debugger exited before listening")
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _toggle_loop(mach: Any) -> Callable[[int], None]:
    toggle1 = mach.toggle1

    def loop(n: int) -> None:
        for _ in range(n):
            toggle1("A")

    return loop


def _cycle_loop(mach: Any) -> tuple[Callable[[int], None], int]:
    ops = [(getattr(mach, method), states) for method, states in bench_core.CYCLE_20]

    def loop(n: int) -> None:
        for _ in range(n):
            for fn, states in ops:
                fn(states)

    return loop, len(ops)


def _machines(kind: str) -> Any:
    am = bench_core.am()
    if kind == "toggle":
        return am.Machine({"A": {}}, handlers=bench_core.ToggleHandlers())
    return am.Machine(bench_core.SCHEMA_20, handlers=bench_core.RelationsHandlers())


def _rate(mach: Any, kind: str, *, target_s: float, repeats: int) -> timing.Rate:
    if kind == "toggle":
        loop = _toggle_loop(mach)
        per = 1
    else:
        loop, per = _cycle_loop(mach)
    rate = timing.measure_rate(
        lambda n: timing.timed(lambda: loop(n)), target_s=target_s, repeats=repeats
    )
    return timing.Rate(
        best=rate.best * per, median=rate.median * per, n=rate.n * per, repeats=rate.repeats
    )


def overhead(
    bind: Callable[[Any], Any],
    *,
    kinds: Sequence[str] = ("toggle", "cycle20"),
    target_s: float,
    repeats: int,
    after: Callable[[Any], dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Rates of bare vs bound machines for each loop kind (bare and bound interleaved)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        bare = _rate(_machines(kind), kind, target_s=target_s, repeats=repeats)
        mach = _machines(kind)
        handle = bind(mach)
        bound = _rate(mach, kind, target_s=target_s, repeats=repeats)
        extra = after(handle) if after is not None else {}
        out[kind] = {
            "bare": bare.as_dict(),
            "bound": bound.as_dict(),
            "slowdown": 1 - bound.best / bare.best,
            **extra,
        }
        dispose = getattr(mach, "dispose", None)
        if dispose is not None:
            dispose()
    return out


def reporter_overhead(*, target_s: float, repeats: int) -> dict[str, dict[str, Any]]:
    """Case 9: bare vs reporter attached to a live headless debugger."""
    from trio_am.telemetry import bind_debugger

    with live_debugger() as addr:

        def bind(mach: Any) -> Any:
            rep = bind_debugger(mach, addr)
            rep.flush(10)  # connected, hello and schema sent
            return rep, rep.stats()  # the link is shared: count this case's share

        def after(handle: Any) -> dict[str, Any]:
            rep, before = handle
            rep.flush(30)
            now = rep.stats()
            return {
                "reporter": {k: now[k] - before[k] for k in ("sent", "dropped")},
            }

        return overhead(bind, target_s=target_s, repeats=repeats, after=after)


def otel_overhead(*, target_s: float, repeats: int) -> dict[str, dict[str, Any]]:
    """Case 10: bare vs ``bind_otel(transitions=True)`` with a batching, dropping exporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from trio_am.telemetry import bind_otel

    class DropExporter(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    exporter = DropExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    try:
        return overhead(
            lambda mach: bind_otel(mach, tracer_provider=provider, transitions=True),
            target_s=target_s,
            repeats=repeats,
        )
    finally:
        provider.shutdown()
