"""Data-driven conformance tests for the core: ``scenarios-core.md``.

The markdown file is parsed and every ``### Sxxx`` scenario becomes one pytest case (its
id is the scenario id). The contract for reading a scenario is the file's own "How to read
a scenario" section. The parser is strict: a construct it does not know raises
:class:`ScenarioSyntaxError` naming the scenario and the line, so a new scenario never
passes by being silently skipped.

Source file, in order of preference:

1. ``$TRIO_AM_SCENARIOS_CORE`` (a path), when set;
2. ``../shared/spec/scenarios-core.md`` next to the repository root, when present;
3. the vendored copy ``tests/data/scenarios-core.md``.

The parser is made of small pure functions (``split_top``, ``go_to_py``,
``parse_handler_seq``, ...) with their own unit tests at the end of this file; they run
without the engine. The engine (``trio_am``) is imported inside the scenario test only.
"""

from __future__ import annotations

import ast
import collections
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
VENDORED_PATH = HERE / "data" / "scenarios-core.md"
SHARED_PATH = REPO_ROOT.parent / "shared" / "spec" / "scenarios-core.md"
ENV_VAR = "TRIO_AM_SCENARIOS_CORE"


def scenarios_path() -> Path:
    """The scenario file to run (see the module docstring)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    if SHARED_PATH.is_file():
        return SHARED_PATH
    return VENDORED_PATH


# =========================================================================================
# Errors and small lexical helpers
# =========================================================================================


class ScenarioSyntaxError(ValueError):
    """A construct of the scenario file that this parser does not understand."""


_CLOSERS = {"[": "]", "{": "}", "(": ")"}
_QUOTES = "'\"`"


def split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` where it occurs outside brackets and quotes.

    Brackets are ``[] {} ()``; quotes are ``' " `````. Parts are stripped. Unbalanced
    brackets or quotes raise ScenarioSyntaxError.
    """
    parts: list[str] = []
    stack: list[str] = []
    quote: str | None = None
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quote is not None:
            if ch == "\\" and quote != "`":
                i += 2
                continue
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch in _QUOTES:
            quote = ch
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in "]})":
            if not stack or stack.pop() != ch:
                raise ScenarioSyntaxError(f"unbalanced {ch!r} in {text!r}")
        elif not stack and text.startswith(sep, i):
            parts.append(text[start:i].strip())
            i += len(sep)
            start = i
            continue
        i += 1
    if stack or quote is not None:
        raise ScenarioSyntaxError(f"unbalanced brackets or quotes in {text!r}")
    parts.append(text[start:].strip())
    return parts


def matching_close(text: str, open_idx: int) -> int:
    """Index of the bracket closing the one at ``open_idx`` (quotes respected)."""
    stack: list[str] = []
    quote: str | None = None
    i = open_idx
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in _QUOTES:
            quote = ch
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in "]})":
            if not stack or stack.pop() != ch:
                raise ScenarioSyntaxError(f"unbalanced {ch!r} in {text!r}")
            if not stack:
                return i
        i += 1
    raise ScenarioSyntaxError(f"unclosed {text[open_idx]!r} in {text!r}")


# =========================================================================================
# Handler names
# =========================================================================================

SUFFIXES = ("Enter", "Exit", "State", "End")
GLOBAL_HANDLERS = {"AnyEnter": "any_enter", "AnyState": "any_state"}


def go_to_py(go_name: str, states: list[str]) -> str:
    """Convert a Go handler name (``AEnter``, ``AB``, ``AnyEnter``) to the Python one.

    Every split of ``go_name`` into a known state followed by a suffix (``Enter``,
    ``Exit``, ``State``, ``End``) or by a second known state is considered; exactly one
    must exist (an ambiguous or unknown name raises ScenarioSyntaxError).
    """
    if go_name in GLOBAL_HANDLERS:
        return GLOBAL_HANDLERS[go_name]
    found: set[str] = set()
    for s in states:
        if not go_name.startswith(s):
            continue
        rest = go_name[len(s) :]
        if rest in SUFFIXES:
            found.add(f"{s}_{rest.lower()}")
        if rest in states:
            found.add(f"{s}_{rest}")
    if not found:
        raise ScenarioSyntaxError(f"handler name {go_name!r} matches no state of {states}")
    if len(found) > 1:
        raise ScenarioSyntaxError(f"handler name {go_name!r} is ambiguous: {sorted(found)}")
    return found.pop()


def all_handler_names(states: list[str]) -> list[str]:
    """Every Python handler name for ``states``: 4 suffix ones per state, every ordered
    pair (self included), ``any_enter`` and ``any_state``."""
    names = [f"{s}_{suf}" for s in states for suf in ("enter", "exit", "state", "end")]
    names += [f"{a}_{b}" for a in states for b in states]
    names += ["any_enter", "any_state"]
    return names


# =========================================================================================
# Values, results and calls
# =========================================================================================


@dataclass(frozen=True)
class ResultSpec:
    """An expected mutation result: ``Executed``, ``Canceled`` or ``Queued(n)``."""

    kind: str
    queue_tick: int | None = None

    def __str__(self) -> str:
        return f"Queued({self.queue_tick})" if self.kind == "Queued" else self.kind


@dataclass(frozen=True)
class Ref:
    """A bare name in a call: a state name or a scenario variable (``w``, ``c``)."""

    name: str


@dataclass(frozen=True)
class LambdaSrc:
    """A lambda given as source text (``when_query``)."""

    source: str


@dataclass(frozen=True)
class Raised:
    """An actual sub-call that raised (for reports)."""

    text: str

    def __str__(self) -> str:
        return f"raised {self.text}"


_RESULT_RE = re.compile(r"(Executed|Canceled|Queued)(?:\((\d+)\))?")


def parse_result(text: str) -> ResultSpec | None:
    """``Executed`` / ``Canceled`` / ``Queued(n)`` (optionally bold) or None."""
    t = text.strip()
    m = re.fullmatch(r"\*\*(.+)\*\*", t)
    if m:
        t = m.group(1).strip()
    m = _RESULT_RE.fullmatch(t)
    if not m:
        return None
    kind, tick = m.group(1), m.group(2)
    if kind != "Queued" and tick is not None:
        raise ScenarioSyntaxError(f"only Queued takes a tick: {text!r}")
    return ResultSpec(kind, int(tick) if tick is not None else None)


def parse_value(text: str) -> Any:
    """A result or query value: a ResultSpec, a bool (``true``/``false``), None
    (``nil``/``None``), a Python literal, or else the raw text (e.g. an error message)."""
    t = text.strip()
    if t.startswith("**"):
        res = parse_result(t)
        if res is None:
            raise ScenarioSyntaxError(f"unknown bold result {text!r}")
        return res
    res = parse_result(t)
    if res is not None:
        return res
    if t in ("true", "false"):
        return t == "true"
    if t in ("nil", "None", "null"):
        return None
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError):
        return t


