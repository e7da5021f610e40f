"""The REPL in process: commands against machines served with ``serve_repl``.

Each test serves a few machines on loopback TCP, opens a REPL client (``open_repl``)
writing to string buffers, runs command lines and checks the ``=> …`` / ``err> …`` lines
and the machines' states. Waits are on states and clocks, under ``trio.fail_after``.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_am as am
from trio_am.repl import (
    COMMANDS,
    AddrSource,
    Repl,
    ReplError,
    open_repl,
    serve_repl,
)
from trio_am.telemetry import DbgReporter

SCHEMA: dict[str, Any] = {
    "Start": {},
    "Foo": {},
    "Bar": {"require": ["Foo"]},
    "Hits": {"multi": True},
    "Ready": {"require": ["Start"]},
}

WAIT = 10.0


class Recorder:
    """Handlers that keep the args of every ``Foo`` activation."""

    def __init__(self) -> None:
        self.args: list[dict[str, Any]] = []

    def Foo_state(self, e: am.Event) -> None:
        self.args.append(dict(e.args))


@asynccontextmanager
async def served(
    *ids: str, addr_dir: Path | None = None, parent: str | None = None
) -> AsyncIterator[tuple[list[am.Machine], list[str]]]:
    """Machines ``ids`` (Start active), each served for the REPL."""
    async with AsyncExitStack() as stack:
        machs: list[am.Machine] = []
        urls: list[str] = []
        for mid in ids:
            m = await stack.enter_async_context(
                am.open_machine(SCHEMA, id=mid, parent=parent, handlers=Recorder())
            )
            m.add1("Start")
            rs = await stack.enter_async_context(serve_repl(m, addr_dir=addr_dir))
            machs.append(m)
            urls.append(rs.url)
        yield machs, urls


async def run_server(
    mach: am.Machine, addr: str = "127.0.0.1:0", *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``mach`` in a task of its own: ``(ReplServer, CancelScope)`` to stop it."""
    with trio.CancelScope() as scope:
        async with serve_repl(mach, addr) as rs:
            task_status.started((rs, scope))
            await trio.sleep_forever()


class Session:
    """A REPL client with captured output."""

    def __init__(self, repl: Repl, out: io.StringIO, err: io.StringIO) -> None:
        self.repl = repl
        self._out = out
        self._err = err

    def take(self) -> tuple[list[str], list[str]]:
        out, err = self._out.getvalue().splitlines(), self._err.getvalue().splitlines()
        for buf in (self._out, self._err):
            buf.seek(0)
            buf.truncate()
        return out, err

    async def run(self, line: str) -> tuple[bool, list[str], list[str]]:
        self.take()
        with trio.fail_after(WAIT):
            ok = await self.repl.execute(line)
        out, err = self.take()
        return ok, out, err

    async def ok(self, line: str) -> list[str]:
        ok, out, err = await self.run(line)
        assert ok, (line, out, err)
        assert err == [], err
        return out

    async def fails(self, line: str) -> list[str]:
        ok, out, err = await self.run(line)
        assert not ok, (line, out, err)
        return out + err


@asynccontextmanager
async def session(targets: list[Any], **kw: Any) -> AsyncIterator[Session]:
    out, err = io.StringIO(), io.StringIO()
    kw.setdefault("reconnect", am.rpc.Backoff(initial=0.05, max=0.2, max_elapsed=30))
    async with open_repl(targets, out=out, err=err, **kw) as repl:
        with trio.fail_after(WAIT):
            await repl.wait_settled()
        yield Session(repl, out, err)


