"""``trio-am vis`` and :mod:`trio_am.vis` (tools.md §3.4): scenario 47 as written, schema,
machine-graph and transition diagrams, inspect dumps, links found in recordings, the
notebook helper and the CLI's files and exit codes.

Recordings are made by real programs in subprocesses: the FX fixture program
(``tests.support.fx``) and ``tests.tools.vis_rec`` (parent, pipes, aRPC).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import trio_am as am
import trio_am.vis as vis
from trio_am.cli.vis import main
from trio_am.dbg.model import Model
from trio_am.vis import VisError

ROOT = Path(__file__).resolve().parent.parent.parent
OK, ERROR, USAGE = 0, 1, 2
SCRIPT = Path(sys.executable).parent / "trio-am"
FX_SCHEMA = {
    "Start": {},
    "Ready": {"auto": True, "require": ["Start"]},
    "Foo": {"require": ["Start"]},
    "Bar": {"add": ["Foo"]},
    "Baz": {"remove": ["Foo"]},
    "Healthcheck": {"multi": True},
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AM_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _record(module: str, path: Path, *args: str, **env: str) -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "done" in proc.stdout
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vis")


@pytest.fixture(scope="module")
def fx_rec(tmp: Path) -> Path:
    """$TMP/r.amdbg: the FX program's 8 records (scenarios-tools.md conventions)."""
    path = tmp / "r.amdbg"
    return _record("tests.support.fx", path, "--exit", AM_DBG_ADDR=f"file:{path}", AM_LOG="2")


@pytest.fixture(scope="module")
def net_rec(tmp: Path) -> Path:
    """src, src-kid (pipes from src), rs-src and rc-c1 (aRPC): see tests/tools/vis_rec.py."""
    path = tmp / "net.amdbg"
    return _record("tests.tools.vis_rec", path, str(path))


@pytest.fixture(scope="module")
def fxmod(tmp: Path) -> Path:
    """A directory where ``fxmod:SCHEMA`` imports (the FX program as a module)."""
    d = tmp / "mods"
    d.mkdir()
    shutil.copy(ROOT / "tests" / "support" / "fx.py", d / "fxmod.py")
    return d


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "trio_am.cli"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# ---------------------------------------------------------------------------- scenario 47
def test_scenario_47_diagrams(fx_rec: Path, fxmod: Path) -> None:
    proc = cli("vis", "schema", "fxmod:SCHEMA", cwd=fxmod)
    assert proc.returncode == 0, proc.stderr
    lines = [ln.strip() for ln in proc.stdout.splitlines()]
    assert lines[0] == "flowchart LR"
    for edge in ("Bar -- add --> Foo", "Foo -- require --> Start", "Baz -- remove --> Foo"):
        assert edge in lines
    proc = cli("vis", "schema", "fxmod:SCHEMA", "--format", "d2", cwd=fxmod)
    assert proc.returncode == 0, proc.stderr
    assert "Bar -> Foo: add" in proc.stdout.splitlines()
    proc = cli("vis", "tx", str(fx_rec), "mach://fx-a?i=3", cwd=fxmod)
    assert proc.returncode == 0, proc.stderr
    lines = [ln.strip() for ln in proc.stdout.splitlines()]
    assert lines[0] == "sequenceDiagram"
    assert "participant Bar" in lines and "participant Foo" in lines
    assert any("Bar ->> Foo: add" in ln for ln in lines)
    proc = cli("vis", "inspect", str(fx_rec), cwd=fxmod)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "## fx-a" in lines
    i = lines.index("### States")
    assert any(ln.startswith("- Foo") for ln in lines[i:])