def _convert_node(node: ast.AST, source: str) -> Any:
    """Convert an argument AST node: names become Ref, literals stay, lambdas keep
    their source text."""
    if isinstance(node, ast.Name):
        return Ref(node.id)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        return [_convert_node(e, source) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values, strict=True):
            if k is None:
                raise ScenarioSyntaxError(f"'**' is not supported in {source!r}")
            out[_convert_node(k, source)] = _convert_node(v, source)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return ast.literal_eval(node)
    if isinstance(node, ast.Lambda):
        seg = ast.get_source_segment(source, node)
        assert seg is not None
        return LambdaSrc(seg)
    raise ScenarioSyntaxError(f"unsupported argument {ast.dump(node)} in {source!r}")


@dataclass(frozen=True)
class CallSpec:
    """A call as written in a scenario: ``add1(C, args={"x": 1})``."""

    method: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]
    text: str
    comment: str | None = None

    def kwargs_dict(self) -> dict[str, Any]:
        return dict(self.kwargs)


def parse_call(text: str) -> CallSpec:
    """Parse ``name(args...)``, optionally followed by a parenthesised comment
    (``time() (all states, declared order)``)."""
    t = text.strip()
    comment = None
    try:
        tree = ast.parse(t, mode="eval")
        if not isinstance(tree.body, ast.Call):
            raise SyntaxError("not a call")
    except SyntaxError:
        m = re.fullmatch(r"(.*\))\s+\(([^()]*)\)", t)
        if not m:
            raise ScenarioSyntaxError(f"cannot parse call {text!r}") from None
        t, comment = m.group(1), m.group(2)
        try:
            tree = ast.parse(t, mode="eval")
        except SyntaxError:
            raise ScenarioSyntaxError(f"cannot parse call {text!r}") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ScenarioSyntaxError(f"not a plain function call: {text!r}")
    args = tuple(_convert_node(a, t) for a in call.args)
    kwargs = []
    for kw in call.keywords:
        if kw.arg is None:
            raise ScenarioSyntaxError(f"'**' is not supported in {text!r}")
        kwargs.append((kw.arg, _convert_node(kw.value, t)))
    return CallSpec(call.func.id, args, tuple(kwargs), t, comment)


def flatten_args(args: Any) -> tuple[Any, ...]:
    """Flatten nested positional arguments, Refs become their names: ``add([C])`` and
    ``add(C)`` both give ``("C",)``."""
    out: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, list | tuple):
            for x in v:
                walk(x)
        elif isinstance(v, Ref):
            out.append(v.name)
        else:
            out.append(v)

    walk(args)
    return tuple(out)


# =========================================================================================
# Handler sequences: ``A → {B, C} → D[add1(E) → Queued(3); is_all(A) → true]``
# =========================================================================================


@dataclass(frozen=True)
class SubCall:
    """One thing a handler did, with its result: expected (from ``X[...]``) or actual."""

    method: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]
    result: Any

    def render(self) -> str:
        args = ", ".join(str(a) for a in self.args)
        kw = "".join(f"{{{k}={v!r}}}" if k != "args" else repr(v) for k, v in self.kwargs)
        return f"{self.method}({args}){kw} → {render_value(self.result)}"


@dataclass(frozen=True)
class HandlerCall:
    """One expected handler invocation; ``subcalls`` is what ``X[...]`` lists."""

    name: str
    go_name: str
    subcalls: tuple[SubCall, ...] = ()

    def render(self) -> str:
        if not self.subcalls:
            return self.name
        return f"{self.name}[{'; '.join(s.render() for s in self.subcalls)}]"


@dataclass(frozen=True)
class Group:
    """``{X, Y}``: all members run consecutively, in any order."""

    members: tuple[HandlerCall, ...]

    def render(self) -> str:
        return "{" + ", ".join(m.render() for m in self.members) + "}"


def parse_subcall(text: str) -> SubCall:
    """One entry of ``X[...]``: ``call(args){json args}? → result``; ``ctxErr(c)`` is the
    expiry check of the state context variable ``c``."""
    parts = split_top(text, " → ")
    if len(parts) != 2:
        raise ScenarioSyntaxError(f"annotation entry needs 'call → result': {text!r}")
    call_text, result_text = parts
    m = re.match(r"([A-Za-z_]\w*)\(", call_text)
    if not m:
        raise ScenarioSyntaxError(f"annotation entry is not a call: {text!r}")
    close = matching_close(call_text, m.end() - 1)
    head, tail = call_text[: close + 1], call_text[close + 1 :].strip()
    call = parse_call(head)
    if call.comment is not None:
        raise ScenarioSyntaxError(f"unexpected comment in annotation {text!r}")
    kwargs = dict(call.kwargs)
    if tail:
        if not (tail.startswith("{") and tail.endswith("}")):
            raise ScenarioSyntaxError(f"unknown text after the call in {text!r}")
        try:
            kwargs["args"] = ast.literal_eval(tail)
        except (ValueError, SyntaxError):
            raise ScenarioSyntaxError(f"bad args dict in annotation {text!r}") from None
    return SubCall(
        call.method,
        flatten_args(call.args),
        tuple(sorted(kwargs.items())),
        parse_value(result_text),
    )


_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def parse_handler_item(text: str, states: list[str]) -> HandlerCall:
    """``Name`` or ``Name[entry; entry]``."""
    m = _NAME_RE.match(text)
    if not m:
        raise ScenarioSyntaxError(f"bad handler item {text!r}")
    go_name = m.group(0)
    rest = text[m.end() :]
    subcalls: tuple[SubCall, ...] = ()
    if rest:
        if not rest.startswith("[") or matching_close(rest, 0) != len(rest) - 1:
            raise ScenarioSyntaxError(f"bad handler item {text!r}")
        inner = rest[1:-1].strip()
        if not inner:
            raise ScenarioSyntaxError(f"empty annotation in {text!r}")
        subcalls = tuple(parse_subcall(p) for p in split_top(inner, ";"))
    return HandlerCall(go_to_py(go_name, states), go_name, subcalls)


def parse_handler_seq(text: str, states: list[str]) -> list[HandlerCall | Group]:
    """A handler list: ``no handlers``, or items separated by ``→``, where an item is a
    handler (optionally annotated) or a ``{...}`` group of them."""
    t = text.strip()
    if t == "no handlers":
        return []
    items: list[HandlerCall | Group] = []
    for part in split_top(t, "→"):
        if not part:
            raise ScenarioSyntaxError(f"empty item in handler list {text!r}")
        if part.startswith("{"):
            if matching_close(part, 0) != len(part) - 1:
                raise ScenarioSyntaxError(f"bad group {part!r}")
            members = tuple(parse_handler_item(p, states) for p in split_top(part[1:-1], ","))
            if len(members) < 1 or any(not m.name for m in members):
                raise ScenarioSyntaxError(f"bad group {part!r}")
            items.append(Group(members))
        else:
            items.append(parse_handler_item(part, states))
    return items


def render_seq(items: list[HandlerCall | Group]) -> str:
    return " → ".join(i.render() for i in items) if items else "no handlers"


# =========================================================================================
# Scenario structure
# =========================================================================================


@dataclass(frozen=True)
class TxSpec:
    type: str
    auto: bool
    dry_run: bool
    called: tuple[str, ...]
    handlers: tuple[HandlerCall | Group, ...]
    accepted: bool
    state_after: str | None
    text: str


