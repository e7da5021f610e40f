"""Run the trio_am benchmark suite and print one markdown table.

    python benchmarks/run.py [--quick] [--json PATH] [--cases 1,3]

Progress goes to stderr, the table to stdout. Timings are informative only: nothing here
asserts on them. See benchmarks/README.md for what each case measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:  # a source checkout without an installed trio_am
    sys.path.append(str(HERE.parent))

import bench_core  # noqa: E402
import bench_relay  # noqa: E402
import bench_rpc  # noqa: E402
import bench_telemetry  # noqa: E402
import peers  # noqa: E402
import timing  # noqa: E402

TRIO_AM = "trio_am"
LIBS = (TRIO_AM, peers.TRANSITIONS, peers.STATEMACHINE)
LABELS = {TRIO_AM: "trio_am", **peers.PEER_LABELS}
GOAL_TOGGLE_RATIO = 3.0
GOAL_TOGGLE_RATE = 250_000
GOAL_F3_BYTES = 55  # arpc.md F3: bytes per iteration
GOAL_F3_P50_US = 150
GO_F3_US, GO_F3_BYTES = 249, 115  # Go v0.7.0, 10,000 iterations
GOAL_REPORTER_SLOWDOWN = 0.30  # issue 4: at most 30% slower with the debugger reporter
GOAL_RELAY_ADDED = 0.25  # issue 5 / arpc.md C2: the relay adds at most 25% round-trip time


@dataclass(frozen=True)
class Config:
    target_s: float
    repeats: int
    mem_count: int
    rounds: int
    rpc_rounds: int
    push_s: float
    f3_n: int


FULL = Config(
    target_s=0.25,
    repeats=5,
    mem_count=10_000,
    rounds=5_000,
    rpc_rounds=5_000,
    push_s=2.0,
    f3_n=10_000,
)
QUICK = Config(
    target_s=0.03, repeats=3, mem_count=500, rounds=300, rpc_rounds=500, push_s=0.3, f3_n=500
)


@dataclass
class Cell:
    text: str
    raw: Any = None


@dataclass
class Row:
    key: str
    case: str
    unit: str
    cells: dict[str, Cell]
    goal: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


NA = Cell("n/a")


# --- formatting ------------------------------------------------------------------------------


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def fmt_rate(rate: timing.Rate) -> str:
    return f"{fmt_int(rate.best)} (med {fmt_int(rate.median)})"


def fmt_mem(mem: timing.Memory) -> str:
    text = f"{fmt_int(mem.net_per_obj)} (peak {fmt_int(mem.peak_per_obj)})"
    if mem.used_net_per_obj is not None:
        text += f"; used {fmt_int(mem.used_net_per_obj)}"
    return text


def fmt_lat(lat: timing.Latency) -> str:
    return f"{lat.p50_us:.1f} / {lat.p99_us:.1f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def markdown_table(rows: list[Row]) -> str:
    head = ["#", "case", "unit", *(LABELS[lib] for lib in LIBS), "goal / note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [row.cells.get(lib, NA).text for lib in LIBS]
        lines.append("| " + " | ".join([row.key, row.case, row.unit, *cells, row.goal]) + " |")
    return "\n".join(lines)


# --- running one measurement -----------------------------------------------------------------


def attempt(lib: str, fn: Callable[[], Any], fmt: Callable[[Any], str]) -> Cell:
    """Run one measurement; failures become a table cell instead of aborting the run."""
    t0 = time.perf_counter()
    try:
        value = fn()
    except peers.PeerMissing:
        return Cell("not installed", {"error": "not installed"})
    except (ImportError, AttributeError) as exc:
        if lib == TRIO_AM:
            return Cell("unavailable", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    except Exception as exc:
        traceback.print_exc()
        return Cell(f"error: {type(exc).__name__}", {"error": f"{type(exc).__name__}: {exc}"})
    finally:
        log(f"  {LABELS[lib]}: {time.perf_counter() - t0:.1f}s")
    raw = value.as_dict() if hasattr(value, "as_dict") else value
    return Cell(fmt(value), raw)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- cases -----------------------------------------------------------------------------------


def case_toggle(cfg: Config) -> list[Row]:
    log("1. toggle")
    kw = {"target_s": cfg.target_s, "repeats": cfg.repeats}
    cells = {TRIO_AM: attempt(TRIO_AM, lambda: bench_core.toggle_rate(**kw), fmt_rate)}
    for peer in (peers.TRANSITIONS, peers.STATEMACHINE):
        cells[peer] = attempt(peer, lambda peer=peer: peers.toggle_rate(peer, **kw), fmt_rate)
    return [Row("1", "toggle 1 state, 1 final handler", "transitions/s", cells, toggle_goal(cells))]


def best_of(cell: Cell, key: str = "best") -> float | None:
    raw = cell.raw
    return raw.get(key) if isinstance(raw, dict) and key in raw else None


def toggle_goal(cells: dict[str, Cell]) -> str:
    ours, theirs = best_of(cells[TRIO_AM]), best_of(cells[peers.TRANSITIONS])
    parts = []
    if ours is not None and theirs:
        ratio = ours / theirs
        parts.append(f"{ratio:.2f}x pytransitions (goal >=3x: {verdict(ratio >= 3)})")
    else:
        parts.append("goal >=3x pytransitions")
    if ours is not None:
        parts.append(f"goal >=250,000/s: {verdict(ours >= GOAL_TOGGLE_RATE)}")
    else:
        parts.append("goal >=250,000/s")
    return "; ".join(parts)


def case_relations(cfg: Config) -> list[Row]:
    log("2. 20-state schema")
    rows = []
    for handlers, label in ((True, "4 handlers bound"), (False, "no handlers")):
        cell = attempt(
            TRIO_AM,
            lambda h=handlers: bench_core.relations_rate(
                target_s=cfg.target_s, repeats=cfg.repeats, handlers=h
            ),
            fmt_rate,
        )
        rows.append(
            Row(
                "2" if handlers else "2b",
                f"20-state schema, add/remove/set/toggle cycle ({label})",
                "mutations/s",
                {TRIO_AM: cell},
                f"{len(bench_core.CYCLE_20)} mutations per cycle, auto rounds not counted",
            )
        )
    return rows


def case_memory(cfg: Config) -> list[Row]:
    log(f"3. memory ({cfg.mem_count:,} machines)")
    n = cfg.mem_count
    cells = {TRIO_AM: attempt(TRIO_AM, lambda: bench_core.memory(n), fmt_mem)}
    for peer in (peers.TRANSITIONS, peers.STATEMACHINE):
        cells[peer] = attempt(peer, lambda peer=peer: peers.memory(peer, n), fmt_mem)
    return [
        Row(
            "3",
            f"memory, {n:,} machines of 10 states",
            "bytes/machine: net (peak); net after 1 mutation",
            cells,
            memory_goal(cells),
        )
    ]


def memory_goal(cells: dict[str, Cell]) -> str:
    ours = best_of(cells[TRIO_AM], "net_per_obj")
    peer_vals = {
        p: v
        for p in (peers.TRANSITIONS, peers.STATEMACHINE)
        if (v := best_of(cells[p], "net_per_obj")) is not None
    }
    if ours is None or not peer_vals:
        return "goal <= lighter peer"
    lighter = min(peer_vals, key=peer_vals.__getitem__)
    ratio = ours / peer_vals[lighter]
    return (
        f"{ratio:.2f}x {LABELS[lighter]} (goal <= lighter peer: "
        f"{verdict(ours <= peer_vals[lighter])})"
    )


def case_fork(cfg: Config) -> list[Row]:
    log("4. fork + cancel")
    rows = []
    variants = (
        (True, "4", "fork+cancel, each task started before remove1"),
        (False, "4b", "fork+cancel before the task's first turn (body skipped)"),
    )
    for wait_start, key, label in variants:
        cell = attempt(
            TRIO_AM,
            lambda w=wait_start: bench_core.fork_cancel_rate(
                target_s=cfg.target_s, repeats=cfg.repeats, wait_start=w
            ),
            lambda value: fmt_rate(value[0]),
        )
        note = (
            "cycles whose task started and got cancelled"
            if wait_start
            else "cycles whose task ended without running"
        )
        if isinstance(cell.raw, tuple):
            rate, ratio = cell.raw
            cell.raw = {**rate.as_dict(), "min_completed_ratio": ratio}
            note += f"; completed {ratio:.0%}"
        rows.append(Row(key, label, "cycles/s", {TRIO_AM: cell}, note))
    return rows


def case_when(cfg: Config) -> list[Row]:
    log("5. when1 latency")
    cell = attempt(TRIO_AM, lambda: bench_core.when1_latency(cfg.rounds), fmt_lat)
    base = attempt(TRIO_AM, lambda: bench_core.event_latency(cfg.rounds), fmt_lat)
    note = f"{cfg.rounds:,} rounds; bare trio.Event baseline {base.text} us"
    row = Row(
        "5", "when1 wake-up latency (add1 -> waiter runs)", "us, p50 / p99", {TRIO_AM: cell}, note
    )
    row.extra["trio_event_baseline"] = base.raw
    return [row]


def case_rpc_roundtrip(cfg: Config) -> list[Row]:
    log("6. aRPC round trip")
    rows = []
    for key, scheme in (("6", "tcp"), ("6b", "ws")):
        cell = attempt(
            TRIO_AM,
            lambda s=scheme: bench_rpc.roundtrip(cfg.rpc_rounds, s),
            lambda r: f"{r.p50_us:.0f} / {r.p99_us:.0f} (mean {r.mean_us:.0f})",
        )
        rows.append(
            Row(
                key,
                f"aRPC remote mutation round trip, loopback {scheme.upper()}",
                "us, p50 / p99 (mean)",
                {TRIO_AM: cell},
                f"{cfg.rpc_rounds:,} awaited add1_remote/remove1_remote('Foo'), alternating; "
                "server and client in one process",
            )
        )
    return rows


def case_rpc_push(cfg: Config) -> list[Row]:
    log("7. aRPC clock pushes")
    rows = []
    keys = iter("abcdef")
    for clients in (1, 10, 100):
        for interval in (0.0, 0.005):
            cell = attempt(
                TRIO_AM,
                lambda c=clients, i=interval: bench_rpc.push_rate(c, i, cfg.push_s),
                lambda r: f"{fmt_int(r.deltas_per_s)} (frames {fmt_int(r.frames_per_s)})",
            )
            note = "push_interval=" + (
                "0 (every change)" if interval == 0 else f"{interval} (the default)"
            )
            raw = cell.raw if isinstance(cell.raw, dict) and "toggles_per_s" in cell.raw else None
            if raw is not None:
                note += (
                    f"; source {fmt_int(raw['toggles_per_s'])} toggles/s; "
                    f"{fmt_int(raw['changes_per_s'])} state changes/s seen "
                    f"({raw['coverage']:.0%}); "
                    + ("all caught up" if raw["caught_up"] else "NOT caught up in 5 s")
                )
            rows.append(
                Row(
                    f"7{next(keys)}",
                    f"aRPC clock pushes to {clients} client{'s' if clients > 1 else ''} (TCP)",
                    "deltas/s summed over clients (frames/s)",
                    {TRIO_AM: cell},
                    note,
                )
            )
    return rows


def fmt_f3(r: Any) -> str:
    text = f"{r.us_per_iter:.0f} us; p50 {r.p50_us:.0f} / p99 {r.p99_us:.0f}"
    if r.bytes_per_iter is not None:
        text += f"; {r.bytes_per_iter:.1f} B, {r.frames_per_iter:.2f} frames"
    return text


def f3_note(cell: Cell, proxied: bool) -> str:
    raw = cell.raw
    if not isinstance(raw, dict) or "successes" not in raw:
        return f"goal <={GOAL_F3_BYTES} B/iteration and p50 <={GOAL_F3_P50_US} us"
    parts = [f"{raw['errors']} errors, {raw['successes']:,} successes"]
    if proxied:
        hs, loop = raw["handshake"], raw["loop"]
        per_kind = ", ".join(
            f"{k} {v / raw['n']:.2f}"
            for k, v in sorted({**loop["frames_up"], **loop["frames_down"]}.items())
        )
        parts.append(
            f"handshake {hs['bytes_up'] + hs['bytes_down']:,} B apart; frames/iteration: {per_kind}"
        )
        parts.append(
            f"goal <={GOAL_F3_BYTES} B/iteration: {verdict(raw['bytes_per_iter'] <= GOAL_F3_BYTES)}"
        )
    parts.append(f"goal p50 <={GOAL_F3_P50_US} us: {verdict(raw['p50_us'] <= GOAL_F3_P50_US)}")
    parts.append(f"Go: {GO_F3_US} us/op, ~{GO_F3_BYTES} B/op")
    return "; ".join(parts)


def case_rpc_f3(cfg: Config) -> list[Row]:
    log(f"8. aRPC F3 benchmark_grpc ({cfg.f3_n:,} iterations)")
    n = cfg.f3_n
    rows = []
    for key, proxied, label in (
        ("8", True, "TCP through FaultyProxy (bytes counted)"),
        ("8b", False, "TCP direct"),
    ):
        cell = attempt(TRIO_AM, lambda p=proxied: bench_rpc.f3(n, proxied=p), fmt_f3)
        rows.append(
            Row(
                key,
                f"aRPC F3 subscribe-get-process, {label}",
                "us/iteration; p50 / p99; bytes and frames per iteration",
                {TRIO_AM: cell},
                f"{n:,} iterations; " + f3_note(cell, proxied),
            )
        )
    local = attempt(
        TRIO_AM, lambda: bench_rpc.f3_local(max(n, 20_000)), lambda r: f"{r.us_per_iter:.1f} us"
    )
    rows.append(
        Row(
            "8c",
            "F3 loop on the worker machine itself (no aRPC)",
            "us/iteration",
            {TRIO_AM: local},
            "5 transitions per iteration, 4 of them queued by handlers; Go: 0.43 us",
        )
    )
    return rows


def _overhead_rows(key: str, what: str, figures: dict[str, Any], goal: float | None) -> list[Row]:
    rows = []
    labels = {"toggle": "toggle 1 state", "cycle20": "20-state cycle"}
    for i, (kind, fig) in enumerate(figures.items()):
        bare, bound = fig["bare"], fig["bound"]
        slow = fig["slowdown"]
        text = (
            f"{fmt_int(bound['best'])} vs {fmt_int(bare['best'])} bare ({slow * 100:.0f}% slower)"
        )
        note = ""
        rep = fig.get("reporter") or {}
        if goal is not None:
            # a reporter that keeps up only by dropping records does not meet the goal
            lossless = not rep.get("dropped")
            ok = slow <= goal and lossless
            note = f"goal <= {goal * 100:.0f}% slower, nothing dropped: {verdict(ok)}"
        if rep:
            note += f"; records sent {rep.get('sent', '?'):,}, dropped {rep.get('dropped', '?'):,}"
        rows.append(
            Row(
                f"{key}{'' if i == 0 else chr(ord('a') + i)}",
                f"{what}, {labels.get(kind, kind)}",
                "transitions/s (with / bare)",
                {TRIO_AM: Cell(text, fig), peers.TRANSITIONS: NA, peers.STATEMACHINE: NA},
                note.lstrip("; "),
            )
        )
    return rows


def case_reporter(cfg: Config) -> list[Row]:
    log("9. debugger reporter overhead")
    kw = {"target_s": cfg.target_s, "repeats": cfg.repeats}
    try:
        figures = bench_telemetry.reporter_overhead(**kw)
    except Exception as exc:
        traceback.print_exc()
        return [Row("9", "debugger reporter overhead", "", {TRIO_AM: Cell(f"failed: {exc}")})]
    return _overhead_rows(
        "9", "debugger reporter (live headless trio-am-dbg)", figures, GOAL_REPORTER_SLOWDOWN
    )


def case_otel(cfg: Config) -> list[Row]:
    log("10. OpenTelemetry tracer overhead")
    kw = {"target_s": cfg.target_s, "repeats": cfg.repeats}
    try:
        figures = bench_telemetry.otel_overhead(**kw)
    except Exception as exc:
        traceback.print_exc()
        return [Row("10", "OTel tracer overhead", "", {TRIO_AM: Cell(f"failed: {exc}")})]
    return _overhead_rows("10", "OTel tracer (transitions=True, batch exporter)", figures, None)


def case_relay(cfg: Config) -> list[Row]:
    log("11. relay round trips")
    try:
        fig = bench_relay.relay_overhead(cfg.rpc_rounds, repeats=min(cfg.repeats, 3))
    except Exception as exc:
        traceback.print_exc()
        return [Row("11", "relay round trips", "", {TRIO_AM: Cell(f"failed: {exc}")})]
    modes = fig["modes"]

    def cell(mode: str) -> str:
        r = modes[mode]
        return f"{r['per_s']:,.0f}/s, p50 {r['p50_us']:.0f} us, mean {r['mean_us']:.0f} us"

    rows = [
        Row(
            "11",
            "round trips, client -> trio-am-relay (own process) -> TCP server",
            "round trips/s, latency",
            {TRIO_AM: Cell(cell("relay"), fig)},
            f"goal: relay adds <= {GOAL_RELAY_ADDED * 100:.0f}%: {verdict(fig['added_vs_ws'] <= GOAL_RELAY_ADDED)}"
            f" (adds {fig['added_vs_ws'] * 100:.0f}% vs direct WS, "
            f"{fig['added_vs_tcp'] * 100:.0f}% vs direct TCP)",
        ),
        Row(
            "11a",
            "round trips, client -> relay in the same process -> TCP server",
            "round trips/s, latency",
            {TRIO_AM: Cell(cell("relay-inproc"))},
            f"adds {fig['inproc_added_vs_ws'] * 100:.0f}% vs direct WS",
        ),
        Row(
            "11b",
            "round trips, the same client, direct WS",
            "round trips/s, latency",
            {TRIO_AM: Cell(cell("direct-ws"))},
        ),
        Row(
            "11c",
            "round trips, the same client, direct TCP",
            "round trips/s, latency",
            {TRIO_AM: Cell(cell("direct-tcp"))},
        ),
    ]
    return rows


CASES: dict[str, Callable[[Config], list[Row]]] = {
    "1": case_toggle,
    "2": case_relations,
    "3": case_memory,
    "4": case_fork,
    "5": case_when,
    "6": case_rpc_roundtrip,
    "7": case_rpc_push,
    "8": case_rpc_f3,
    "9": case_reporter,
    "10": case_otel,
    "11": case_relay,
}


# --- report ----------------------------------------------------------------------------------


def environment(quick: bool) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "mode": "quick" if quick else "full",
        "versions": {
            TRIO_AM: trio_am_version(),
            **{LABELS[p]: peers.version(p) or "not installed" for p in LIBS[1:]},
        },
    }


def trio_am_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trio_am")
    except PackageNotFoundError:
        return "source checkout"


def header(env: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return (
        f"## trio_am benchmarks ({env['mode']} run)\n\n"
        f"{env['implementation']} {env['python']} on {env['platform']}, {env['cpus']} CPUs; "
        f"{versions}.\n"
        "Rates are best (median) of several repeats; GC enabled; time.perf_counter."
    )


def to_json(rows: list[Row], env: dict[str, Any], elapsed: float) -> dict[str, Any]:
    return {
        "environment": env,
        "elapsed_s": elapsed,
        "results": [
            {
                "key": row.key,
                "case": row.case,
                "unit": row.unit,
                "goal": row.goal,
                "figures": {LABELS[lib]: cell.raw for lib, cell in row.cells.items()},
                **row.extra,
            }
            for row in rows
        ],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke run")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write raw figures")
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated case numbers (default: all)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    selected = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in selected if c not in CASES]
    if unknown:
        log(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(CASES)}")
        return 2
    t0 = time.perf_counter()
    rows = [row for key in selected for row in CASES[key](cfg)]
    elapsed = time.perf_counter() - t0
    env = environment(args.quick)
    print(header(env), end="\n\n")
    print(markdown_table(rows))
    print(f"\nMeasured in {elapsed:.1f}s.")
    if args.json:
        args.json.write_text(json.dumps(to_json(rows, env, elapsed), indent=2) + "\n")
        log(f"raw figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