def test_cli_errors_are_one_line(fx_rec: Path, fxmod: Path) -> None:
    cases = [
        (("vis", "tx", str(fx_rec), "mach://nope?i=1"), ERROR, "no machine 'nope'"),
        (("vis", "tx", str(fx_rec), "http://fx-a/1"), USAGE, "not a mach:// address"),
        (("vis", "tx", "missing.amdbg", "mach://fx-a?i=1"), ERROR, "no such file"),
        (("vis", "tx", "fxmod.py", "mach://fx-a?i=1"), ERROR, "not a trio_am debugger recording"),
        (("vis", "schema", "nomodule_xyz:SCHEMA"), ERROR, "cannot import nomodule_xyz"),
        (("vis", "schema", "fxmod:NOPE"), ERROR, "has no attribute 'NOPE'"),
        (("vis", "schema", "fxmod"), USAGE, "expected MODULE:ATTR"),
        (("vis", "render", str(fx_rec), "--preset", "bogus"), USAGE, "invalid choice"),
        (("vis",), USAGE, "a subcommand is needed"),
    ]
    for args, code, words in cases:
        proc = cli(*args, cwd=fxmod)
        assert proc.returncode == code, (args, proc.stderr)
        assert words in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- schemas
def test_schema_mermaid_flags_active_and_filters() -> None:
    mach = am.Machine(am.schema_merge(am.BASIC_SCHEMA, FX_SCHEMA))
    mach.add1("Start")
    text = vis.schema_diagram(mach)
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert '    Ready["Ready (auto)"]' in lines
    assert '    Healthcheck["Healthcheck (multi)"]' in lines
    assert "    classDef active fill:#ffd54f,stroke:#333,color:#000" in lines
    assert lines[-1] == "    class Start,Ready active"
    own = vis.schema_diagram(mach, inherited=False)
    assert "Start" not in own and "Exception" not in own and "Foo" in own
    only = vis.schema_diagram(FX_SCHEMA, only=["Bar", "Foo"])
    assert only.splitlines()[1:] == ["    Foo", "    Bar", "    Bar -- add --> Foo"]


def test_schema_self_removal_is_no_edge() -> None:
    group = ["A", "B"]
    text = vis.schema_mermaid({"A": {"remove": group}, "B": {"remove": group}})
    assert "A -- remove --> B" in text and "B -- remove --> A" in text
    assert "A -- remove --> A" not in text


def test_schema_odd_names_get_safe_ids() -> None:
    text = vis.schema_mermaid({"end": {}, "a b": {"require": ["end"]}})
    lines = text.splitlines()
    assert '    s1["end"]' in lines and '    s2["a b"]' in lines
    assert "    s2 -- require --> s1" in lines
    d2 = vis.schema_d2({"Label": {}, "Foo": {"require": ["Label"]}, "x y": {}})
    assert 'Foo -> "Label": require' in d2.splitlines()
    assert '"x y"' in d2.splitlines()


def test_schema_d2_active_class() -> None:
    text = vis.schema_d2(FX_SCHEMA, active=["Foo"])
    assert "classes: {" in text and "Foo.class: active" in text.splitlines()


def test_schema_of_recorded_client_at_a_tx(fx_rec: Path, capsys) -> None:
    code, out, err = run(capsys, "schema", str(fx_rec), "mach://fx-a?i=4")
    assert (code, err) == (OK, "")
    # after tx 4 (add Baz, -Foo): Start Ready Bar Baz active
    assert out.splitlines()[-1] == "    class Start,Ready,Bar,Baz active"
    code, out, _ = run(capsys, "schema", str(fx_rec), "mach://fx-a")
    assert out.splitlines()[-1] == "    class Start,Ready,Foo,Bar,Healthcheck active"
    code, _o, err = run(capsys, "schema", str(fx_rec), "mach://fx-a?i=99")
    assert code == ERROR and "no such transition" in err


def test_schema_needs_a_machine_when_several(net_rec: Path, capsys) -> None:
    code, _o, err = run(capsys, "schema", str(net_rec))
    assert code == USAGE and "pick one with mach://ID" in err and "mach://src" in err
    code, out, _ = run(capsys, "schema", str(net_rec), "mach://src", "--no-inherited")
    assert code == OK and "Bar -- require --> Foo" in out and "Start" not in out