_UNSET: Any = object()


@dataclass
class ThenSpec:
    state: str | None = None
    queue_tick: int | None = None
    err: Any = _UNSET  # expected str(err) (or None), _UNSET when not listed
    resolved: tuple[str, ...] = ()


@dataclass
class StepSpec:
    number: int
    text: str
    var: str | None
    call: CallSpec
    expected: Any = _UNSET  # a ResultSpec or a value, _UNSET for assignments
    txs: list[TxSpec] = field(default_factory=list)
    then: ThenSpec | None = None


@dataclass(frozen=True)
class Action:
    """One thing a handler does: a machine call, or ``ctx_check`` of a variable."""

    kind: str  # "call" | "ctx_check"
    call: CallSpec | None = None
    var: str | None = None


@dataclass(frozen=True)
class Behaviour:
    go_name: str
    name: str
    on_calls: frozenset[int] | None  # None = every call
    actions: tuple[Action, ...]
    final: tuple[str, Any] | None  # ("return", False) | ("raise", "boom")


@dataclass
class Scenario:
    id: str
    title: str
    state_order: list[str]
    schema: dict[str, dict[str, Any]]
    strict: bool = False
    behaviours: list[Behaviour] = field(default_factory=list)
    steps: list[StepSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    origin: str = ""

    @property
    def states(self) -> list[str]:
        """All state names (Exception included)."""
        return self.state_order + ([] if "Exception" in self.state_order else ["Exception"])

    @property
    def needs_nursery(self) -> bool:
        """True when a step or a handler registers a subscription or a state context."""
        calls = [s.call for s in self.steps]
        calls += [a.call for b in self.behaviours for a in b.actions if a.call is not None]
        return any(c.method.startswith("when") or c.method == "state_ctx" for c in calls)


# ---------------------------------------------------------------------------------------
# Line parsers
# ---------------------------------------------------------------------------------------

_REL_KEYS = ("require", "add", "remove", "after", "tags")


def parse_schema(text: str) -> dict[str, dict[str, Any]]:
    """``A: -; B: auto multi require=[A] add=[C] remove=[D] after=[E]``."""
    schema: dict[str, dict[str, Any]] = {}
    for entry in split_top(text, ";"):
        m = re.fullmatch(r"([A-Za-z]\w*):\s*(.+)", entry)
        if not m:
            raise ScenarioSyntaxError(f"bad schema entry {entry!r}")
        name, props_text = m.group(1), m.group(2).strip()
        if name in schema:
            raise ScenarioSyntaxError(f"state {name!r} listed twice in the schema")
        props: dict[str, Any] = {}
        if props_text != "-":
            for tok in split_top(props_text, " "):
                if not tok:
                    continue
                if tok in ("auto", "multi"):
                    props[tok] = True
                    continue
                rm = re.fullmatch(r"(\w+)=\[(.*)\]", tok)
                if not rm or rm.group(1) not in _REL_KEYS:
                    raise ScenarioSyntaxError(f"unknown schema property {tok!r} of {name}")
                inner = rm.group(2).strip()
                vals = [v.strip() for v in inner.split(",")] if inner else []
                if any(not _NAME_RE.fullmatch(v) for v in vals):
                    raise ScenarioSyntaxError(f"bad list in {tok!r}")
                props[rm.group(1)] = vals
        schema[name] = props
    return schema


_TX_RE = re.compile(
    r"tx (?P<type>\w+)(?: \((?P<flag>[^)]*)\))? \[(?P<called>[^\]]*)\]: (?P<handlers>.*);"
    r" (?P<outcome>accepted|canceled)(?: → `(?P<state>[^`]*)`)?"
)


def parse_tx(text: str, states: list[str]) -> TxSpec:
    """``tx add (auto) [A B]: handlers; accepted → `(A:1) [...]```."""
    m = _TX_RE.fullmatch(text.strip())
    if not m:
        raise ScenarioSyntaxError(f"bad tx line {text!r}")
    if m.group("type") not in ("add", "remove", "set"):
        raise ScenarioSyntaxError(f"unknown mutation type in {text!r}")
    flag = m.group("flag")
    if flag not in (None, "auto", "dry run"):
        raise ScenarioSyntaxError(f"unknown tx flag ({flag}) in {text!r}")
    called = tuple(m.group("called").split())
    for s in called:
        if s not in states:
            raise ScenarioSyntaxError(f"unknown state {s!r} in {text!r}")
    return TxSpec(
        type=m.group("type"),
        auto=flag == "auto",
        dry_run=flag == "dry run",
        called=called,
        handlers=tuple(parse_handler_seq(m.group("handlers"), states)),
        accepted=m.group("outcome") == "accepted",
        state_after=m.group("state"),
        text=text.strip(),
    )


def parse_then(text: str) -> ThenSpec:
    """``state `...`; queue tick N; err() = 'e1'; resolved: w, c``."""
    then = ThenSpec()
    for part in split_top(text.strip(), ";"):
        if m := re.fullmatch(r"state `([^`]*)`", part):
            then.state = m.group(1)
        elif m := re.fullmatch(r"queue tick (\d+)", part):
            then.queue_tick = int(m.group(1))
        elif m := re.fullmatch(r"err\(\) = (.+)", part):
            val = parse_value(m.group(1))
            then.err = None if val is None else str(val)
        elif m := re.fullmatch(r"(?:resolved|expired): (.+)", part):
            then.resolved += tuple(v.strip() for v in m.group(1).split(","))
        else:
            raise ScenarioSyntaxError(f"unknown part {part!r} of a then: line")
    return then


_STEP_RE = re.compile(r"(\d+)\. `([^`]+)`(?: → (.+))?")


def parse_step_line(text: str) -> StepSpec:
    """``N. `call` → result`` or ``N. `var = call```."""
    m = _STEP_RE.fullmatch(text.strip())
    if not m:
        raise ScenarioSyntaxError(f"bad step line {text!r}")
    number, body, result = int(m.group(1)), m.group(2).strip(), m.group(3)
    var = None
    if vm := re.fullmatch(r"([A-Za-z_]\w*) = (.+)", body):
        var, body = vm.group(1), vm.group(2)
    step = StepSpec(number, text.strip(), var, parse_call(body))
    if result is not None:
        step.expected = parse_value(result)
    return step


def parse_behaviour(text: str, states: list[str]) -> Behaviour:
    """``- `AEnter` (only on its call #1): calls add1(B), is_all([A]) (in this order);
    then returns false`` (also ``returns false``, ``raises an error 'boom'``,
    ``calls c = check whether c expired``)."""
    m = re.fullmatch(r"- `(\w+)`(?: \(only on its calls? ([^)]*)\))?: (.+)", text.strip())
    if not m:
        raise ScenarioSyntaxError(f"bad handler behaviour line {text!r}")
    go_name, calls_text, body = m.group(1), m.group(2), m.group(3).strip()
    on_calls = None
    if calls_text is not None:
        nums = re.findall(r"#(\d+)", calls_text)
        if not nums or re.sub(r"#\d+|,|and|\s", "", calls_text):
            raise ScenarioSyntaxError(f"bad call numbers {calls_text!r}")
        on_calls = frozenset(int(n) for n in nums)
    actions: list[Action] = []
    final_text: str | None = body
    if cm := re.fullmatch(r"calls (.+?) \(in this order\)(?:; then (.+))?", body):
        final_text = cm.group(2)
        for part in split_top(cm.group(1), ","):
            if xm := re.fullmatch(r"(\w+) = check whether (\w+) expired", part):
                actions.append(Action("ctx_check", var=xm.group(2)))
            else:
                call = parse_call(part)
                if call.comment is not None:
                    raise ScenarioSyntaxError(f"unexpected comment in {part!r}")
                actions.append(Action("call", call=call))
    final: tuple[str, Any] | None = None
    if final_text is not None:
        ft = final_text.strip()
        if fm := re.fullmatch(r"returns (false|true)", ft):
            final = ("return", fm.group(1) == "true")
        elif fm := re.fullmatch(r"raises an error '([^']*)'", ft):
            final = ("raise", fm.group(1))
        else:
            raise ScenarioSyntaxError(f"unknown handler behaviour {ft!r}")
    return Behaviour(go_name, go_to_py(go_name, states), on_calls, tuple(actions), final)


# ---------------------------------------------------------------------------------------
# Blocks and scenarios
# ---------------------------------------------------------------------------------------

_HEADING_RE = re.compile(r"### (\S+)(?: (.*))?")


@dataclass
class Block:
    id: str
    title: str
    lines: list[tuple[int, str]]  # (line number, text) after the heading


def split_blocks(text: str) -> list[Block]:
    """Split the file into scenario blocks (``### Sxxx title``). A ``##`` heading ends a
    block; any other ``###`` heading is an error; duplicate ids are an error."""
    blocks: list[Block] = []
    current: Block | None = None
    seen: set[str] = set()
    for no, line in enumerate(text.splitlines(), start=1):
        if line.startswith("### "):
            m = _HEADING_RE.fullmatch(line.rstrip())
            if not m or not re.fullmatch(r"S\d+\w*", m.group(1)):
                raise ScenarioSyntaxError(f"line {no}: not a scenario heading: {line!r}")
            sid = m.group(1)
            if sid in seen:
                raise ScenarioSyntaxError(f"line {no}: duplicate scenario id {sid}")
            seen.add(sid)
            current = Block(sid, (m.group(2) or "").strip(), [])
            blocks.append(current)
        elif line.startswith("## ") or line.startswith("# "):
            current = None
        elif current is not None:
            current.lines.append((no, line))
    return blocks


def parse_scenario(block: Block) -> Scenario:
    """Parse one block into a Scenario; errors name the scenario and the line."""
    try:
        return _parse_scenario(block)
    except ScenarioSyntaxError as exc:
        raise ScenarioSyntaxError(f"scenario {block.id}: {exc}") from None


def _parse_scenario(block: Block) -> Scenario:
    meta: dict[str, str] = {}
    behaviour_lines: list[str] = []
    steps: list[StepSpec] = []
    notes: list[str] = []
    strict = False
    section = "meta"  # meta | behaviour | steps

    for no, raw in block.lines:
        line = raw.rstrip()
        if not line.strip():
            continue
        try:
            if re.match(r"\d+\. ", line):
                section = "steps"
                steps.append(parse_step_line(line))  # converted later (needs states)
            elif section == "steps" and re.match(r"\s+- ", line):
                item = line.strip()[2:]
                if item.startswith("tx "):
                    steps[-1].txs.append(item)  # type: ignore[arg-type]
                elif item.startswith("then: "):
                    if steps[-1].then is not None:
                        raise ScenarioSyntaxError("two then: lines in one step")
                    steps[-1].then = parse_then(item[len("then: ") :])
                else:
                    raise ScenarioSyntaxError(f"unknown step item {item!r}")
            elif section == "behaviour" and re.match(r"\s+- ", line):
                behaviour_lines.append(line.strip())
            elif section in ("meta", "behaviour") and line.startswith("- "):
                section = "meta"
                m = re.fullmatch(r"- ([A-Za-z ]+?)(?: \([^)]*\))?:(?: (.*))?", line)
                if not m:
                    raise ScenarioSyntaxError(f"bad metadata line {line!r}")
                key, value = m.group(1), (m.group(2) or "").strip()
                if key == "Handler behaviour":
                    if value:
                        raise ScenarioSyntaxError("Handler behaviour items go on their own lines")
                    section = "behaviour"
                elif key in ("Origin", "State order", "Schema"):
                    if key in meta:
                        raise ScenarioSyntaxError(f"{key} given twice")
                    meta[key] = value
                elif key == "Ordering":
                    if not value.startswith("STRICT"):
                        raise ScenarioSyntaxError(f"unknown ordering {value!r}")
                    strict = True
                elif key == "Note":
                    notes.append(value)
                else:
                    raise ScenarioSyntaxError(f"unknown metadata key {key!r}")
            else:
                raise ScenarioSyntaxError(f"unexpected line {line!r}")
        except ScenarioSyntaxError as exc:
            raise ScenarioSyntaxError(f"line {no}: {exc}") from None

    for key in ("State order", "Schema"):
        if key not in meta:
            raise ScenarioSyntaxError(f"missing '- {key}:'")
    if not steps:
        raise ScenarioSyntaxError("no steps")
    order = meta["State order"].split()
    if len(set(order)) != len(order):
        raise ScenarioSyntaxError("duplicate state in State order")
    parsed_schema = parse_schema(meta["Schema"])
    for name in parsed_schema:
        if name not in order:
            raise ScenarioSyntaxError(f"schema state {name} missing from State order")
    schema: dict[str, dict[str, Any]] = {}
    for name in order:
        if name in parsed_schema:
            schema[name] = parsed_schema[name]
        elif name != "Exception":
            raise ScenarioSyntaxError(f"state {name} of State order missing from the schema")
    scn = Scenario(
        block.id, block.title, order, schema, strict, notes=notes, origin=meta.get("Origin", "")
    )
    states = scn.states
    for props in schema.values():
        for key in ("require", "add", "remove", "after"):
            for s in props.get(key, []):
                if s not in states:
                    raise ScenarioSyntaxError(f"relation to unknown state {s}")
    scn.behaviours = [parse_behaviour(b, states) for b in behaviour_lines]

    # steps: numbering, tx lines, variables
    variables: set[str] = set()
    for idx, step in enumerate(steps, start=1):
        if step.number != idx:
            raise ScenarioSyntaxError(f"step {step.number} out of order (expected {idx})")
        step.txs = [parse_tx(t, states) for t in step.txs]  # type: ignore[arg-type]
        if step.var is not None:
            if step.var in variables:
                raise ScenarioSyntaxError(f"variable {step.var} assigned twice")
            if step.var in states:
                raise ScenarioSyntaxError(f"variable {step.var} shadows a state")
            variables.add(step.var)
        if step.var is None and step.expected is _UNSET:
            raise ScenarioSyntaxError(f"step {step.number} has neither a result nor a variable")
        for ref in _refs(step.call):
            if ref not in states and ref not in variables:
                raise ScenarioSyntaxError(f"step {step.number}: unknown name {ref!r}")
        if step.then is not None:
            for v in step.then.resolved:
                if v not in variables:
                    raise ScenarioSyntaxError(f"step {step.number}: resolved unknown {v!r}")
        multi_tx = len(step.txs) > 1
        if multi_tx and any(t.state_after is None for t in step.txs):
            raise ScenarioSyntaxError(f"step {step.number}: several txs without → `state`")
    for b in scn.behaviours:
        for a in b.actions:
            if a.kind == "ctx_check" and a.var not in variables:
                raise ScenarioSyntaxError(f"{b.go_name}: unknown variable {a.var!r}")
            if a.call is not None:
                for ref in _refs(a.call):
                    if ref not in states and ref not in variables:
                        raise ScenarioSyntaxError(f"{b.go_name}: unknown name {ref!r}")
    scn.steps = steps
    return scn


def _refs(call: CallSpec) -> list[str]:
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, Ref):
            out.append(v.name)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(list(call.args))
    walk([v for _, v in call.kwargs])
    return out