# ------------------------------------------------------------------------ checking
async def test_list_numbers_machines_and_shows_connection_and_states() -> None:
    async with served("rp-1", "rp-2") as (machs, urls), session(urls) as s:
        machs[1].add1("Foo")
        await s.repl.conns[1].client.mach.when1("Foo")  # type: ignore[union-attr]
        assert await s.ok("list") == [
            "=> 1. rp-1 t1",
            "=>    CS: (Start:1)",
            "=> 2. rp-2 t2",
            "=>    CS: (Start:1 Foo:1)",
        ]
        out = await s.ok("list -Z")
        assert "=>    CS: (Start:1) [Foo:0 Bar:0 Hits:0 Ready:0 Exception:0]" in out
        assert await s.ok("list --no-states") == [
            "=> 1. rp-1 t1",
            "=>    CS:",
            "=> 2. rp-2 t2",
            "=>    CS:",
        ]
        machs[0].add1("Ready")
        await s.repl.conns[0].client.mach.when1("Ready")  # type: ignore[union-attr]
        assert "=>    CR: (Start:1 Ready:1)" in await s.ok("list")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("-p rp-", ["rp-1", "rp-2", "rp-3"]),
        ("-p zz", []),
        ("-s -2", ["rp-2"]),
        ("-I p-3", ["rp-3"]),
        ("-r '^rp-[13]$'", ["rp-1", "rp-3"]),
        ("-a Foo", ["rp-2", "rp-3"]),
        ("-a Foo -a Bar", ["rp-3"]),
        ("-i Foo", ["rp-1"]),
        ("-a Nope", []),
        ("-i Nope", []),
        ("-t 3", ["rp-3"]),
        ("-t 2 -T 2", ["rp-2"]),
        ("-T 1", ["rp-1"]),
        ("-m Foo -t 1", ["rp-2", "rp-3"]),
        ("-m Start -T 1", ["rp-1", "rp-2", "rp-3"]),
        ("-l 2", ["rp-1", "rp-2"]),
        ("-f 1", ["rp-2", "rp-3"]),
        ("-f 1 -l 1", ["rp-2"]),
        ("-f 5", []),
        ("-a Foo -l 1", ["rp-2"]),
    ],
)
async def test_list_filters(flags: str, expected: list[str]) -> None:
    async with served("rp-1", "rp-2", "rp-3") as (machs, urls), session(urls) as s:
        machs[1].add1("Foo")
        machs[2].add(["Foo", "Bar"])
        for c, state in ((s.repl.conns[1], "Foo"), (s.repl.conns[2], "Bar")):
            with trio.fail_after(WAIT):
                await c.client.mach.when1(state)  # type: ignore[union-attr]
        out = await s.ok(f"list {flags}")
        ids = [m.group(1) for m in (re.match(r"=> \d+\. (\S+) t\d+$", x) for x in out) if m]
        assert ids == expected
        if not expected:
            assert out == ["=> no machines match"]


async def test_parent_filter_and_bad_filters() -> None:
    async with (
        served("kid-1", "kid-2", parent="boss") as (_, kids),
        served("other") as (_, others),
        session(kids + others) as s,
    ):
        out = await s.ok("list -P boss --no-states")
        assert out == ["=> 1. kid-1 t1", "=>    CS:", "=> 2. kid-2 t1", "=>    CS:"]
        err = await s.fails("list -r '('")
        assert err[0].startswith("err> bad filter:")
        assert (await s.fails("list -l 0"))[0].startswith("err> list: argument -l/--limit")
        assert (await s.fails("list -t x"))[0].startswith("err> list: argument -t/--mtime-min")
        assert "err> list: argument -T/--mtime-max: must be >= 0, got -1" in await s.fails(
            "list -T -1"
        )


async def test_mach_time_inspect() -> None:
    async with served("m1") as (machs, urls), session(urls) as s:
        m = machs[0]
        m.add(["Foo", "Bar"])
        m.add1("Hits")
        m.add1("Hits")
        mirror = s.repl.conns[0].client.mach  # type: ignore[union-attr]
        with trio.fail_after(WAIT):
            await mirror.when_time1("Hits", 3)
        assert await s.ok("mach m1") == ["=> (Start:1 Foo:1 Bar:1 Hits:3)"]
        assert await s.ok("mach m1 --all") == [
            "=> (Start:1 Foo:1 Bar:1 Hits:3) [Ready:0 Exception:0]"
        ]
        assert await s.ok("mach .") == ["=> (Start:1 Foo:1 Bar:1 Hits:3)"]
        assert await s.ok("mach") == ["=> (Start:1 Foo:1 Bar:1 Hits:3)"]  # the only one
        assert await s.ok("time m1") == ["=> [1 1 1 3 0 0]"]
        assert await s.ok("time m1 Hits Foo") == ["=> [3 1]"]
        assert await s.ok("time m1 --sum") == ["=> 6"]
        out = await s.ok("inspect m1 Bar")
        assert out == [
            "=> mach://m1",
            "=>",
            "=> 1 Bar",
            "=>     |Tick     1",
            "=>     |Require  Foo",
        ]
        assert (await s.ok("inspect m1"))[2:4] == ["=> 1 Start", "=>     |Tick     1"]