def test_schema_from_a_python_file(tmp_path: Path, capsys) -> None:
    f = tmp_path / "my_schema.py"
    f.write_text("S = {'A': {}, 'B': {'add': ['A']}}\n")
    code, out, _ = run(capsys, "schema", f"{f}:S", "-F", "d2")
    assert code == OK and out.splitlines()[-1] == "B -> A: add"


def test_schema_parts_rejects_other_objects() -> None:
    with pytest.raises(VisError, match="cannot draw a schema from int"):
        vis.schema_diagram(3)
    with pytest.raises(VisError, match="unknown format"):
        vis.schema_diagram(FX_SCHEMA, "svg")


# ---------------------------------------------------------------------------- transitions
def test_tx_sequence_mermaid(fx_rec: Path) -> None:
    text = vis.tx_diagram(fx_rec, "mach://fx-a?i=3")
    body = [ln for ln in text.splitlines() if not ln.lstrip().startswith("%%")]
    assert body == [
        "sequenceDiagram",
        "    participant Bar",
        "    participant Foo",
        "    Bar ->> Bar: called",
        "    Bar ->> Foo: add",
        "    Foo ->> Foo: Foo_enter",
        "    Bar ->> Bar: activate",
        "    Foo ->> Foo: activate",
    ]
    assert "%% [add] Bar (mach://fx-a/fx-a:3)" in text
    assert vis.tx_diagram(fx_rec, "mach://fx-a/fx-a:3") == text


def test_tx_canceled_and_d2_header(fx_rec: Path) -> None:
    text = vis.tx_diagram(fx_rec, "mach://fx-a?i=5")
    assert "    Baz ->> Foo: remove" in text.splitlines()
    assert text.splitlines()[-1] == "    Foo ->> Foo: cancel"
    d2 = vis.tx_diagram(fx_rec, "mach://fx-a?i=5", "d2")
    lines = d2.splitlines()
    assert lines[0] == "shape: sequence_diagram"
    assert "  **[add] Foo**" in lines
    assert "  - canceled: added 0, removed 0, touched 2" in lines
    assert "  - t6 -> t6" in lines
    assert lines[-1] == "Foo -> Foo: cancel"
    assert "Baz -> Foo: remove" in lines


def test_tx_state_trace_across_machines(net_rec: Path) -> None:
    d2 = vis.tx_diagram(net_rec, "mach://src-kid?i=1", "d2")
    i = d2.splitlines().index("  - state trace:")
    assert d2.splitlines()[i + 1 : i + 3] == [
        "    - mach://src/src:2 t2 [add] Foo",
        "    - mach://rc-c1 t0 (aRPC)",
    ]
    mm = vis.tx_diagram(net_rec, "mach://src-kid?i=1")
    assert "    %% from mach://src/src:2 t2 [add] Foo" in mm.splitlines()


@pytest.mark.parametrize(
    ("url", "code", "words"),
    [
        ("mach://fx-a", ERROR, "names no transition"),
        ("mach://fx-a?i=9", ERROR, "no such transition"),
        ("mach://fx-a/fx-a:99", ERROR, "no such transition"),
        ("mach://ghost?i=1", ERROR, "no machine 'ghost'"),
        ("fx-a?i=1", USAGE, "not a mach:// address"),
    ],
)
def test_tx_bad_addresses(fx_rec: Path, capsys, url: str, code: int, words: str) -> None:
    got, out, err = run(capsys, "tx", str(fx_rec), url)
    assert (got, out) == (code, "")
    assert words in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- graph