def load_blocks(path: Path | None = None) -> list[Block]:
    return split_blocks((path or scenarios_path()).read_text(encoding="utf-8"))


# =========================================================================================
# Matching
# =========================================================================================


def render_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, ResultSpec | Raised):
        return str(v)
    if v is None:
        return "nil"
    return repr(v)


def actual_result_spec(r: Any) -> Any:
    """An engine Result as a ResultSpec (for reports and comparison)."""
    try:
        import trio_am as am
    except ImportError:  # pragma: no cover
        return r
    if isinstance(r, am.Result):
        if r == am.Result.QUEUED:
            return ResultSpec("Queued", getattr(r, "queue_tick", None))
        if r == am.Result.EXECUTED:
            return ResultSpec("Executed")
        if r == am.Result.CANCELED:
            return ResultSpec("Canceled")
    return r


def match_value(expected: Any, actual: Any) -> bool:
    """Compare an expected value with an actual one (an engine Result, a query value,
    an error)."""
    if isinstance(expected, ResultSpec):
        act = actual_result_spec(actual)
        if not isinstance(act, ResultSpec) or act.kind != expected.kind:
            return False
        return expected.queue_tick is None or act.queue_tick == expected.queue_tick
    if isinstance(actual, Raised):
        return False
    if isinstance(expected, bool):
        return isinstance(actual, bool) and actual == expected
    if expected is None:
        return actual is None
    if isinstance(actual, BaseException):
        return str(actual) == str(expected)
    if isinstance(expected, int):
        return isinstance(actual, int) and not isinstance(actual, bool) and actual == expected
    if isinstance(expected, list):
        if not isinstance(actual, list | tuple) or len(actual) != len(expected):
            return False
        return all(match_value(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, str):
        return isinstance(actual, str) and actual == expected
    return bool(expected == actual)


def subcalls_match(expected: tuple[SubCall, ...], actual: list[SubCall]) -> bool:
    if len(expected) != len(actual):
        return False
    for e, a in zip(expected, actual, strict=True):
        if (e.method, e.args, e.kwargs) != (a.method, a.args, a.kwargs):
            return False
        if not match_value(e.result, a.result):
            return False
    return True


@dataclass
class Invocation:
    """An actual handler invocation."""

    name: str
    subcalls: list[SubCall] = field(default_factory=list)

    def render(self) -> str:
        if not self.subcalls:
            return self.name
        return f"{self.name}[{'; '.join(s.render() for s in self.subcalls)}]"


def match_handlers(expected: list[HandlerCall | Group] | tuple, actual: list[Invocation]) -> str:
    """Return '' when ``actual`` matches the expected sequence, else a reason.

    Groups match any permutation of their members, everything else is ordered;
    annotations must match the sub-calls exactly (no annotation = no sub-calls).
    """
    pos = 0
    for item in expected:
        members = item.members if isinstance(item, Group) else (item,)
        window = actual[pos : pos + len(members)]
        want = collections.Counter(m.name for m in members)
        got = collections.Counter(i.name for i in window)
        if want != got:
            where = f"at position {pos + 1}"
            return f"{where}: expected {item.render()}, got {' → '.join(i.render() for i in window) or 'nothing'}"
        remaining = list(window)
        for m in members:
            inv = next(i for i in remaining if i.name == m.name)
            remaining.remove(inv)
            if not subcalls_match(m.subcalls, inv.subcalls):
                return f"handler {m.name} did {inv.render()}, expected {m.render()}"
        pos += len(members)
    if pos != len(actual):
        extra = " → ".join(i.render() for i in actual[pos:])
        return f"unexpected extra handlers after position {pos}: {extra}"
    return ""


# =========================================================================================
# Running a scenario against the engine
# =========================================================================================


@dataclass
class TxRecord:
    tx: Any
    started: bool
    handlers: list[Invocation] = field(default_factory=list)
    ended: bool = False
    type: str = "?"
    called: list[str] = field(default_factory=list)
    auto: bool = False
    check: bool = False
    accepted: bool | None = None
    state_after: str | None = None

    def render(self) -> str:
        flag = " (auto)" if self.auto else " (dry run)" if self.check else ""
        hs = " → ".join(h.render() for h in self.handlers) or "no handlers"
        outcome = {True: "accepted", False: "canceled", None: "(not ended)"}[self.accepted]
        return f"tx {self.type}{flag} [{' '.join(self.called)}]: {hs}; {outcome} → `{self.state_after}`"


def _mutation_type_name(t: Any) -> str:
    name = getattr(t, "name", None)
    return name.lower() if isinstance(name, str) else str(t)


class Runner:
    """Runs one scenario: a machine with recording handlers and a tracer."""

    def __init__(self, scn: Scenario, am: Any) -> None:
        self.scn = scn
        self.am = am
        self.txs: list[TxRecord] = []
        self.stack: list[TxRecord] = []
        self.problems: list[str] = []  # e.name mismatches, tracer errors, stray calls
        self.counts: collections.Counter[str] = collections.Counter()
        self.vars: dict[str, Any] = {}
        self.var_kind: dict[str, str] = {}
        self.behaviours: dict[str, list[Behaviour]] = collections.defaultdict(list)
        for b in scn.behaviours:
            self.behaviours[b.name].append(b)
        self.mach = am.Machine(scn.schema, id="scn")
        self.mach.verify_states(scn.state_order)
        self.mach.bind_handlers(self._make_handlers())
        self.mach.bind_tracer(self._make_tracer())

    # --- handlers -------------------------------------------------------------------------
    def _make_handlers(self) -> Any:
        runner = self

        def make(name: str) -> Any:
            def handler(self: Any, e: Any) -> Any:
                return runner.on_handler(name, e)

            handler.__name__ = handler.__qualname__ = name
            return handler

        ns = {n: make(n) for n in all_handler_names(self.scn.states)}
        return type("ScenarioHandlers", (), ns)()

    def on_handler(self, name: str, e: Any) -> Any:
        self.counts[name] += 1
        n = self.counts[name]
        ename = getattr(e, "name", None)
        if ename != name:
            self.problems.append(f"handler {name} got e.name == {ename!r}")
        inv = Invocation(name)
        if self.stack:
            self.stack[-1].handlers.append(inv)
        else:
            rec = TxRecord(None, started=False, handlers=[inv])
            self.txs.append(rec)
            self.stack.append(rec)
        for b in self.behaviours.get(name, ()):
            if b.on_calls is None or n in b.on_calls:
                return self._run_behaviour(b, inv)
        return None

    def _run_behaviour(self, b: Behaviour, inv: Invocation) -> Any:
        for a in b.actions:
            if a.kind == "ctx_check":
                assert a.var is not None
                ctx = self.vars.get(a.var)
                result = Raised(f"unset variable {a.var}") if ctx is None else bool(ctx.expired)
                inv.subcalls.append(SubCall("ctxErr", (a.var,), (), result))
                continue
            assert a.call is not None
            call = a.call
            key_args = flatten_args(call.args)
            key_kwargs = tuple(sorted(call.kwargs))
            try:
                result = self.invoke(call)
            except Exception as exc:
                inv.subcalls.append(SubCall(call.method, key_args, key_kwargs, Raised(repr(exc))))
                raise
            inv.subcalls.append(SubCall(call.method, key_args, key_kwargs, result))
        if b.final is None:
            return None
        kind, value = b.final
        if kind == "return":
            return value
        raise ValueError(value)

    # --- tracer ---------------------------------------------------------------------------
    def _make_tracer(self) -> Any:
        runner = self

        class Tracer:
            def transition_start(self, tx: Any) -> None:
                try:
                    runner.on_tx_start(tx)
                except Exception as exc:  # the engine may swallow tracer errors
                    runner.problems.append(f"tracer transition_start raised {exc!r}")

            def transition_end(self, tx: Any) -> None:
                try:
                    runner.on_tx_end(tx)
                except Exception as exc:
                    runner.problems.append(f"tracer transition_end raised {exc!r}")

        return Tracer()

    def on_tx_start(self, tx: Any) -> None:
        if self.stack and self.stack[-1].tx is None:
            # handlers ran before transition_start: odd, but keep them with this tx
            self.problems.append("handlers ran before transition_start")
            self.stack[-1].tx = tx
            self.stack[-1].started = True
            return
        rec = TxRecord(tx, started=True)
        self.txs.append(rec)
        self.stack.append(rec)

    def on_tx_end(self, tx: Any) -> None:
        rec = None
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i].tx is tx or self.stack[i].tx is None:
                rec = self.stack[i]
                if i != len(self.stack) - 1:
                    self.problems.append("transition_end out of nesting order")
                del self.stack[i]
                break
        if rec is None:
            # transition_end without transition_start (e.g. a rejected transition)
            rec = TxRecord(tx, started=False)
            self.txs.append(rec)
        rec.tx = tx
        rec.ended = True
        mut = tx.mutation
        rec.type = _mutation_type_name(mut.type)
        rec.called = list(mut.called)
        rec.auto = bool(mut.is_auto)
        rec.check = bool(mut.is_check)
        rec.accepted = bool(tx.is_accepted)
        rec.state_after = self.mach.string_all()

    # --- calls ----------------------------------------------------------------------------
    def resolve(self, v: Any) -> Any:
        if isinstance(v, Ref):
            if v.name in self.vars:
                return self.vars[v.name]
            return v.name
        if isinstance(v, list):
            return [self.resolve(x) for x in v]
        if isinstance(v, dict):
            return {self.resolve(k): self.resolve(x) for k, x in v.items()}
        if isinstance(v, LambdaSrc):
            return eval(v.source, {"__builtins__": __builtins__}, {})
        return v

    def invoke(self, call: CallSpec) -> Any:
        mach = self.mach
        args = [self.resolve(a) for a in call.args]
        kwargs = {k: self.resolve(v) for k, v in call.kwargs}
        m = call.method
        if m in ("err", "queue_tick"):  # properties in the Python API
            if args or kwargs:
                raise ScenarioSyntaxError(f"{m}() takes no arguments")
            return getattr(mach, m)
        if m == "add_err":
            if args and isinstance(args[0], str):
                args[0] = Exception(args[0])
        elif m == "add_err_state":
            if len(args) >= 2 and isinstance(args[1], str):
                args[1] = Exception(args[1])
        result = getattr(mach, m)(*args, **kwargs)
        if m == "time" or isinstance(result, tuple):
            return list(result)
        return result

    def is_resolved(self, var: str) -> bool:
        obj = self.vars[var]
        if self.var_kind[var] == "ctx":
            return bool(obj.expired)
        return bool(obj.is_set())

    def err_text(self) -> str | None:
        err = self.mach.err
        return None if err is None else str(err)

    # --- steps ----------------------------------------------------------------------------
    def run(self) -> str | None:
        """Run every step; return a failure report for the first failing step, or None."""
        resolved: set[str] = set()
        for step in self.scn.steps:
            err_before = self.err_text()
            first_tx = len(self.txs)
            self.problems.clear()
            try:
                value = self.invoke(step.call)
            except Exception as exc:
                return self.report(step, [f"the call raised {exc!r}"], first_tx)
            if step.var is not None:
                self.vars[step.var] = value
                m = step.call.method
                if m == "state_ctx":
                    self.var_kind[step.var] = "ctx"
                elif m.startswith("when"):
                    self.var_kind[step.var] = "waiter"
            errors = self.check_step(step, value, first_tx, err_before, resolved)
            if errors:
                return self.report(step, errors, first_tx)
        return None

    def check_step(
        self, step: StepSpec, value: Any, first_tx: int, err_before: str | None, resolved: set[str]
    ) -> list[str]:
        errors: list[str] = list(self.problems)
        if self.stack:
            errors.append(f"{len(self.stack)} transition(s) did not end after the call")
        if step.expected is not _UNSET and not match_value(step.expected, value):
            errors.append(
                f"result: expected {render_value(step.expected)}, got "
                f"{render_value(actual_result_spec(value))}"
            )
        recs = self.txs[first_tx:]
        if len(recs) != len(step.txs):
            errors.append(f"expected {len(step.txs)} transition(s), got {len(recs)}")
        for i, (exp, rec) in enumerate(zip(step.txs, recs, strict=False), start=1):
            errors += [f"tx #{i}: {e}" for e in self.check_tx(exp, rec)]
        then = step.then
        if then is not None:
            if then.state is not None and self.mach.string_all() != then.state:
                errors.append(f"state: expected `{then.state}`, got `{self.mach.string_all()}`")
            qt = self.mach.queue_tick
            if then.queue_tick is not None and qt != then.queue_tick:
                errors.append(f"queue tick: expected {then.queue_tick}, got {qt}")
            resolved.update(then.resolved)
        err_now = self.err_text()
        if then is not None and then.err is not _UNSET:
            if err_now != then.err:
                errors.append(f"err(): expected {then.err!r}, got {err_now!r}")
        elif err_now != err_before:
            errors.append(f"err() changed unexpectedly: {err_before!r} -> {err_now!r}")
        for var in self.var_kind:
            want = var in resolved
            got = self.is_resolved(var)
            if want != got:
                errors.append(
                    f"{var} should {'be' if want else 'not be'} resolved/expired after this step"
                )
        return errors

    @staticmethod
    def check_tx(exp: TxSpec, rec: TxRecord) -> list[str]:
        errs: list[str] = []
        if not rec.ended:
            errs.append("transition_end was not called")
        if not rec.started:
            errs.append("transition_start was not called")
        if rec.type != exp.type:
            errs.append(f"type: expected {exp.type}, got {rec.type}")
        if rec.auto != exp.auto:
            errs.append(f"is_auto: expected {exp.auto}, got {rec.auto}")
        if rec.check != exp.dry_run:
            errs.append(f"is_check: expected {exp.dry_run}, got {rec.check}")
        called = sorted(rec.called) if exp.auto else rec.called
        want_called = sorted(exp.called) if exp.auto else list(exp.called)
        if called != want_called:
            errs.append(f"called: expected {want_called}, got {called}")
        reason = match_handlers(list(exp.handlers), rec.handlers)
        if reason:
            errs.append(f"handlers: {reason}")
        if rec.accepted != exp.accepted:
            want = "accepted" if exp.accepted else "canceled"
            errs.append(f"expected {want}, got {'accepted' if rec.accepted else 'canceled'}")
        if exp.state_after is not None and rec.state_after != exp.state_after:
            errs.append(
                f"state at transition_end: expected `{exp.state_after}`, got `{rec.state_after}`"
            )
        return errs

    def report(self, step: StepSpec, errors: list[str], first_tx: int) -> str:
        lines = [
            f"{self.scn.id} {self.scn.title}",
            f"step {step.number}: {step.call.text}",
            *[f"  - {e}" for e in errors],
            "expected transitions:",
            *[f"    {t.text}" for t in step.txs],
            "actual transitions (Python names):",
            *[f"    {r.render()}" for r in self.txs[first_tx:]],
        ]
        return "\n".join(lines)