# ------------------------------------------------------------------------ mutations
async def test_add_remove_set_and_results() -> None:
    async with served("m1", "m2") as (machs, urls), session(urls) as s:
        m1 = machs[0]
        assert await s.fails("add m1 Bar") == ["=> Canceled"]
        assert not m1.is1("Bar")
        assert await s.ok("add m1 Foo Bar") == []  # executed: nothing printed
        assert m1.string() == "(Start:1 Foo:1 Bar:1)"
        assert await s.ok("remove m1 Foo") == []
        assert m1.string() == "(Start:1)"  # Bar required Foo
        assert await s.ok("set m1 Foo Hits") == []
        assert m1.active_states() == ["Foo", "Hits"]
        assert await s.ok("add . Hits") == []  # . = the first connected machine
        assert m1.tick("Hits") == 3
        assert machs[1].tick("Hits") == 0


async def test_mutation_args_reach_the_handlers() -> None:
    async with served("m1") as (machs, urls), session(urls) as s:
        rec = Recorder()
        machs[0].bind_handlers(rec)
        await s.ok("add m1 Foo --arg name --val v1 --arg n --val 2")
        assert rec.args[-1] == {"name": "v1", "n": "2"}
        err = await s.fails("add m1 Foo --arg name")
        assert err == [
            "err> 1 --arg but 0 --val: give them in pairs",
            "err> usage: add MACH STATES... [--arg NAME --val VALUE]...",
        ]
        assert (await s.fails("add m1 Foo --arg a --val 1 --arg a --val 2"))[0] == (
            "err> --arg a given twice"
        )
        assert len(rec.args) == 1


async def test_machine_can_be_left_out_only_when_it_is_the_only_one() -> None:
    async with served("solo") as (machs, urls), session(urls) as s:
        assert await s.ok("add Foo") == []
        assert machs[0].is1("Foo")
        assert await s.ok("mach") == ["=> (Start:1 Foo:1)"]
    async with served("a", "b") as (_, urls), session(urls) as s:
        assert (await s.fails("add Foo"))[0] == "err> unknown machine 'Foo' (known: a, b)"
        assert (await s.fails("mach"))[0] == "err> which machine? (known: a, b)"


async def test_unknown_machine_state_and_command() -> None:
    async with served("m1", "m2") as (_, urls), session(urls) as s:
        assert (await s.fails("mach nope"))[0] == "err> unknown machine 'nope' (known: m1, m2)"
        assert (await s.fails("add m1 Nope Foo Zip"))[0] == (
            "err> unknown states Nope, Zip in m1 (has: Start, Foo, Bar, Hits, Ready, Exception)"
        )
        assert (await s.fails("when m1 Nope"))[0].startswith("err> unknown state Nope in m1")
        assert (await s.fails("add m1"))[0] == "err> no states given"
        assert await s.fails("mach m1 m2") == [
            "err> mach takes one machine, not m2",
            "err> usage: mach MACH [--all]",
        ]
        assert (await s.fails("ad m1 Foo"))[0] == "err> unknown command 'ad'; did you mean 'add'?"
        assert (await s.fails("zzz"))[0] == "err> unknown command 'zzz' (help lists the commands)"
        assert (await s.fails("add m1 'Foo"))[0].startswith("err> cannot parse the line:")
        assert (await s.fails("mach m1 --bogus"))[0] == "err> mach: unrecognized arguments: --bogus"
        assert await s.ok("   ") == []
        assert await s.ok("# a comment") == []


async def test_group_add_and_remove() -> None:
    async with (
        served("w-1", "w-2", "w-3") as (ws, wurls),
        served("other") as (others, ourls),
        session(wurls + ourls) as s,
    ):
        assert await s.ok("group-add -p w- Foo") == [
            "=> Executed:  3",
            "=> Queued:    0",
            "=> Canceled:  0",
        ]
        assert all(w.is1("Foo") for w in ws) and not others[0].is1("Foo")
        out = await s.ok("group-remove -r '^w-[12]$' Foo --arg why --val test")
        assert out[0] == "=> Executed:  2"
        assert [w.is1("Foo") for w in ws] == [False, False, True]
        # Bar requires Foo: canceled on two, executed on one; the exit status says so
        out = await s.fails("group-add -p w- Bar")
        assert out[:3] == ["=> Executed:  1", "=> Queued:    0", "=> Canceled:  2"]
        assert (await s.fails("group-add -p zz Foo"))[0] == "err> no connected machine matches"
        assert (await s.fails("group-add -p w-"))[0] == "err> no states given"