def test_links_found_in_a_recording(net_rec: Path) -> None:
    g = vis.build_graph(vis.load(net_rec))
    got = {
        (ln.kind, ln.source, ln.target, ln.op, ln.source_state, ln.target_state): g.counts[ln]
        for ln in g.links
    }
    assert got == {
        ("parent", "src-kid", "src", "", None, None): 1,
        ("parent", "rs-src", "src", "", None, None): 1,
        ("rpc", "rc-c1", "src", "", None, None): 2,
        ("pipe", "src", "src-kid", "add", "Foo", "Work"): 1,
        ("pipe", "src", "src-kid", "remove", "Foo", "Work"): 1,
    }
    assert g.ids() == ["rc-c1", "rs-src", "src", "src-kid"]


def _model(*msgs: tuple[int, list[Any]]) -> Model:
    m = Model()
    for conn, msg in msgs:
        m.ingest(conn, msg, 1)
    return m


def _schema(
    mid: str, names: list[str], parent: str | None = None, tags: list[str] | None = None
) -> list[Any]:
    return ["schema", mid, parent, tags or [], names, {}, {}, [], [0] * len(names), 0, 1]


def _tx(
    mid: str,
    tid: str,
    called: list[int],
    before: list[int],
    after: list[int],
    src: Any = None,
    typ: int = 0,
    args: dict[str, str] | None = None,
) -> list[Any]:
    return [
        "tx",
        mid,
        tid,
        typ,
        called,
        args or {},
        4,
        [],
        before,
        after,
        [],
        [],
        None,
        0,
        1,
        1,
        0,
        src,
        1,
        2,
        None,
        None,
    ]


def test_links_between_processes_are_rpc_and_guesses_are_grouped() -> None:
    m = _model(
        (1, _schema("a", ["A1", "A2"])),
        (2, _schema("b", ["B1"])),
        (1, _schema("c", ["C1"])),
        (1, _schema("rs-a", ["ClientConnected", "ErrRpc"], parent="a", tags=["rpc-server"])),
        (3, _schema("rc-x", ["Ready"], tags=["rpc-client"])),
        # a: one tx activating both A1 and A2 (called A1 and A2)
        (1, _tx("a", "a:1", [0, 1], [0, 0], [1, 1])),
        # b (another process) mutated from a's tx: aRPC
        (2, _tx("b", "b:1", [0], [0], [1], src=["a", "a:1", 2])),
        # c (same process): a pipe, source state ambiguous -> grouped
        (1, _tx("c", "c:1", [0], [0], [1], src=["a", "a:1", 2])),
        # the server names its client in logged args (only ClientConnected counts)
        (1, _tx("rs-a", "rs-a:1", [0], [0, 0], [1, 0], args={"client": "x"})),
        (1, _tx("rs-a", "rs-a:2", [1], [1, 0], [1, 1], args={"id": "y"})),
    )
    g = vis.build_graph(m)
    kinds = {(ln.kind, ln.source, ln.target, ln.source_state, ln.target_state) for ln in g.links}
    assert ("rpc", "a", "b", None, None) in kinds
    assert ("pipe", "a", "c", None, "C1") in kinds
    assert ("rpc", "rc-x", "rs-a", None, None) in kinds
    assert not any(ln.source == "y" for ln in g.links)
    md = vis.inspect(g)
    assert "- [add] * -> C1" in md