# =========================================================================================
# The scenario cases
# =========================================================================================


def _load_blocks_or_error() -> tuple[list[Block], str | None]:
    try:
        return load_blocks(), None
    except (OSError, ScenarioSyntaxError) as exc:
        return [], f"{scenarios_path()}: {exc}"


_BLOCKS, _LOAD_ERROR = _load_blocks_or_error()


def test_scenario_file_loads() -> None:
    """The scenario file exists, splits into blocks, and has scenarios."""
    assert _LOAD_ERROR is None, _LOAD_ERROR
    assert _BLOCKS, f"no scenarios in {scenarios_path()}"


@pytest.mark.parametrize("block", _BLOCKS, ids=[b.id for b in _BLOCKS])
def test_scenario(block: Block) -> None:
    scn = parse_scenario(block)  # a parse error fails this case loudly
    import trio_am as am

    runner = Runner(scn, am)
    if scn.needs_nursery:
        # subscriptions and state contexts need the machine bound to a nursery

        async def main() -> str | None:
            async with runner.mach:
                return runner.run()

        failure = trio.run(main)
    else:
        # plain machine, used synchronously without a Trio run (api.md "Machines")
        failure = runner.run()
        runner.mach.dispose()
    if failure:
        pytest.fail(failure, pytrace=False)


