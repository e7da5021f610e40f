"""``trio-am gen`` (tools.md §3.3): the SPEC parser, generated states modules (checked by
ruff, ``ruff format`` and ``mypy --strict`` in subprocesses, imported and used), adding
states to an existing module, Grafana dashboards and the CLI's exit codes."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_am as am
from trio_am.cli.gen import main
from trio_am.gen import (
    INHERITS,
    GenError,
    GroupSpec,
    Inherit,
    MachSpec,
    StateSpec,
    generate,
    grafana,
    mach_name,
    parse_groups,
    parse_inherit,
    parse_states,
    read_module,
    resolve,
    snake_case,
    write_states,
)

OK, ERROR, USAGE = 0, 1, 2
BIN = Path(sys.executable).parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def load(path: Path) -> Any:
    name = f"_gen_test_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[name]
    return mod


# ------------------------------------------------------------------------------ SPEC
def test_spec_flags_relations_and_capitals() -> None:
    states = parse_states("foo:auto, bar:Multi:REQUIRE(foo):remove(_modes;baz),baz:after(Foo)")
    assert states == [
        StateSpec("Foo", auto=True),
        StateSpec("Bar", multi=True, require=("Foo",), remove=("_Modes", "Baz")),
        StateSpec("Baz", after=("Foo",)),
    ]


def test_spec_file_form_newlines_and_comments() -> None:
    text = "# my states\nFoo:auto\nBar:require(Foo)  # needs Foo\n\nBaz,Qux\n"
    assert [s.name for s in parse_states(text)] == ["Foo", "Bar", "Baz", "Qux"]


def test_spec_relations_of_one_kind_join() -> None:
    (s,) = parse_states("Foo:add(A):add(B;A)")
    assert s.add == ("A", "B")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("Foo,foo", "given twice"),
        ("Foo:bogus", "unknown property 'bogus'"),
        ("Foo:requires(Bar)", "unknown property"),
        ("Foo:require()", "empty relation target"),
        ("Foo:require(A;;B)", "empty relation target"),
        ("Foo:require(A", "without ')'"),
        ("Foo)", "without '('"),
        ("Foo_bar", "bad state name"),
        ("1Foo", "bad state name"),
        ("Any", "reserved"),
        ("None", "reserved"),
        ("Foo::auto", "empty name or property"),
        ("Foo:require(Bar-x)", "bad relation target"),
    ],
)
def test_spec_errors(spec: str, words: str) -> None:
    with pytest.raises(GenError, match=words.replace("(", r"\(").replace(")", r"\)")) as ei:
        parse_states(spec)
    assert ei.value.code == USAGE


def test_groups_spec() -> None:
    assert parse_groups("modes(foo;Bar), Empty") == [
        GroupSpec("Modes", ("Foo", "Bar")),
        GroupSpec("Empty", ()),
    ]
    with pytest.raises(GenError, match="given twice"):
        parse_groups("A,a")
    with pytest.raises(GenError, match="empty state name"):
        parse_groups("A(B;)")


def test_names() -> None:
    assert mach_name("my_mach") == mach_name("my-mach") == mach_name("myMach") == "MyMach"
    assert snake_case("MyMach") == "my_mach"
    assert snake_case("HTTPServer") == "http_server"
    for bad in ("", "1x", "a b", "x.y"):
        with pytest.raises(GenError, match="bad machine name"):
            mach_name(bad)
    assert parse_inherit("Basic, connected,basic") == ("basic", "connected")
    with pytest.raises(GenError, match="unknown inherit 'nope'"):
        parse_inherit("basic,nope")


# ------------------------------------------------------------------------------ modules
#: Specs covering the layout: no inherit, every inherit (incl. redefining Ready), groups of
#: 0, 1 and many states, group references, a relation list long enough to be exploded,
#: Exception named without BasicStates.
SPECS: dict[str, MachSpec] = {
    "Plain": MachSpec("Plain", tuple(parse_states("Foo,Bar:require(Foo):remove(Exception)"))),
    "Full": MachSpec(
        "Full",
        tuple(
            parse_states(
                "Foo:auto,Bar:multi:require(Foo),Baz:remove(_Modes;Qux):after(Start),"
                "Qux:add(Exception),Ready:require(Start;Foo)"
            )
        ),
        tuple(parse_groups("Modes(Foo;Bar),Empty,One(Qux)")),
        ("basic", "connected", "disposed", "rpc/statesrc", "node/worker"),
    ),
    "VeryLongMachineNameForLayout": MachSpec(
        "VeryLongMachineNameForLayout",
        tuple(
            parse_states(
                "StateNumberOneWithALongName,StateNumberTwoWithALongName,"
                "StateNumberThreeWithALongName,StateNumberFourWithALongName,"
                "X:auto:multi:require(StateNumberOneWithALongName;StateNumberTwoWithALongName;"
                "StateNumberThreeWithALongName):remove(_AllOfThemTogetherInOneGroup)"
            )
        ),
        tuple(parse_groups("AllOfThemTogetherInOneGroup(StateNumberFourWithALongName)")),
        ("basic",),
    ),
}


def _random_spec(rng: random.Random, i: int) -> MachSpec:
    names = [f"S{rng.randrange(10 ** rng.randrange(1, 9))}x{j}" for j in range(rng.randrange(1, 8))]
    groups = []
    if rng.random() < 0.5:
        groups.append(GroupSpec("Grp", tuple(rng.sample(names, rng.randrange(0, len(names) + 1)))))
    states = []
    for n in names:
        rel: dict[str, tuple[str, ...]] = {}
        for r in ("require", "add", "remove", "after"):
            if rng.random() < 0.4:
                t = [x for x in rng.sample(names, rng.randrange(1, len(names) + 1)) if x != n]
                if groups and rng.random() < 0.3:
                    t.append("_Grp")
                rel[r] = tuple(t)
        # require + remove of one state is refused by machines: keep them apart
        if "require" in rel and "remove" in rel:
            rel["remove"] = tuple(x for x in rel["remove"] if x not in rel["require"])
            if "_Grp" in rel["remove"]:
                rel["remove"] = tuple(x for x in rel["remove"] if x != "_Grp")
        states.append(
            StateSpec(n, auto=rng.random() < 0.3, multi=rng.random() < 0.3, **rel)  # type: ignore[arg-type]
        )
    inherit = tuple(k for k in ("basic", "connected", "disposed") if rng.random() < 0.4)
    if "connected" in inherit and "basic" not in inherit:
        inherit = ("basic", *inherit)
    return MachSpec(f"Rnd{i}", tuple(states), tuple(groups), inherit)


def _valid_random_specs(n: int) -> list[MachSpec]:
    rng = random.Random(7)
    out: list[MachSpec] = []
    while len(out) < n:
        spec = _random_spec(rng, len(out))
        try:
            resolve(spec)
        except GenError:
            continue  # e.g. a group member both required and removed
        out.append(spec)
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gen")
    for spec in [*SPECS.values(), *_valid_random_specs(25)]:
        write_states(spec, d, command=f"trio-am gen states --name {spec.name} --states ...")
    return d


def _tool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_generated_modules_pass_ruff(generated: Path) -> None:
    # default rules plus the project's (imports sorted, pyupgrade, bugbear...)
    proc = _tool(
        "ruff", "check", "--no-cache", "--select", "E,F,W,I,B,UP,SIM,RUF", ".", cwd=generated
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _tool("ruff", "format", "--no-cache", "--check", "--diff", ".", cwd=generated)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list(generated.glob("ss_*.py"))) == len(SPECS) + 25


def test_generated_modules_pass_mypy_strict(generated: Path) -> None:
    proc = _tool(
        "mypy",
        "--strict",
        "--no-error-summary",
        *sorted(p.name for p in generated.glob("ss_*.py")),
        cwd=generated,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generated_module_works(generated: Path) -> None:
    mod = load(generated / "ss_full.py")
    assert mod.__all__ == ["FULL_SCHEMA", "FullGroups", "FullStates", "new_full", "ss"]
    # the node worker covers basic and rpc/statesrc: one base class, no MRO clash
    from trio_am.node.states import WORKER_SCHEMA, WorkerStates
    from trio_am.schemas import ConnectedStates, DisposedStates

    assert mod.FullStates.__bases__ == (ConnectedStates, DisposedStates, WorkerStates)
    assert mod.FullStates.names()[-4:] == ["Foo", "Bar", "Baz", "Qux"]
    assert mod.FullGroups.Modes == ("Foo", "Bar")
    assert mod.FullGroups.Empty == ()
    assert mod.FullGroups.One == ("Qux",)
    assert mod.FullGroups.WorkStatus == ("Idle", "WorkRequested", "Working", "WorkReady")
    schema = mod.FULL_SCHEMA
    assert schema["Baz"] == am.State(remove=["Foo", "Bar", "Qux"], after=["Start"])
    assert schema["Ready"] == am.State(require=["Start", "Foo"])  # redefined whole
    assert schema["Idle"] == WORKER_SCHEMA["Idle"]
    mach = mod.new_full(id="full-1")
    assert mach.id == "full-1"
    assert mach.state_names == mod.FullStates.names()
    mach.add1("Start")
    assert mach.is1("Foo")  # auto
    mach.add1("Bar")
    assert mach.is_all(["Foo", "Bar"])
    mach.add1("Baz")  # removes the Modes group (Foo, Bar) and Qux
    assert mach.active_states(["Foo", "Bar", "Baz"]) == ["Baz"]
    mach.add1("Bar")  # requires Foo, which Baz keeps out: canceled
    assert not mach.is1("Bar")


def test_plain_module_without_inherit(generated: Path) -> None:
    mod = load(generated / "ss_plain.py")
    assert mod.PlainStates.__bases__ == (am.States,)
    assert mod.PLAIN_SCHEMA == {
        "Foo": am.State(),
        "Bar": am.State(require=["Foo"], remove=["Exception"]),
    }
    assert mod.new_plain().state_names == ["Foo", "Bar", "Exception"]


def test_long_lines_are_exploded(generated: Path) -> None:
    text = (generated / "ss_very_long_machine_name_for_layout.py").read_text()
    assert "remove=[*VeryLongMachineNameForLayoutGroups.AllOfThemTogetherInOneGroup]" in text
    code = [ln for ln in text.split('"""', 2)[2].splitlines()]
    assert max(len(ln) for ln in code) <= 88