def test_render_single_bird_map(net_rec: Path) -> None:
    single = vis.graph_diagram(net_rec, "mach://src-kid")
    lines = single.splitlines()
    assert lines[0] == "flowchart LR"
    assert any(ln.strip().startswith("subgraph") and '"src-kid"' in ln for ln in lines)
    assert sum(ln.strip().startswith("subgraph") for ln in lines) == 1
    # src is outside the selection: a half node, linked by parent and both pipes
    assert any('(["src"]):::half' in ln for ln in lines)
    assert any("== parent ==>" in ln for ln in lines)
    assert any("-- add -->" in ln for ln in lines) and any("-- remove --x" in ln for ln in lines)
    no_half = vis.graph_diagram(net_rec, "mach://src-kid", half=False)
    assert ":::half" not in no_half and "parent" not in no_half
    bird = vis.graph_diagram(net_rec, "src", preset="bird")
    assert '"rc-c1 #rpc-client"' in bird and '"src-kid"' in bird
    assert "-. rpc .->" in bird
    assert '["Start"]' not in bird and '["Foo"]' in bird  # no inherited states
    assert "-- add -->" in bird  # detailed pipe, state to state
    m = vis.graph_diagram(net_rec, preset="map").splitlines()
    src = next(i for i, ln in enumerate(m) if ln.startswith("    subgraph") and '"src"' in ln)
    end = m.index("    end", src)
    inside = "\n".join(m[src:end])
    assert '["rs-src"]' in inside and '["src-kid"]' in inside
    assert '["rc-c1"]' in "\n".join(m[:src] + m[end:])
    assert "State" not in "\n".join(m) and "Foo" not in "\n".join(m)


def test_render_d2(net_rec: Path) -> None:
    text = vis.graph_diagram(net_rec, "src", preset="bird", fmt="d2")
    lines = text.splitlines()
    assert lines[0] == "direction: right"
    assert '"src": {' in lines and "  Foo" in lines and "  Bar -> Foo: require" in lines
    assert '"src".Foo -> "src-kid".Work: add' in lines
    assert '"rc-c1" -> "src": rpc {style.stroke-dash: 3}' in lines
    assert '"src-kid" -> "src": parent {style.stroke-width: 3}' in lines
    nested = vis.graph_diagram(net_rec, preset="map", fmt="d2").splitlines()
    assert '"src" -> "src"."src-kid": pipe' in nested


def test_render_options_from_cli(net_rec: Path, capsys) -> None:
    code, out, _ = run(
        capsys,
        "render",
        str(net_rec),
        "mach://src",
        "--no-render-states",
        "-d",
        "1",
        "--no-render-rpc",
    )
    assert code == OK
    assert "-. rpc .->" not in out and "rc-c1" not in out  # no rpc links: rc-c1 is not near
    assert '["src #app"]' in out and '["rs-src #rpc-server"]' in out and "subgraph" not in out
    code, _o, err = run(capsys, "render", str(net_rec), "mach://ghost")
    assert code == ERROR and "no machine 'ghost'" in err


def test_distance_and_depth(net_rec: Path) -> None:
    g = vis.build_graph(vis.load(net_rec))
    from trio_am.vis._graph import select

    assert select(g, ["rc-c1"], vis.preset("single")) == ["rc-c1"]
    assert select(g, ["rc-c1"], vis.preset("single", distance=1)) == ["rc-c1", "src"]
    assert select(g, ["rc-c1"], vis.preset("single", distance=2)) == [
        "rc-c1",
        "rs-src",
        "src",
        "src-kid",
    ]
    assert select(g, ["src"], vis.preset("single", depth=1)) == ["rs-src", "src", "src-kid"]
    with pytest.raises(VisError, match="unknown preset"):
        vis.preset("nope")


def test_inspect_markdown_and_xml(net_rec: Path) -> None:
    md = vis.inspect(net_rec)
    sec = md.split("## src\n", 1)[1].split("-----", 1)[0]
    assert "Tags: #app" in sec
    assert "- Foo (t2)" in sec  # added, then removed at the end
    assert "### RPC\n- from rc-c1" in sec
    assert "#### src-kid\n- [add] Foo -> Work\n- [remove] Foo -> Work" in sec
    assert "## src-kid\nTime: t2\nParent: src" in md
    root = ET.fromstring(vis.inspect(net_rec, "xml"))
    assert [m.get("id") for m in root.findall("machine")] == ["rc-c1", "src"]
    src = root.find("machine[@id='src']")
    assert src is not None
    assert [m.get("id") for m in src.findall("machine")] == ["rs-src", "src-kid"]
    pipe = src.find("pipe[@op='add']")
    assert pipe is not None and pipe.attrib == {
        "to": "src-kid",
        "op": "add",
        "count": "1",
        "from-state": "Foo",
        "to-state": "Work",
    }
    bar = src.find("state[@name='Bar']")
    assert bar is not None and bar.findtext("require") == "Foo"
    assert src.find("rpc").attrib == {"from": "rc-c1", "count": "2"}  # type: ignore[union-attr]