# =========================================================================================
# Unit tests of the parser (no engine needed)
# =========================================================================================


def test_all_scenarios_parse() -> None:
    """Every block of the chosen file and of the vendored copy parses."""
    for path in {scenarios_path(), VENDORED_PATH}:
        text = path.read_text(encoding="utf-8")
        blocks = split_blocks(text)
        headings = [ln for ln in text.splitlines() if ln.startswith("### ")]
        assert len(blocks) == len(headings)
        for b in blocks:
            scn = parse_scenario(b)
            assert scn.steps


def test_split_top() -> None:
    assert split_top("a → b[x → y; z] → {c, d}", "→") == ["a", "b[x → y; z]", "{c, d}"]
    assert split_top("state `(A:1) [B:0]`; queue tick 2", ";") == [
        "state `(A:1) [B:0]`",
        "queue tick 2",
    ]
    assert split_top("add1(C, args={'a;b': 1}), x", ",") == ["add1(C, args={'a;b': 1})", "x"]
    with pytest.raises(ScenarioSyntaxError):
        split_top("a(b", ",")
    with pytest.raises(ScenarioSyntaxError):
        split_top("a]b", ",")


@pytest.mark.parametrize(
    ("go", "states", "py"),
    [
        ("AEnter", ["A", "B"], "A_enter"),
        ("AExit", ["A", "B"], "A_exit"),
        ("AState", ["A", "B"], "A_state"),
        ("AEnd", ["A", "B"], "A_end"),
        ("AA", ["A", "B"], "A_A"),
        ("AB", ["A", "B"], "A_B"),
        ("AnyEnter", ["A"], "any_enter"),
        ("AnyState", ["A"], "any_state"),
        ("ErrFooState", ["ErrFoo", "Exception"], "ErrFoo_state"),
        ("ErrFooException", ["ErrFoo", "Exception"], "ErrFoo_Exception"),
        ("ExceptionErrFoo", ["ErrFoo", "Exception"], "Exception_ErrFoo"),
        ("StartStart", ["Start", "Connecting", "Disconnected"], "Start_Start"),
        (
            "DisconnectedConnecting",
            ["Start", "Connecting", "Disconnected"],
            "Disconnected_Connecting",
        ),
        ("HealthcheckHeartbeat", ["Healthcheck", "Heartbeat"], "Healthcheck_Heartbeat"),
        ("ErrNetErrNet", ["ErrNet", "Exception"], "ErrNet_ErrNet"),
        # longest-prefix alone would be wrong here: "AB" + "C" is no handler, "A" + "BC" is
        ("ABC", ["A", "AB", "BC"], "A_BC"),
        ("ABEnter", ["A", "AB", "B"], "AB_enter"),
    ],
)
def test_go_to_py(go: str, states: list[str], py: str) -> None:
    assert go_to_py(go, states) == py