async def test_group_mutation_skips_machines_without_the_states() -> None:
    async with AsyncExitStack() as stack:
        plain = await stack.enter_async_context(am.open_machine({"Start": {}}, id="plain"))
        rs = await stack.enter_async_context(serve_repl(plain))
        _, urls = await stack.enter_async_context(served("full"))
        s = await stack.enter_async_context(session([rs.url, *urls]))
        assert (await s.ok("group-add Foo"))[0] == "=> Executed:  1"
        assert (await s.fails("group-add -p plain Foo"))[0] == (
            "err> none of the 1 matching machines has all of Foo"
        )


# ------------------------------------------------------------------------ waiting
async def test_when_when_not_when_time_print_ticks() -> None:
    async with served("m1") as (machs, urls), session(urls) as s:
        m = machs[0]
        async with trio.open_nursery() as nursery:
            results: dict[str, Any] = {}

            async def run(key: str, line: str) -> None:
                results[key] = await s.repl.execute(line)

            nursery.start_soon(run, "when", "when m1 Foo Bar")
            await s.repl.mach.when1("CmdRunning")
            await trio.testing.wait_all_tasks_blocked()
            assert "when" not in results
            m.add(["Foo", "Bar"])
        assert results["when"] is True
        assert s.take()[0] == ["=> 1 1"]
        assert await s.ok("when m1 Foo") == ["=> 1"]  # already active: at once
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "not", "when-not m1 Foo")
            await s.repl.mach.when1("CmdRunning")
            await trio.testing.wait_all_tasks_blocked()
            m.remove1("Foo")
        assert s.take()[0] == ["=> 2"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "time", "when-time m1 -s Hits -t 2 -s Foo -t 3")
            await s.repl.mach.when1("CmdRunning")
            for _ in range(2):
                await trio.testing.wait_all_tasks_blocked()
                m.add1("Hits")
            m.add1("Foo")
        assert results["time"] is True
        assert s.take()[0] == ["=> [3 3]"]  # a multi state ticks by 2 once active


async def test_waiting_errors() -> None:
    async with served("m1") as (_, urls), session(urls) as s:
        assert (await s.fails("when m1 Foo --timeout 0.05"))[0] == (
            "err> timed out after 0.05s waiting for m1 Foo"
        )
        assert (await s.fails("when m1 Foo --timeout 0"))[0].startswith("err> when: argument")
        assert (await s.fails("when-time m1 -s Foo"))[0] == (
            "err> 1 states (-s) but 0 ticks (-t): give them in pairs"
        )
        assert (await s.fails("when-time m1"))[0] == "err> no states (-s STATE -t TICK)"
        assert (await s.fails("when-time m1 -s Foo -t -3"))[0].startswith("err> when-time:")
        assert (await s.fails("when-time m1 Foo -s Foo -t 1"))[0] == (
            "err> unexpected Foo (states go with -s)"
        )


async def test_when_fails_when_the_server_goes_away() -> None:
    async with am.open_machine(SCHEMA, id="gone") as m, trio.open_nursery() as servers:
        rs, stop = await servers.start(run_server, m)
        async with session([rs.url]) as s:
            results: list[tuple[bool, list[str], list[str]]] = []
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    results.append(await s.run("when gone Foo"))

                nursery.start_soon(run)
                await s.repl.mach.when1("CmdRunning")
                await trio.testing.wait_all_tasks_blocked()
                stop.cancel()
            ok, _out, err = results[0]
            assert not ok
            assert err == ["err> gone: disconnected while waiting for gone Foo"]


async def test_watch_prints_each_change() -> None:
    async with served("m1") as (machs, urls), session(urls) as s:
        m = machs[0]
        done: list[bool] = []
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                done.append(await s.repl.execute("watch m1 Foo -n 2"))

            nursery.start_soon(run)
            await s.repl.mach.when1("CmdRunning")
            await trio.testing.wait_all_tasks_blocked()
            m.add1("Hits")  # not watched
            m.add1("Foo")
            mirror = s.repl.conns[0].client.mach  # type: ignore[union-attr]
            await mirror.when1("Foo")
            await trio.testing.wait_all_tasks_blocked()
            m.remove1("Foo")
        assert done == [True]
        assert s.take()[0] == ["=> (Start:1)", "=> (Start:1 Foo:1 Hits:1)", "=> (Start:1 Hits:1)"]
        # a timeout ends watching without a count normally
        assert await s.ok("watch m1 --timeout 0.05") == ["=> (Start:1 Hits:1)"]