def test_inspect_cli_files(net_rec: Path, tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "inspect", str(net_rec), "-o", str(tmp_path / "dump"))
    assert code == OK
    assert (tmp_path / "dump.md").read_text().startswith("# trio-am vis inspect")
    ET.fromstring((tmp_path / "dump.xml").read_text())
    assert out.splitlines() == [f"wrote {tmp_path / 'dump.md'}", f"wrote {tmp_path / 'dump.xml'}"]
    code, out, _ = run(capsys, "inspect", str(net_rec), "--xml")
    assert out.startswith("<graph>")


# ---------------------------------------------------------------------------- files, svg
def test_output_file_and_svg(fx_rec: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    code, out, _ = run(capsys, "tx", str(fx_rec), "mach://fx-a?i=3", "-o", str(tmp_path / "t"))
    assert code == OK and out == f"wrote {tmp_path / 't.mermaid'}\n"
    assert (tmp_path / "t.mermaid").read_text().startswith("sequenceDiagram")
    code, _o, _e = run(
        capsys, "tx", str(fx_rec), "mach://fx-a?i=3", "-F", "d2", "-o", str(tmp_path / "t.d2")
    )
    assert code == OK and (tmp_path / "t.d2").read_text().startswith("shape: sequence_diagram")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, _o, err = run(
        capsys, "tx", str(fx_rec), "mach://fx-a?i=3", "-o", str(tmp_path / "t"), "--svg"
    )
    assert code == ERROR and "--svg needs mmdc" in err
    code, _o, err = run(capsys, "tx", str(fx_rec), "mach://fx-a?i=3", "--svg")
    assert code == USAGE and "--svg needs -o" in err
    # a stand-in renderer that copies its input
    fake = empty / "mmdc"
    fake.write_text(
        '#!/bin/sh\nwhile [ "$#" -gt 0 ]; do case "$1" in -i) i="$2";; -o) o="$2";; esac; shift; done\ncp "$i" "$o"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{empty}{os.pathsep}/usr/bin{os.pathsep}/bin")
    code, out, err = run(
        capsys, "tx", str(fx_rec), "mach://fx-a?i=3", "-o", str(tmp_path / "s"), "--svg"
    )
    assert (code, err) == (OK, "")
    assert (tmp_path / "s.svg").read_text() == (tmp_path / "s.mermaid").read_text()
    assert out.splitlines()[-1] == f"wrote {tmp_path / 's.svg'}"


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(VisError, match="no such file") as ei:
        vis.load(tmp_path / "none.amdbg")
    assert ei.value.code == ERROR
    with pytest.raises(VisError, match="is a directory"):
        vis.load(tmp_path)
    junk = tmp_path / "junk.amdbg"
    junk.write_bytes(b"TAMDBG\x09\x00")
    with pytest.raises(VisError, match="unsupported recording version"):
        vis.load(junk)


# ---------------------------------------------------------------------------- notebooks
def test_show_in_a_notebook(monkeypatch) -> None:
    text = vis.schema_diagram(FX_SCHEMA)
    display = pytest.importorskip("IPython.display")
    md = vis.show(text)
    assert isinstance(md, display.Markdown)
    assert md.data == "```mermaid\n" + text.rstrip() + "\n```\n"
    assert vis.markdown(vis.schema_diagram(FX_SCHEMA, "d2")).startswith("```d2\n")
    monkeypatch.setitem(sys.modules, "IPython.display", None)
    assert vis.show(text) == "```mermaid\n" + text.rstrip() + "\n```\n"