def test_go_to_py_errors() -> None:
    with pytest.raises(ScenarioSyntaxError, match="matches no state"):
        go_to_py("XEnter", ["A"])
    with pytest.raises(ScenarioSyntaxError, match="ambiguous"):
        go_to_py("ABC", ["A", "BC", "AB", "C"])


def test_all_handler_names() -> None:
    names = all_handler_names(["A", "Exception"])
    assert len(names) == 2 * 4 + 4 + 2
    assert {"A_enter", "A_A", "A_Exception", "Exception_A", "Exception_Exception"} <= set(names)


def test_parse_handler_seq_groups_and_annotations() -> None:
    states = ["A", "B", "C", "Exception"]
    seq = parse_handler_seq(
        "AExit → {AEnter[is_all(A) → false; tick(A) → 0], BEnter} → AB → AnyEnter"
        ' → AState[add1(C){"x":1} → Queued(3); remove1(B) → Executed; ctxErr(c) → true]'
        " → AnyState",
        states,
    )
    assert [type(i).__name__ for i in seq] == [
        "HandlerCall",
        "Group",
        "HandlerCall",
        "HandlerCall",
        "HandlerCall",
        "HandlerCall",
    ]
    group = seq[1]
    assert isinstance(group, Group)
    assert [m.name for m in group.members] == ["A_enter", "B_enter"]
    assert group.members[0].subcalls == (
        SubCall("is_all", ("A",), (), False),
        SubCall("tick", ("A",), (), 0),
    )
    state = seq[4]
    assert isinstance(state, HandlerCall) and state.name == "A_state"
    assert state.subcalls == (
        SubCall("add1", ("C",), (("args", {"x": 1}),), ResultSpec("Queued", 3)),
        SubCall("remove1", ("B",), (), ResultSpec("Executed")),
        SubCall("ctxErr", ("c",), (), True),
    )
    assert parse_handler_seq("no handlers", states) == []
    with pytest.raises(ScenarioSyntaxError):
        parse_handler_seq("AEnter → ", states)
    with pytest.raises(ScenarioSyntaxError):
        parse_handler_seq("AEnter[oops]", states)
    with pytest.raises(ScenarioSyntaxError):
        parse_handler_seq("{AEnter, BEnter", states)