# ------------------------------------------------------------------------ connections
async def test_status_with_a_dead_address_and_partial_states() -> None:
    no_retry = am.rpc.Backoff(max_elapsed=0)  # (a redial would count as Connecting)
    async with (
        served("live") as (_, urls),
        session([*urls, "127.0.0.1:1"], reconnect=no_retry) as s,
    ):
        assert await s.ok("status") == [
            "=> Connected:      1",
            "=> Connecting:     0",
            "=> Disconnected:   1",
            "=> Total:          2",
        ]
        assert s.repl.mach.is1("Connected") and not s.repl.mach.is1("ConnectedFully")
        dead = s.repl.conns[1]
        assert "127.0.0.1:1" in dead.why()


async def test_repl_machine_follows_connections() -> None:
    async with (
        am.open_machine(SCHEMA, id="a") as m1,
        am.open_machine(SCHEMA, id="b") as m2,
        trio.open_nursery() as servers,
    ):
        rs1, _ = await servers.start(run_server, m1)
        rs2, stop2 = await servers.start(run_server, m2)
        async with session([rs1.url, rs2.url]) as s:
            rm = s.repl.mach
            assert rm.is1("Connected") and rm.is1("ConnectedFully")
            assert rm.tick("RpcConn") == 3  # a multi state: +1, then +2 a time
            stop2.cancel()
            with trio.fail_after(WAIT):
                await rm.when_not1("ConnectedFully")
            assert rm.is1("Connected")
            assert await s.ok("list") == [
                "=> 1. a t0",
                "=>    C: ()",
                "=> 2. b t0",
                "=>    D: ()",
            ]
            assert (await s.fails("add b Foo"))[0] == "err> machine 'b' is disconnected"
            assert await s.ok("mach b") == ["=> ()"]  # the last known states
            assert await s.ok("list --no-disconn --no-states") == ["=> 1. a t0", "=>    C:"]
        servers.cancel_scope.cancel()


async def test_connect_adds_an_address_and_reconnects() -> None:
    async with served("first", "second") as (_, urls), session(urls[:1]) as s:
        out = await s.ok(f"connect {urls[1]}")
        assert out[0] == "=> added 1 address"
        assert "=> Connected:      2" in out
        assert await s.ok("mach second") == ["=> (Start:1)"]
        assert (await s.ok("connect"))[0] == "=> reconnecting 0 addresses"
        assert (await s.fails("connect nope"))[0].startswith("err> bad address 'nope'")


async def test_connect_retries_a_machine_that_came_back() -> None:
    async with am.open_machine(SCHEMA, id="late") as m, trio.open_nursery() as servers:
        m.add1("Start")
        holder = trio.socket.socket()
        await holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        holder.close()
        no_retry = am.rpc.Backoff(max_elapsed=0)
        async with session([f"127.0.0.1:{port}"], reconnect=no_retry) as s:
            assert s.repl.status().connected == 0
            await servers.start(run_server, m, f"127.0.0.1:{port}")
            out = await s.ok("connect")
            assert out[:2] == ["=> reconnecting 1 address", "=> Connected:      1"]
            assert await s.ok("mach late") == ["=> (Start:1)"]
        servers.cancel_scope.cancel()