def test_generated_text_is_read_back_unchanged(generated: Path) -> None:
    for path in generated.glob("ss_*.py"):
        spec = read_module(path)
        again = generate(spec, command=f"trio-am gen states --name {spec.name} --states ...")
        assert again == path.read_text(), path.name


name_st = st.from_regex(r"[A-Z][a-z]{0,6}[0-9]?", fullmatch=True).filter(
    lambda s: s not in ("None", "True", "False", "Any", "Exception")
)


@st.composite
def mach_specs(draw: st.DrawFn) -> MachSpec:
    names = draw(st.lists(name_st, min_size=1, max_size=6, unique=True))
    grp = draw(st.lists(st.sampled_from(names), unique=True)) if draw(st.booleans()) else None
    states = []
    for n in names:
        rels = {}
        for r in ("require", "add", "after"):
            targets = draw(st.lists(st.sampled_from(names), unique=True, max_size=3))
            if grp is not None and draw(st.booleans()):
                targets.append("_G")
            rels[r] = tuple(targets)
        states.append(StateSpec(n, auto=draw(st.booleans()), multi=draw(st.booleans()), **rels))
    groups = (GroupSpec("G", tuple(grp)),) if grp is not None else ()
    inherit = draw(st.sampled_from([(), ("basic",), ("basic", "disposed")]))
    return MachSpec("Prop", tuple(states), groups, inherit)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=mach_specs())
