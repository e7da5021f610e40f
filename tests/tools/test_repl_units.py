"""REPL parts that need no client: addresses and address files, ``serve_repl``,
``bind_env_repl`` (the ``AM_REPL_*`` switches), the filters (with Hypothesis
properties) and completion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trio_am as am
from trio_am.repl import (
    AddrSource,
    CompletionContext,
    ListFilters,
    MachSnapshot,
    ReplError,
    addr_file_name,
    bind_env_repl,
    complete,
    normalize_url,
    parse_repl_env,
    read_addr_dir,
    read_addr_file,
    serve_repl,
)
from trio_am.telemetry.env import EnvBindings

# ------------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    ("addr", "url"),
    [
        ("localhost:7001", "tcp://localhost:7001"),
        (" 127.0.0.1:80 ", "tcp://127.0.0.1:80"),
        ("[::1]:7001", "tcp://[::1]:7001"),
        ("tcp://h:1", "tcp://h:1"),
        ("ws://h:8080/rpc", "ws://h:8080/rpc"),
        ("wss://example.org", "wss://example.org"),
    ],
)
def test_normalize_url(addr: str, url: str) -> None:
    assert normalize_url(addr) == url


@pytest.mark.parametrize(
    ("addr", "why"),
    [
        ("", "empty"),
        ("localhost", "needs a port"),
        ("h:port", "invalid port"),
        ("h:70000", "invalid port"),
        ("http://h:1", "scheme must be"),
        ("tcp://h:1/x", "no path"),
        ("h:0", "port 0 cannot be dialed"),
    ],
)
def test_normalize_url_refuses(addr: str, why: str) -> None:
    with pytest.raises(ReplError, match=why):
        normalize_url(addr)


def test_port_0_is_fine_to_listen_on() -> None:
    assert normalize_url("127.0.0.1:0", listen=True) == "tcp://127.0.0.1:0"


def test_addr_files_and_dirs(tmp_path: Path) -> None:
    assert addr_file_name("rp-1") == "rp-1-repl.addr"
    assert addr_file_name("a/b c") == "a_b_c-repl.addr"
    assert addr_file_name("..") == "machine-repl.addr"
    f = tmp_path / "m.addr"
    f.write_text("# two machines\nlocalhost:1\n\n  ws://h:2  \n")
    assert read_addr_file(f) == ["tcp://localhost:1", "ws://h:2"]
    (tmp_path / "bad.addr").write_text("localhost:1\nnonsense\n")
    (tmp_path / "z.addr").write_text("h:3")
    (tmp_path / "notes.txt").write_text("h:4")
    (tmp_path / "sub.addr").mkdir()
    problems: list[str] = []
    assert read_addr_dir(tmp_path, problems) == ["tcp://localhost:1", "ws://h:2", "tcp://h:3"]
    assert problems == [
        "bad.addr:2: bad address 'nonsense': URL 'tcp://nonsense' needs a port "
        "(expected host:port or a URL)"
    ]
    empty = tmp_path / "empty.addr"
    empty.write_text("# nothing\n")
    with pytest.raises(ReplError, match="holds no address"):
        read_addr_file(empty)
    with pytest.raises(ReplError, match="is a directory"):
        read_addr_file(tmp_path)
    with pytest.raises(ReplError, match="not a directory"):
        read_addr_dir(f)
    with pytest.raises(ReplError, match="no such directory"):
        read_addr_dir(tmp_path / "nope")
    with pytest.raises(ReplError, match="bad.addr:2"):
        read_addr_file(tmp_path / "bad.addr")
    assert AddrSource("addr", "h:1").read() == ["tcp://h:1"]
    assert not AddrSource("addr", "h:1").watchable and AddrSource("dir", ".").watchable
    with pytest.raises(ValueError):
        AddrSource("url", "x")


# ------------------------------------------------------------------------ serving


async def test_serve_repl_writes_and_removes_the_address_file(tmp_path: Path) -> None:
    d = tmp_path / "new" / "dir"
    async with am.open_machine({"Foo": {}}, id="svc") as mach:
        async with serve_repl(mach, addr_dir=d) as rs:
            path = d / "svc-repl.addr"
            assert rs.addr_file == path
            assert rs.url.startswith("tcp://127.0.0.1:") and not rs.url.endswith(":0")
            assert path.read_text() == rs.url + "\n"
            assert [p.name for p in d.iterdir()] == ["svc-repl.addr"]  # no temp file left
            assert rs.server.rpc.id == "rs-repl-svc"
            async with am.rpc.connect(rs.url, id="c") as client:
                await client.rpc.when1("Ready")
                assert await client.mach.add1_remote("Foo") == am.Result.EXECUTED
        assert not path.exists()
        # a file another server rewrote meanwhile stays
        async with serve_repl(mach, addr_dir=d) as rs:
            path.write_text("tcp://elsewhere:1\n")
        assert path.read_text() == "tcp://elsewhere:1\n"
        async with serve_repl(mach, "ws://127.0.0.1:0") as rs:
            assert rs.url.startswith("ws://") and rs.addr_file is None
        with pytest.raises(ReplError, match="bad address"):
            async with serve_repl(mach, "nope"):
                pass  # pragma: no cover


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"AM_REPL_ADDR": ""}, None),
        ({"AM_REPL_ADDR": "0"}, None),
        ({"AM_REPL_ADDR": "off"}, None),
        ({"AM_REPL_DIR": "/tmp"}, None),
        ({"AM_REPL_ADDR": "1"}, ("127.0.0.1:0", None)),
        ({"AM_REPL_ADDR": "true", "AM_REPL_DIR": " d "}, ("127.0.0.1:0", "d")),
        ({"AM_REPL_ADDR": "0.0.0.0:7000"}, ("0.0.0.0:7000", None)),
        ({"AM_REPL_ADDR": "ws://127.0.0.1:0"}, ("ws://127.0.0.1:0", None)),
    ],
)
def test_parse_repl_env(env: dict[str, str], expected: tuple[str, str | None] | None) -> None:
    cfg = parse_repl_env(env)
    if expected is None:
        assert cfg is None
    else:
        assert cfg is not None and (cfg.addr, cfg.addr_dir) == expected


def test_parse_repl_env_refuses(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"AM_REPL_ADDR='nowhere': bad address"):
        parse_repl_env({"AM_REPL_ADDR": "nowhere"})
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(ValueError, match="AM_REPL_DIR=.*not a directory"):
        parse_repl_env({"AM_REPL_ADDR": "1", "AM_REPL_DIR": str(f)})


async def test_bind_env_repl_serves_until_disposed(tmp_path: Path) -> None:
    env = {"AM_REPL_ADDR": "1", "AM_REPL_DIR": str(tmp_path)}
    async with am.open_machine({"Foo": {}}, id="envd") as mach:
        binding = bind_env_repl(mach, env)
        assert binding is not None
        assert bind_env_repl(mach, env) is binding  # once per machine
        with trio.fail_after(10):
            url = await binding.wait_ready()
        assert (tmp_path / "envd-repl.addr").read_text().strip() == url
        async with am.rpc.connect(url, id="c") as client:
            with trio.fail_after(10):
                await client.rpc.when1("Ready")
            assert client.mach.remote_id == "envd"
    with trio.fail_after(10):
        await binding.wait_closed()
    assert not (tmp_path / "envd-repl.addr").exists()
    assert binding.error is None


async def test_bind_env_repl_outside_a_nursery_uses_a_system_task(tmp_path: Path) -> None:
    mach = am.Machine({"Foo": {}}, id="loose")
    binding = bind_env_repl(mach, {"AM_REPL_ADDR": "1", "AM_REPL_DIR": str(tmp_path)})
    assert binding is not None
    with trio.fail_after(10):
        await binding.wait_ready()
    assert (tmp_path / "loose-repl.addr").exists()
    mach.dispose()
    with trio.fail_after(10):
        await binding.wait_closed()
    assert not (tmp_path / "loose-repl.addr").exists()


async def test_bind_env_repl_failures_stay_out_of_the_machine(tmp_path: Path) -> None:
    async with am.open_machine({"Foo": {}}, id="busy") as mach:
        with trio.socket.socket() as holder:
            await holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            binding = bind_env_repl(mach, {"AM_REPL_ADDR": f"127.0.0.1:{port}"})
            assert binding is not None
            with trio.fail_after(10), pytest.raises(ReplError, match="no REPL endpoint"):
                await binding.wait_ready()
        assert isinstance(binding.error, OSError)
        assert not mach.is_err() and mach.active_states() == []
    assert bind_env_repl(am.Machine({}), {}) is None
    off = bind_env_repl(am.Machine({}), {"AM_REPL_ADDR": "1", "AM_TEST_RUNNER": "1"})
    assert off is not None and off.disabled == "AM_TEST_RUNNER" and off.url is None
    with pytest.raises(ReplError, match="AM_TEST_RUNNER"):
        await off.wait_ready()
    gone = am.Machine({})
    gone.dispose()
    dead = bind_env_repl(gone, {"AM_REPL_ADDR": "1"})
    assert dead is not None and isinstance(dead.error, am.MachineDisposedError)
    with pytest.raises(ValueError, match="AM_REPL_ADDR"):
        bind_env_repl(am.Machine({}), {"AM_REPL_ADDR": "x"})


def test_bind_env_repl_needs_trio() -> None:
    with pytest.raises(RuntimeError, match="needs the machine bound"):
        bind_env_repl(am.Machine({}), {"AM_REPL_ADDR": "1"})


def test_bind_env_repl_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AM_REPL_ADDR", raising=False)
    assert bind_env_repl(am.Machine({})) is None
    monkeypatch.setenv("AM_REPL_ADDR", "1")
    monkeypatch.setenv("AM_TEST_RUNNER", "1")
    monkeypatch.delenv("AM_TEST_DEBUG", raising=False)
    b = bind_env_repl(am.Machine({}))
    assert b is not None and b.disabled == "AM_TEST_RUNNER"


# ------------------------------------------------------------------------ filters

snapshots = st.builds(
    MachSnapshot,
    id=st.sampled_from(["a-1", "a-2", "b-1", "b-22", "c"]),
    parent=st.sampled_from([None, "a-1", "p"]),
    connected=st.booleans(),
    clock=st.dictionaries(st.sampled_from(["Start", "Foo", "Bar"]), st.integers(0, 9)),
)
filters = st.builds(
    ListFilters,
    active=st.lists(st.sampled_from(["Start", "Foo", "Bar"]), max_size=2).map(tuple),
    inactive=st.lists(st.sampled_from(["Start", "Foo", "Bar"]), max_size=2).map(tuple),
    mtime_states=st.lists(st.sampled_from(["Start", "Foo"]), max_size=2).map(tuple),
    mtime_min=st.none() | st.integers(0, 12),
    mtime_max=st.none() | st.integers(0, 12),
    parent=st.none() | st.sampled_from(["a-1", "p"]),
    id_prefix=st.none() | st.sampled_from(["a", "b-", "c"]),
    id_suffix=st.none() | st.sampled_from(["1", "2"]),
    id_partial=st.none() | st.sampled_from(["-", "2"]),
    id_regexp=st.none() | st.sampled_from([r"\d$", "^b"]),
    limit=st.none() | st.integers(0, 4),
    start=st.integers(0, 4),
    skip_disconnected=st.booleans(),
)


@given(items=st.lists(snapshots, max_size=8), f=filters)
def test_select_is_an_ordered_bounded_subset(items: list[MachSnapshot], f: ListFilters) -> None:
    picked = f.select(items, lambda m: m)
    idx = [i for i, m in enumerate(items) if any(m is p for p in picked)]
    assert len(idx) == len(picked) and idx == sorted(idx)  # in order, no repeats
    assert all(i >= f.start for i in idx)
    assert f.limit is None or len(picked) <= f.limit
    assert all(f.matches(m) for m in picked)
    # without a limit, exactly the matching ones after `start` are picked
    if f.limit is None:
        assert picked == [m for m in items[f.start :] if f.matches(m)]


@given(m=snapshots, f=filters)
def test_each_filter_means_what_it_says(m: MachSnapshot, f: ListFilters) -> None:
    expect = True
    if f.skip_disconnected and not m.connected:
        expect = False
    if f.id_prefix is not None and not m.id.startswith(f.id_prefix):
        expect = False
    if f.id_suffix is not None and not m.id.endswith(f.id_suffix):
        expect = False
    if f.id_partial is not None and f.id_partial not in m.id:
        expect = False
    if f.id_regexp is not None and not f.id_regexp.search(m.id):
        expect = False
    if f.parent is not None and m.parent != f.parent:
        expect = False
    t = sum(m.clock.get(s, 0) for s in f.mtime_states) if f.mtime_states else sum(m.clock.values())
    if (f.mtime_min is not None and t < f.mtime_min) or (
        f.mtime_max is not None and t > f.mtime_max
    ):
        expect = False
    if any(m.clock.get(s, 0) % 2 == 0 for s in f.active):
        expect = False
    if any(s not in m.clock or m.clock[s] % 2 for s in f.inactive):
        expect = False
    assert f.matches(m) is expect


def test_filters_refuse_negative_numbers_and_skip_unseen() -> None:
    for kw in ({"limit": -1}, {"mtime_min": -2}, {"mtime_max": -1}, {"start": -1}):
        with pytest.raises(ValueError):
            ListFilters(**kw)  # type: ignore[arg-type]
    snap = MachSnapshot("x", None, True, {})
    assert ListFilters().select([None, snap], lambda m: m) == [snap]


# ------------------------------------------------------------------------ completion

CTX = CompletionContext(
    ids=("rp-1", "rp-2"),
    states={
        "rp-1": ("Start", "Foo", "Bar", "Hits", "Exception"),
        "rp-2": ("Start", "Baz", "Exception"),
    },
    active={"rp-1": frozenset({"Start", "Hits"}), "rp-2": frozenset({"Start"})},
    multi={"rp-1": frozenset({"Hits", "Exception"}), "rp-2": frozenset({"Exception"})},
    args={"rp-1": ("job", "name"), "rp-2": ("zone",)},
)
SOLO = CompletionContext(
    ids=("solo",),
    states={"solo": ("Start", "Foo")},
    active={"solo": frozenset({"Start"})},
    multi={"solo": frozenset()},
    args={"solo": ()},
)


@pytest.mark.parametrize(
    ("ctx", "line", "expected"),
    [
        (CTX, "", None),  # every command
        (CTX, "wh", ["when", "when-not", "when-time"]),
        (CTX, "ma", ["mach"]),
        (CTX, "mach ", ["rp-1", "rp-2", "."]),
        (CTX, "mach rp-", ["rp-1", "rp-2"]),
        (CTX, "mach rp-1 ", []),
        (CTX, "add rp-1 ", ["Foo", "Bar", "Hits", "Exception"]),  # active Start left out
        (CTX, "add rp-1 Foo ", ["Bar", "Hits", "Exception"]),
        (CTX, "add . B", ["Bar"]),
        (CTX, "remove rp-1 ", ["Start", "Hits"]),
        (CTX, "when rp-2 ", ["Baz", "Exception"]),
        (CTX, "when-not rp-2 ", ["Start"]),
        (CTX, "time rp-2 ", ["Start", "Baz", "Exception"]),
        (CTX, "add rp-9 ", []),
        (CTX, "add rp-1 Foo --arg ", ["job", "name"]),
        (CTX, "add rp-2 Baz --arg z", ["zone"]),
        (CTX, "group-add --arg ", ["job", "name", "zone"]),
        (CTX, "add rp-1 Foo --val ", []),
        (CTX, "add rp-1 Foo --a", ["--arg"]),
        (CTX, "list -a ", ["Start", "Foo", "Bar", "Hits", "Exception", "Baz"]),
        (CTX, "list -a Foo -i B", ["Bar", "Baz"]),
        (CTX, "list -p ", []),
        (CTX, "list --no-", ["--no-states", "--no-disconn"]),
        (CTX, "group-add -p rp- ", ["Start", "Foo", "Bar", "Hits", "Exception", "Baz"]),
        (CTX, "group-add Foo B", ["Bar", "Baz"]),
        (CTX, "when-time rp-1 -s ", ["Start", "Foo", "Bar", "Hits", "Exception"]),
        (CTX, "when-time rp-1 -s Foo -t ", []),
        (CTX, "when-time ", ["rp-1", "rp-2", "."]),
        (CTX, "help when-", ["when-not", "when-time"]),
        (CTX, "help when ", []),
        (CTX, "frob ", []),
        (SOLO, "add ", ["solo", ".", "Foo"]),  # MACH may be left out
        (SOLO, "add Foo ", []),
        (SOLO, "add F", ["Foo"]),
        (SOLO, "mach ", ["solo", "."]),
    ],
)
def test_complete(ctx: CompletionContext, line: str, expected: list[str] | None) -> None:
    got = complete(line, ctx)
    if expected is None:
        assert "add" in got and "when-time" in got and got == sorted(got)
    else:
        assert got == expected


def test_complete_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "setup.repl").write_text("")
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".hidden").write_text("")
    monkeypatch.chdir(tmp_path)
    assert complete("script ", CTX) == ["scripts/", "setup.repl"]
    assert complete("script se", CTX) == ["setup.repl"]
    assert complete("script .h", CTX) == [".hidden"]
    assert complete(f"script {tmp_path}/sc", CTX) == [f"{tmp_path}/scripts/"]
    assert complete("script nope/x", CTX) == []
    assert complete("script setup.repl ", CTX) == []


async def test_completion_context_from_a_repl() -> None:
    from trio_am.repl import open_repl

    schema: dict[str, Any] = {"Start": {}, "Foo": {}, "Hits": {"multi": True}}
    async with am.open_machine(schema, id="m") as mach:
        mach.add1("Start")
        async with serve_repl(mach) as rs, open_repl([rs.url]) as repl:
            with trio.fail_after(10):
                await repl.wait_settled()
            ctx = repl.completion_context()
            assert ctx.ids == ("m",)
            assert ctx.states["m"] == ("Start", "Foo", "Hits", "Exception")
            assert ctx.active["m"] == {"Start"}
            assert ctx.multi["m"] == {"Hits", "Exception"}
            assert repl.complete("add m ") == ["Foo", "Hits", "Exception"]


# ------------------------------------------------------------------------ bind_env

#: Whether bind_env serves AM_REPL_* (the line asked of the lead); the tests below wait.
_WIRED = "repl" in EnvBindings.__dataclass_fields__


@pytest.mark.skipif(not _WIRED, reason="telemetry.bind_env does not serve AM_REPL_* yet")
async def test_bind_env_serves_the_repl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trio_am.telemetry import bind_env

    monkeypatch.setenv("AM_REPL_ADDR", "1")
    monkeypatch.setenv("AM_REPL_DIR", str(tmp_path))
    monkeypatch.delenv("AM_TEST_RUNNER", raising=False)
    async with am.open_machine({"Foo": {}}, id="wired") as mach:
        out = bind_env(mach)
        assert out.repl is not None and "repl" in out.bound and out.ignored == []
        assert bind_env_repl(mach) is out.repl  # rp.py's own call changes nothing
        with trio.fail_after(10):
            await out.repl.wait_ready()
        assert (tmp_path / "wired-repl.addr").exists()
    with trio.fail_after(10):
        await out.repl.wait_closed()
    assert not (tmp_path / "wired-repl.addr").exists()
    monkeypatch.setenv("AM_REPL_ADDR", "nowhere")
    with pytest.raises(ValueError, match="AM_REPL_ADDR"):
        bind_env(am.Machine({}))


@pytest.mark.skipif(not _WIRED, reason="telemetry.bind_env does not serve AM_REPL_* yet")
def test_bind_env_outside_trio_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    from trio_am.telemetry import bind_env

    monkeypatch.setenv("AM_REPL_ADDR", "1")
    monkeypatch.delenv("AM_TEST_RUNNER", raising=False)
    out = bind_env(am.Machine({}))
    assert out.repl is None
    assert any(w.startswith("AM_REPL_ADDR: ") for w in out.warnings)
