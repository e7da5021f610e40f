"""Relay case (issue 5): remote round trips through ``trio-am-relay`` against the same
client connected directly.

The server (``tcp://`` and ``ws://``) and the client run in this process. The relay runs
in its own process (``python -m trio_am.relay``), as it would in a deployment, and also
in-process for comparison. A round trip is one awaited ``add1_remote`` /
``remove1_remote``, alternating, like case 6.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import trio

try:
    from . import bench_rpc, timing
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import bench_rpc  # type: ignore[no-redef]
    import timing  # type: ignore[no-redef]

MODES = ("direct-tcp", "direct-ws", "relay", "relay-inproc")


@dataclass(frozen=True)
class RelayRoundTrip:
    """Round-trip latency (microseconds) and rate for one way of connecting."""

    mode: str
    p50_us: float
    p99_us: float
    mean_us: float
    per_s: float
    rounds: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@asynccontextmanager
async def _relay_process(target: str) -> Any:
    """``python -m trio_am.relay`` allowed to dial ``target``; yields its ``host:port``."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_am.relay", "--addr", "127.0.0.1:0", "--allow-dial", target],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        buf = b""
        with trio.fail_after(20):
            while b"\n" not in buf:
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    raise RuntimeError("the relay exited early")
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        yield line.rsplit("http://", 1)[1].strip()
    finally:
        with trio.CancelScope(shield=True):
            proc.terminate()
            await proc.wait()


async def samples(n: int, mode: str, warmup: int = 200) -> list[float]:
    """Seconds per round trip for ``n`` awaited remote mutations over ``mode``."""
    import trio_am as am
    from trio_am import rpc
    from trio_am.relay import serve_relay

    schema = am.schema_merge(am.BASIC_SCHEMA, rpc.STATE_SOURCE, {"Foo": {}})
    async with AsyncExitStack() as stack:
        src = await stack.enter_async_context(am.open_machine(schema, id="rt"))
        server = await stack.enter_async_context(
            rpc.serve(src, "tcp://127.0.0.1:0", "ws://127.0.0.1:0")
        )
        tcp_url, ws_url = server.urls
        target = tcp_url.split("://", 1)[1]
        if mode == "direct-tcp":
            url = tcp_url
        elif mode == "direct-ws":
            url = ws_url
        elif mode == "relay":
            addr = await stack.enter_async_context(_relay_process(target))
            url = f"ws://{addr}/dial/bench/{target}"
        elif mode == "relay-inproc":
            relay = await stack.enter_async_context(serve_relay(allow_dial={target}))
            url = f"{relay.ws_url}/dial/bench/{target}"
        else:
            raise ValueError(mode)
        client = await stack.enter_async_context(rpc.connect(url, id="bench"))
        with trio.fail_after(10):
            await client.rpc.when1("Ready")
        return await bench_rpc.timed_roundtrips(client.mach, src, n, warmup)


def roundtrip(n: int, mode: str) -> RelayRoundTrip:
    """Run ``n`` round trips over ``mode`` (one of :data:`MODES`)."""
    s = trio.run(samples, n, mode)
    lat = timing.percentiles(s)
    mean = statistics.fmean(s)
    return RelayRoundTrip(mode, lat.p50_us, lat.p99_us, mean * 1e6, 1 / mean, lat.rounds)


def relay_overhead(n: int, repeats: int = 3) -> dict[str, Any]:
    """Best-of-``repeats`` (by mean) for every mode, and the relay's added time against
    the same client over a direct WebSocket and over direct TCP."""
    best: dict[str, RelayRoundTrip] = {}
    for _ in range(repeats):
        for mode in MODES:
            r = roundtrip(n, mode)
            if mode not in best or r.mean_us < best[mode].mean_us:
                best[mode] = r
    relay = best["relay"]
    return {
        "modes": {m: r.as_dict() for m, r in best.items()},
        "added_vs_ws": relay.mean_us / best["direct-ws"].mean_us - 1,
        "added_vs_tcp": relay.mean_us / best["direct-tcp"].mean_us - 1,
        "inproc_added_vs_ws": best["relay-inproc"].mean_us / best["direct-ws"].mean_us - 1,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(relay_overhead(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