def test_property_module_holds_the_spec(spec: MachSpec, tmp_path: Path) -> None:
    """Any valid spec gives a module whose schema is the spec (groups expanded, merged
    over the inherited schemas), whose class lists the states, and which reads back to
    the same text."""
    text = generate(spec)
    path = tmp_path / f"ss_prop_{uuid.uuid4().hex[:8]}.py"
    path.write_text(text)
    mod = load(path)
    groups = {g.name: g.states for g in spec.groups}
    base: dict[str, am.State] = {}
    for k in spec.inherit:
        base.update(INHERITS[k].load()[1])
    for s in spec.states:

        def expand(ts: tuple[str, ...]) -> list[str]:
            out: list[str] = []
            for t in ts:
                for n in groups[t[1:]] if t.startswith("_") else (t,):
                    if n not in out:
                        out.append(n)
            return out

        want = am.State(
            auto=s.auto,
            multi=s.multi,
            require=expand(s.require),
            add=expand(s.add),
            after=expand(s.after),
        )
        assert mod.PROP_SCHEMA[s.name] == want
    assert set(mod.PROP_SCHEMA) == set(base) | {s.name for s in spec.states}
    assert mod.PropStates.names()[-len(spec.states) :] == [s.name for s in spec.states]
    assert generate(read_module(path)) == text