def test_parse_subcall_list_and_kwargs_normalise() -> None:
    # the behaviour says add([C]), the annotation says add(C): both normalise alike
    assert parse_subcall("add(C) → Queued(4)") == SubCall(
        "add", ("C",), (), ResultSpec("Queued", 4)
    )
    call = parse_call('add1(C, args={"x": 1})')
    assert flatten_args(call.args) == ("C",) and dict(call.kwargs) == {"args": {"x": 1}}
    assert flatten_args(parse_call("add([C])").args) == ("C",)


def test_match_handlers() -> None:
    states = ["A", "B", "C"]
    exp = parse_handler_seq("{AEnter, BEnter} → AnyEnter → {AState, BState} → AnyState", states)
    ok = [
        Invocation(n)
        for n in ("B_enter", "A_enter", "any_enter", "A_state", "B_state", "any_state")
    ]
    assert match_handlers(exp, ok) == ""
    bad = [
        Invocation(n)
        for n in ("A_enter", "any_enter", "B_enter", "A_state", "B_state", "any_state")
    ]
    assert "position 1" in match_handlers(exp, bad)
    assert "extra" in match_handlers(exp, [*ok, Invocation("any_state")])
    assert "expected" in match_handlers(exp, ok[:-1])
    ann = parse_handler_seq("AEnter[add1(B) → Queued(3)]", states)
    assert "did" in match_handlers(ann, [Invocation("A_enter")])


def test_parse_tx_then_step_behaviour() -> None:
    states = ["A", "B", "Exception"]
    tx = parse_tx(
        "tx add (auto) [B A]: AEnter → AnyEnter; canceled → `(A:1) [B:0 Exception:0]`", states
    )
    assert (tx.type, tx.auto, tx.dry_run, tx.called, tx.accepted) == (
        "add",
        True,
        False,
        ("B", "A"),
        False,
    )
    assert tx.state_after == "(A:1) [B:0 Exception:0]"
    tx = parse_tx("tx set []: no handlers; accepted", states)
    assert tx.called == () and tx.handlers == () and tx.state_after is None
    assert parse_tx("tx remove (dry run) [A]: AExit; accepted", states).dry_run
    with pytest.raises(ScenarioSyntaxError):
        parse_tx("tx eval [A]: no handlers; accepted", states)
    with pytest.raises(ScenarioSyntaxError):
        parse_tx("tx add (weird) [A]: no handlers; accepted", states)

    then = parse_then("state `(A:1) []`; queue tick 2; err() = 'e1'; resolved: w, c")
    assert (then.state, then.queue_tick, then.err, then.resolved) == (
        "(A:1) []",
        2,
        "e1",
        ("w", "c"),
    )
    with pytest.raises(ScenarioSyntaxError):
        parse_then("state `()`; something else")

    step = parse_step_line("9. `time() (all states, declared order)` → [3, 7, 5, 1, 0]")
    assert step.call.method == "time" and step.expected == [3, 7, 5, 1, 0]
    step = parse_step_line("2. `err()` → e1")
    assert step.expected == "e1"
    step = parse_step_line("3. `wq = when_query(lambda clock: clock['A'] > 4 * clock['B'])`")
    assert step.var == "wq"
    (lam,) = step.call.args
    assert isinstance(lam, LambdaSrc)
    assert eval(lam.source)({"A": 5, "B": 1}) is True
    step = parse_step_line('5. `add1(B, args={"foo": "bar"})` → **Executed**')
    assert step.expected == ResultSpec("Executed")
    assert dict(step.call.kwargs) == {"args": {"foo": "bar"}}
    assert parse_step_line("1. `add_err(None)` → **Canceled**").call.args == (None,)

    b = parse_behaviour("- `AnyEnter` (only on its call #1): returns false", states)
    assert (b.name, b.on_calls, b.actions, b.final) == (
        "any_enter",
        frozenset({1}),
        (),
        ("return", False),
    )
    b = parse_behaviour(
        "- `AEnter`: calls add1(B), is_all([A]) (in this order); then raises an error 'boom'",
        states,
    )
    assert [a.call.method for a in b.actions if a.call] == ["add1", "is_all"]
    assert b.final == ("raise", "boom")
    b = parse_behaviour("- `AExit`: calls c = check whether c expired (in this order)", states)
    assert b.actions == (Action("ctx_check", var="c"),) and b.final is None
    with pytest.raises(ScenarioSyntaxError):
        parse_behaviour("- `AExit`: sings a song", states)


def test_parse_schema() -> None:
    schema = parse_schema(
        "A: -; B: auto multi require=[A] add=[C, D] remove=[] after=[E]; Exception: multi"
    )
    assert schema == {
        "A": {},
        "B": {
            "auto": True,
            "multi": True,
            "require": ["A"],
            "add": ["C", "D"],
            "remove": [],
            "after": ["E"],
        },
        "Exception": {"multi": True},
    }
    with pytest.raises(ScenarioSyntaxError):
        parse_schema("A: frozen")


def test_parse_scenario_block_errors() -> None:
    good = (
        "### S999 [Z01] t\n\n- Origin: x\n- State order: A Exception\n- Schema: A: -\n\n"
        "1. `add1(A)` → **Executed**\n"
        "   - tx add [A]: AEnter → AnyEnter → AState → AnyState; accepted\n"
        "   - then: state `(A:1) [Exception:0]`; queue tick 2\n"
    )
    (block,) = split_blocks(good)
    scn = parse_scenario(block)
    assert scn.schema == {"A": {}} and scn.states == ["A", "Exception"]
    for bad in (
        good.replace("- Origin: x", "- Flavour: x"),
        good.replace("   - then:", "   - than:"),
        good + "some stray text\n",
        good.replace("AnyState; accepted", "AnyState; maybe"),
        good.replace("1. `add1(A)`", "2. `add1(A)`"),
        good.replace("`add1(A)`", "`add1(Q)`"),
    ):
        with pytest.raises(ScenarioSyntaxError, match="S999"):
            parse_scenario(split_blocks(bad)[0])
    with pytest.raises(ScenarioSyntaxError):
        split_blocks("### Notes\n")