async def test_watched_directory_follows_machines(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(served("d-1", addr_dir=tmp_path))
        s = await stack.enter_async_context(
            session([AddrSource("dir", str(tmp_path))], watch=True, watch_interval=0.02)
        )
        rm = s.repl.mach
        assert rm.is1("Watching")
        assert [c.machine_id for c in s.repl.conns] == ["d-1"]
        later = AsyncExitStack()
        await later.enter_async_context(served("d-2", addr_dir=tmp_path))
        with trio.fail_after(WAIT):
            await rm.when_ticks("AddrChanged", 1)
            await rm.when1("ConnectedFully")
            while s.repl.status().connected < 2:
                await rm.when_ticks("RpcConn", 1)
        assert await s.ok("list --no-states -s -2") == ["=> 1. d-2 t1", "=>    CS:"]
        await later.aclose()  # d-2 stops and removes its address file
        assert sorted(p.name for p in tmp_path.iterdir()) == ["d-1-repl.addr"]
        with trio.fail_after(WAIT):
            while len(s.repl.conns) != 1:
                await rm.when_ticks("AddrChanged", 1)
        assert await s.ok("status") == [
            "=> Connected:      1",
            "=> Connecting:     0",
            "=> Disconnected:   0",
            "=> Total:          1",
        ]


# ------------------------------------------------------------------------ housekeeping
async def test_script_runs_lines_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    script = tmp_path / "s.repl"
    script.write_text("# setup\nadd m1 Foo\n\nmach m1\nadd m1 Nope\nmach m1\n")
    async with served("m1") as (_, urls), session(urls) as s:
        ok, out, err = await s.run(f"script {script}")
        assert not ok
        assert out == ["=> (Start:1 Foo:1)"]
        assert err[0].startswith("err> unknown state Nope in m1")
        assert err[1] == f"err> script stopped at {script}:5: add m1 Nope"
        assert (await s.fails(f"script {tmp_path / 'missing'}"))[0].startswith("err> no such file:")
        loop = tmp_path / "loop.repl"
        loop.write_text(f"script {loop}\n")
        assert "err> scripts nested deeper than 8" in await s.fails(f"script {loop}")
        good = tmp_path / "good.repl"
        good.write_text("remove m1 Foo\nexit\nadd m1 Foo\n")
        assert await s.ok(f"script {good}") == []
        assert s.repl.exit_requested


async def test_help_cheatsheet_exit() -> None:
    async with served("m1") as (_, urls), session(urls) as s:
        out = await s.ok("help")
        text = "\n".join(out)
        for name in COMMANDS:
            assert f"  {name} " in text
        for group in ("Mutations", "Waiting", "Checking", "REPL"):
            assert group in out
        out = await s.ok("help when-time")
        assert out[0].startswith("usage: when-time MACH -s STATE -t TICK")
        assert (await s.ok("add -h"))[0].startswith("usage: add MACH STATES...")
        assert any("group-add -r" in x for x in await s.ok("cheatsheet"))
        assert (await s.fails("help nope"))[
            0
        ] == "err> unknown command 'nope' (help lists the commands)"
        assert not s.repl.exit_requested
        assert await s.ok("exit") == []
        assert s.repl.exit_requested


async def test_colored_marks() -> None:
    async with served("m1") as (_, urls), session(urls, color=True) as s:
        assert await s.ok("mach m1") == ["\x1b[90m=>\x1b[0m (Start:1)"]
        assert (await s.fails("add m1 Nope"))[0].startswith("\x1b[31merr>\x1b[0m unknown state")


async def test_the_repl_reports_to_the_debugger(tmp_path: Path) -> None:
    addr = f"file:{tmp_path / 'repl.amdbg'}"
    async with served("m1") as (_, urls), session(urls, dbg_addr=addr) as s:
        await s.ok("add m1 Foo")
        client = s.repl.conns[0].client
        assert client is not None
        for mach in (s.repl.mach, client.rpc):
            reporters = [t for t in mach.tracers if isinstance(t, DbgReporter)]
            assert [r.addr for r in reporters] == [addr], mach.id


async def test_not_connected_and_no_addresses() -> None:
    async with session(["127.0.0.1:1"]) as s:
        assert (await s.fails("mach ."))[0] == "err> not connected"
        assert (await s.fails("add . Foo"))[0] == "err> not connected"
        assert await s.ok("list") == ["=> no machines match"]  # never connected
    async with session([], allow_empty=True) as s:
        assert (await s.fails("mach ."))[0].startswith("err> no machine addresses")
        assert await s.ok("list") == ["=> no machines"]


async def test_open_repl_refuses_bad_targets(tmp_path: Path) -> None:
    with pytest.raises(ReplError, match="bad address 'host-only'"):
        async with open_repl(["host-only"]):
            pass  # pragma: no cover
    with pytest.raises(ReplError, match=r"no addresses found in .*"):
        async with open_repl([AddrSource("dir", str(tmp_path))]):
            pass  # pragma: no cover
    with pytest.raises(ReplError, match="no such file"):
        async with open_repl([AddrSource("file", str(tmp_path / "x.addr"))]):
            pass  # pragma: no cover
    with pytest.raises(ReplError, match="no addresses given"):
        async with open_repl([]):
            pass  # pragma: no cover
    with pytest.raises(ReplError, match="bad debugger address"):
        async with open_repl(["127.0.0.1:1"], dbg_addr="nowhere"):
            pass  # pragma: no cover