def test_unknown_target_or_group_or_bad_combination() -> None:
    with pytest.raises(GenError, match="relation to Nope, which is not a state"):
        resolve(MachSpec("X", tuple(parse_states("Foo:require(Nope)"))))
    with pytest.raises(GenError, match="no group G"):
        resolve(MachSpec("X", tuple(parse_states("Foo:require(_G)"))))
    with pytest.raises(GenError, match="group G: Nope is not a state"):
        resolve(MachSpec("X", tuple(parse_states("Foo")), (GroupSpec("G", ("Nope",)),)))
    with pytest.raises(GenError, match="inherit basic too"):
        resolve(MachSpec("X", tuple(parse_states("Foo")), (), ("connected",)))
    with pytest.raises(GenError, match="require-remove conflict"):
        resolve(MachSpec("X", tuple(parse_states("Foo,Bar:require(Foo):remove(Foo)"))))
    with pytest.raises(GenError, match="also an inherited group"):
        resolve(
            MachSpec("X", tuple(parse_states("Foo")), (GroupSpec("WorkStatus"),), ("node/worker",))
        )


def test_missing_inherit_module_is_unknown_inherit(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Inherit("node/worker", "trio_am.no_such_module", "WorkerStates", "WORKER_SCHEMA")
    monkeypatch.setitem(INHERITS, "node/worker", fake)
    with pytest.raises(GenError, match="unknown inherit 'node/worker'") as ei:
        resolve(MachSpec("X", tuple(parse_states("Foo")), (), ("node/worker",)))
    assert ei.value.code == USAGE


# ------------------------------------------------------------------------------ CLI
def test_cli_writes_module_and_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    argv = [
        "states",
        "--name",
        "my_mach",
        "--states",
        "Foo:auto,Bar:require(Foo)",
        "-o",
        str(tmp_path),
    ]
    code, out, err = run(capsys, *argv, "--inherit", "basic")
    path = tmp_path / "ss_my_mach.py"
    assert (code, out.strip(), err) == (OK, f"wrote {path}", "")
    first = path.read_text()
    assert "class MyMachStates(am.BasicStates):" in first
    assert "def new_my_mach(**kw: Any) -> am.Machine:" in first
    assert "    trio-am gen states --name my_mach --states" in first
    assert "'Foo:auto,Bar:require(Foo)'" in first  # the command, quoted for a shell
    code, out, err = run(capsys, *argv)
    assert code == ERROR and "exists" in err and "--force" in err
    assert path.read_text() == first
    code, _out, _err = run(capsys, *argv, "--force")
    assert code == OK
    assert "am.BasicStates" not in path.read_text()


def test_cli_add_keeps_old_states(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ss_shop.py"
    run(
        capsys,
        "states",
        "-n",
        "Shop",
        "-s",
        "Open,Closed:remove(Open)",
        "-g",
        "Modes(Open;Closed)",
        "-o",
        str(tmp_path),
    )
    code, out, err = run(
        capsys,
        "states",
        "--add",
        str(path),
        "--states",
        "Busy:require(Open)",
        "--inherit",
        "basic",
        "--groups",
        "Extra(Busy)",
    )
    assert (code, err) == (OK, "")
    mod = load(path)
    assert mod.ShopStates.names()[-3:] == ["Open", "Closed", "Busy"]
    assert "Start" in mod.ShopStates.names()
    assert mod.SHOP_SCHEMA["Closed"] == am.State(remove=["Open"])
    assert mod.SHOP_SCHEMA["Busy"] == am.State(require=["Open"])
    assert (mod.ShopGroups.Modes, mod.ShopGroups.Extra) == (("Open", "Closed"), ("Busy",))
    # a state that is there already, a wrong --name, nothing to add
    code, _o, err = run(capsys, "states", "--add", str(path), "--states", "Open")
    assert code == USAGE and "already in the module" in err
    code, _o, err = run(capsys, "states", "--add", str(path), "--name", "Other", "-s", "X")
    assert code == USAGE and "does not match" in err
    code, _o, err = run(capsys, "states", "--add", str(path))
    assert code == USAGE and "nothing to add" in err


def test_cli_add_bad_files(tmp_path: Path, capsys) -> None:
    code, _o, err = run(capsys, "states", "--add", str(tmp_path / "none.py"), "-s", "X")
    assert code == ERROR and "no such file" in err
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    code, _o, err = run(capsys, "states", "--add", str(bad), "-s", "X")
    assert code == USAGE and "cannot import it: RuntimeError: boom" in err
    other = tmp_path / "other.py"
    other.write_text("X = 1\n")
    code, _o, err = run(capsys, "states", "--add", str(other), "-s", "X")
    assert code == USAGE and "expected one am.States class" in err


def test_cli_states_file_and_stdout(tmp_path: Path, capsys) -> None:
    f = tmp_path / "spec.txt"
    f.write_text("# states\nFoo:auto\nBar:require(Foo)\n")
    code, out, err = run(
        capsys, "states", "-n", "Filed", "--states-file", str(f), "-s", "Baz", "--stdout"
    )
    assert (code, err) == (OK, "")
    assert "    Foo: str\n    Bar: str\n    Baz: str\n" in out
    assert "--stdout" not in out
    assert not list(tmp_path.glob("ss_*.py"))
    code, _o, err = run(capsys, "states", "-n", "X", "--states-file", str(tmp_path / "nope"))
    assert code == ERROR and "cannot read" in err


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["states", "-s", "Foo"], USAGE, "--name is required"),
        (["states", "-n", "X"], USAGE, "no states"),
        (["states", "-n", "X", "-s", "Foo", "-i", "bogus"], USAGE, "unknown inherit 'bogus'"),
        (["states", "-n", "X", "-s", "Foo:bogus"], USAGE, "unknown property"),
        (["states", "-n", "1X", "-s", "Foo"], USAGE, "bad machine name"),
        (["states", "-n", "X", "-s", "Foo", "--bogus"], USAGE, "unrecognized arguments"),
        ([], USAGE, "a subcommand is needed"),
        (["grafana", "--ids", "a"], USAGE, "required"),
        (["grafana", "--ids", ",", "-n", "N", "-s", "S"], USAGE, "no machine ids"),
        (["grafana", "--ids", "a", "-n", "N", "-s", "S", "--folder", "F"], USAGE, "--folder needs"),
    ],
)
def test_cli_bad_input(
    argv: list[str], code: int, words: str, capsys, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    got, out, err = run(capsys, *argv)
    assert got == code
    assert words in err
    assert "Traceback" not in err + out
    assert not list(tmp_path.glob("ss_*.py"))


def test_cli_unwritable_output(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _o, err = run(capsys, "states", "-n", "X", "-s", "Foo", "-o", str(blocker / "sub"))
    assert code == ERROR and "cannot write" in err


# ------------------------------------------------------------------------------ grafana
def test_dashboard_layout() -> None:
    board = grafana.dashboard(["fx-a", "Worker 2"], "My board", "My Service")
    assert board["title"] == "My board"
    assert (board["refresh"], board["time"], board["tags"]) == (
        "5s",
        {"from": "now-5m", "to": "now"},
        ["generated"],
    )
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert [(r["title"], r["collapsed"]) for r in rows] == [
        ("Mach: fx-a", False),
        ("Details: fx-a", True),
        ("Logs: fx-a", True),
        ("Mach: Worker 2", False),
        ("Details: Worker 2", True),
        ("Logs: Worker 2", True),
    ]
    top = board["panels"]
    assert [p["title"] for p in top[:3]] == ["Mach: fx-a", "Transitions", "Transition errors"]
    assert top[2]["type"] == "heatmap"
    details = rows[1]["panels"]
    assert [p["title"] for p in details] == [
        "Transition mutations",
        "Transition details",
        "States and relations",
        "Transition time",
    ]
    exprs = [t["expr"] for p in details for t in p["targets"]]
    assert all('machine_id="fx-a", job="my_service"' in e for e in exprs)
    for metric in (
        "am_queue_length",
        "am_transition_handlers_sum",
        "am_states_added_total",
        "am_transition_ticks_sum",
        "am_transition_steps_sum",
        "am_states_touched_total",
        "am_ref_states",
        "am_states_active",
        "am_transition_duration_seconds_bucket",
    ):
        assert any(metric in e for e in exprs), metric
    (logs,) = rows[2]["panels"]
    assert logs["targets"][0]["expr"] == '{service_name="my_service", asyncmachine_id="fx-a"}'
    # every panel has its own id; top-level panels do not overlap
    ids = [p["id"] for p in top] + [c["id"] for r in rows for c in r["panels"]]
    assert len(ids) == len(set(ids))
    ys = [(p["gridPos"]["y"], p["gridPos"]["h"]) for p in top]
    assert all(y0 + h0 <= y1 for (y0, h0), (y1, _h1) in zip(ys, ys[1:], strict=False))


def test_cli_grafana_prints_json(capsys) -> None:
    code, out, err = run(capsys, "grafana", "--ids", "a,b", "--name", "N", "--source", "svc")
    assert (code, err) == (OK, "")
    board = json.loads(out)
    assert [p["title"] for p in board["panels"] if p["type"] == "row"][:3] == [
        "Mach: a",
        "Details: a",
        "Logs: a",
    ]


class _Grafana(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, str, Any]] = []
    status = 200

    def _reply(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        type(self).calls.append(("GET", self.path, self.headers["Authorization"], None))
        self._reply([{"uid": "other", "title": "other"}])

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(("POST", self.path, self.headers["Authorization"], body))
        if self.path == "/api/folders":
            self._reply({"uid": "f-1", "title": body["title"]})
        else:
            self._reply({"uid": "d-1", "url": "/d/d-1/n", "status": "success"})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def grafana_server() -> Iterator[tuple[str, type[_Grafana]]]:
    handler = type("H", (_Grafana,), {"calls": [], "status": 200})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def test_cli_grafana_upsert(grafana_server, capsys, monkeypatch) -> None:
    url, handler = grafana_server
    monkeypatch.setenv("AM_GRAFANA_TOKEN", "tok")
    code, out, err = run(
        capsys, "grafana", "-i", "a", "-n", "N", "-s", "svc", "-g", url + "/", "-f", "Team"
    )
    assert (code, err) == (OK, "")
    assert "/d/d-1/n" in out
    (get, mk, post) = handler.calls
    assert get[:3] == ("GET", "/api/folders", "Bearer tok")
    assert mk[1] == "/api/folders" and mk[3] == {"title": "Team"}
    assert post[1] == "/api/dashboards/db"
    assert post[3]["folderUid"] == "f-1" and post[3]["overwrite"] is True
    assert post[3]["dashboard"]["title"] == "N"


def test_cli_grafana_upsert_errors(grafana_server, capsys, monkeypatch) -> None:
    url, handler = grafana_server
    monkeypatch.delenv("AM_GRAFANA_TOKEN", raising=False)
    code, _o, err = run(capsys, "grafana", "-i", "a", "-n", "N", "-s", "svc", "-g", url)
    assert code == USAGE and "AM_GRAFANA_TOKEN" in err
    monkeypatch.setenv("AM_GRAFANA_TOKEN", "tok")
    code, _o, err = run(capsys, "grafana", "-i", "a", "-n", "N", "-s", "svc", "-g", "ftp://x")
    assert code == USAGE and "bad Grafana URL" in err
    handler.status = 401
    code, _o, err = run(capsys, "grafana", "-i", "a", "-n", "N", "-s", "svc", "-g", url)
    assert code == ERROR and "HTTP 401" in err
    # nothing listens there any more once a free port is closed
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    code, _o, err = run(
        capsys, "grafana", "-i", "a", "-n", "N", "-s", "svc", "-g", f"http://127.0.0.1:{port}"
    )
    assert code == ERROR and "Grafana GET" in err
    assert "Traceback" not in err


def test_the_manual_shows_real_output(capsys) -> None:
    """docs/generator.md shows ss_shop.py as the generator writes it."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "generator.md").read_text()
    start = page.index('```python\n"""States of the Shop machine') + len("```python\n")
    shown = page[start : page.index("```\n", start)]
    code, out, _ = run(
        capsys,
        "states",
        "--name",
        "Shop",
        "--states",
        "Open:auto,Closed:remove(_Modes),Busy:multi:require(Open)",
        "--groups",
        "Modes(Open;Closed)",
        "--inherit",
        "basic",
        "--stdout",
    )
    assert code == OK
    assert out == shown
