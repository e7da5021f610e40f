"""``am.js`` in headless Chromium against Python peers (arpc.md C3).

The Python side runs in a Trio thread (:class:`TrioThread`): a source machine ``py-src``
served over ``ws://`` and ``tcp://``, and a relay that serves a blank page (so the page
and ``/am.js`` share the relay's origin) and may dial the TCP server. The sync tests call
into that thread with ``trio.from_thread``. Nothing sleeps: waits are bounded Trio waits
on the Python side and page functions or promises raced against a timer on the page side.

* client role (``connect``), directly over ``ws://`` and through the relay's
  ``/dial/<id>/<host:port>``: ``ready``, ``is1``/``tick`` after a Python mutation,
  ``when1``/``whenNot1``, ``add1`` results (executed, canceled by an enter veto), typed
  args that reach the Python handler, payload delivery (acked), ``close``;
* host role (``host`` with ``listen``): a Python client reaches the page's machine
  through the relay's TCP listen port, mirrors it, mutates it (typed args, a veto) and
  receives the page's payload.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio

import trio_am as am
from trio_am import rpc
from trio_am.relay import serve_relay

T = TypeVar("T")

#: seconds any one wait may take
LIMIT = 10.0

SRC_SCHEMA = am.schema_merge(
    am.BASIC_SCHEMA,
    rpc.STATE_SOURCE,
    {
        "Foo": {},
        "Bar": {"remove": ["Foo"]},
        "Vetoed": {},
        "Msg": {"multi": True},
    },
)

# the page's machine in the host test (the same states, in JS)
HOST_SCHEMA_JS = """{
  Start: {}, Ready: {require: ["Start"]}, Foo: {}, Bar: {remove: ["Foo"]},
  Vetoed: {}, Msg: {multi: true},
}"""

#: helpers defined on the page: am.js as window.am, and a promise raced with a timer
PAGE_SETUP = """async () => {
  window.am = await import("/am.js");
  window.within = (p, ms) => Promise.race([
    Promise.resolve(p).then((v) => ({ok: true, value: v}), (e) => ({ok: false, error: String(e)})),
    new Promise((r) => setTimeout(() => r({ok: false, error: `timeout ${ms} ms`}), ms)),
  ]);
  window.log = [];
  window.payloads = [];
}"""


@am.typed_args(prefix="amjs")
@attrs.define
class TArgs:
    """Typed args of the tests: ``amjs__Any`` on the wire."""

    n: int = 0
    text: str = ""


class Src:
    """Handlers of ``py-src``: they record what arrived."""

    def __init__(self) -> None:
        self.msgs: list[tuple[TArgs | None, str | None]] = []

    def Vetoed_enter(self, e: am.Event) -> bool:
        return False

    def Msg_state(self, e: am.Event) -> None:
        source = e.mutation.source
        self.msgs.append((am.parse_args(TArgs, e.args), source.mach_id if source else None))


class TrioThread:
    """Trio in a thread: ``setup`` (an async context manager factory) runs there until
    :meth:`stop`; :meth:`call` runs an async function there (bounded by ``LIMIT``)."""

    def __init__(self, setup: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self.env: Any = None
        self.error: BaseException | None = None
        self._setup = setup
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(LIMIT) or self.error is not None:
            raise RuntimeError(f"the Trio thread did not start: {self.error!r}")

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with self._setup() as env, trio.open_nursery() as nursery:
            self.env = env
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = LIMIT) -> T:
        async def bounded() -> T:
            with trio.fail_after(timeout):
                return await fn(*args)

        return trio.from_thread.run(bounded, trio_token=self._token)

    def enter(self, factory: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        """Enter an async context manager in the thread; it is left at :meth:`stop`."""

        async def hold(task_status: trio.TaskStatus[T]) -> None:
            async with factory() as value:
                task_status.started(value)
                await trio.sleep_forever()

        async def start() -> T:
            assert self._nursery is not None
            value: T = await self._nursery.start(hold)
            return value

        return self.call(start)

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(LIMIT)
        if self.error is not None:
            raise self.error


@attrs.define
class Env:
    src: am.Machine
    handlers: Src
    server: rpc.Server
    relay: Any
    ws_url: str  # the aRPC server's own ws:// URL
    tcp_target: str  # host:port of its tcp:// endpoint


@pytest.fixture
def py(tmp_path: Path) -> Iterator[TrioThread]:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>am.js tests</title><p>am.js</p>\n")

    @asynccontextmanager
    async def setup() -> AsyncIterator[Env]:
        handlers = Src()
        async with (
            am.open_machine(SRC_SCHEMA, id="py-src") as src,
            rpc.serve(src, "ws://127.0.0.1:0", "tcp://127.0.0.1:0", args_types=[TArgs]) as server,
        ):
            src.bind_handlers(handlers)
            src.add1("Start")
            tcp_target = server.urls[1].split("://", 1)[1]
            async with serve_relay(allow_dial={tcp_target}, static_dir=static) as relay:
                yield Env(src, handlers, server, relay, server.urls[0], tcp_target)

    thread = TrioThread(setup)
    try:
        yield thread
    finally:
        thread.stop()


def open_blank(page: Any, env: Env) -> None:
    page.goto(env.relay.url + "/")
    page.evaluate(PAGE_SETUP)


def run_js(page: Any, body: str, arg: Any = None, ms: int = int(LIMIT * 1000)) -> Any:
    """Run ``async (arg) => {body}`` on the page, raced with a timer; returns its value or
    fails with the page's error."""
    out = page.evaluate(f"(arg) => within((async (arg) => {{ {body} }})(arg), {ms})", arg)
    assert out["ok"], out.get("error")
    return out.get("value")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------------ client role
@pytest.mark.parametrize("route", ["ws", "relay-dial"])
def test_client_role(page: Any, py: TrioThread, route: str) -> None:
    env: Env = py.env
    url = env.ws_url if route == "ws" else f"{env.relay.ws_url}/dial/page-c1/{env.tcp_target}"
    open_blank(page, env)
    first = run_js(
        page,
        """
        const m = am.connect(arg.url, {id: "page-c1"});
        window.m = m;
        m.onPayload((p) => { payloads.push({name: p.name, data: p.data, source: p.source}); });
        await m.ready;
        return {status: m.status, names: m.names, start: m.is1("Start"), foo: m.is1("Foo")};
        """,
        {"url": url},
    )
    assert first["status"] == "ready"
    assert {"Start", "Foo", "Bar", "Msg"} <= set(first["names"])
    assert first["start"] is True and first["foo"] is False

    # Python mutates; the mirror follows (when1, is1, tick)
    async def add_foo() -> int:
        env.src.add1("Foo")
        return env.src.tick("Foo")

    # (a function returning nothing: evaluate would await a returned promise)
    page.evaluate("() => { window.fooSeen = within(m.when1('Foo'), 5000); }")
    foo_tick = py.call(add_foo)
    seen = page.evaluate("async () => await window.fooSeen")
    assert seen["ok"], seen
    assert run_js(page, "return [m.is1('Foo'), m.tick('Foo')];") == [True, foo_tick]

    # the page mutates: EXECUTED, and Bar removes Foo on both sides
    res = run_js(page, "const r = await m.add1('Bar'); await m.whenNot1('Foo'); return r;")
    assert res == 0  # Result.EXECUTED
    assert py.call(_is_active, env.src, "Bar") and not py.call(_is_active, env.src, "Foo")
    assert run_js(page, "return m.is1('Bar') && m.not1('Foo');") is True

    # an enter veto on the source: CANCELED
    assert run_js(page, "return await m.add1('Vetoed');") == 1  # Result.CANCELED

    # typed args reach the Python handler as TArgs
    res = run_js(page, "return await m.add1('Msg', am.typedArgs('amjs__Any', {n: 7, text: 'hi'}));")
    assert res == 0
    assert py.call(_wait_for, lambda: bool(env.handlers.msgs))
    args, author = env.handlers.msgs[-1]
    assert args == TArgs(n=7, text="hi")
    assert author  # the page's client id, or the source machine am.js sent

    # a payload from the server is delivered and acked
    async def send_payload() -> int:
        return await env.server.send_payload("greet", {"text": "hello"}, timeout=5)

    assert py.call(send_payload) == 1
    payloads = page.evaluate("payloads")
    assert payloads == [{"name": "greet", "data": {"text": "hello"}, "source": "py-src"}]

    # close: BYE, the server sees the session end
    async def wait_disconnect() -> None:
        await env.server.rpc.when1("ClientDisconnected")

    run_js(page, "await m.close(); return m.status;")
    py.call(wait_disconnect)
    assert page.evaluate("m.status") == "closed"


async def _is_active(mach: am.Machine, state: str) -> bool:
    return mach.is1(state)


async def _wait_for(cond: Callable[[], bool]) -> bool:
    while not cond():
        await trio.sleep(0.01)
    return True


# ------------------------------------------------------------------------ host role
def test_host_role_through_the_relay_listen_port(page: Any, py: TrioThread) -> None:
    env: Env = py.env
    open_blank(page, env)
    listen = f"127.0.0.1:{free_port()}"
    run_js(
        page,
        f"""
        const schema = {HOST_SCHEMA_JS};
        const handlers = {{
          Vetoed_enter(e) {{ return false; }},
          Msg_state(e) {{
            log.push({{args: am.argsOf(e.args, "amjs__Any"), source: e.source ? e.source.machId : null}});
          }},
        }};
        const h = am.host({{id: "page-h1", schema, handlers, relay: arg.relay, listen: arg.listen}});
        window.h = h;
        h.add1("Start");
        return true;
        """,
        {"relay": env.relay.ws_url, "listen": listen},
    )

    # a Python client reaches the page through the relay's TCP listener
    consumer = py.enter(lambda: am.open_machine(rpc.CONSUMER_SCHEMA, id="py-consumer"))
    client: rpc.Client = py.enter(
        lambda: rpc.connect(
            f"tcp://{listen}",
            id="py-c1",
            consumer=consumer,
            args_types=[TArgs],
            reconnect=rpc.Backoff(initial=0.05, max=0.5),
        )
    )

    async def ready() -> list[str]:
        await client.rpc.when1("Ready")
        return client.mach.active_states()

    assert py.call(ready) == ["Start"]
    page.wait_for_function("() => window.h.sessions === 1", timeout=LIMIT * 1000)

    # Python mutates the page's machine
    async def mutate(state: str, args: Any = None) -> int:
        return int(await client.mach.add1_remote(state, args))

    assert py.call(mutate, "Foo") == am.Result.EXECUTED
    assert page.evaluate("h.is1('Foo')") is True
    assert py.call(mutate, "Vetoed") == am.Result.CANCELED
    assert page.evaluate("h.is1('Vetoed')") is False
    assert py.call(mutate, "Msg", am.pass_args(TArgs(n=3, text="from py"))) == am.Result.EXECUTED
    assert page.evaluate("log") == [{"args": {"n": 3, "text": "from py"}, "source": "py-c1"}]

    # the page mutates; the Python mirror follows
    async def wait_bar() -> list[str]:
        await client.mach.when1("Bar")
        return client.mach.active_states()

    page.evaluate("() => { h.add1('Bar'); }")
    active = py.call(wait_bar)
    assert "Bar" in active and "Foo" not in active

    # a payload from the page reaches the Python consumer
    got: list[rpc.Payload] = []

    class Consumer:
        def ServerPayload_state(self, e: am.Event) -> None:
            got.append(e.args["payload"])

    async def bind() -> None:
        consumer.bind_handlers(Consumer())

    py.call(bind)
    page.evaluate("() => { h.sendPayload('page-hello', {x: 1}); }")
    assert py.call(_wait_for, lambda: bool(got))
    assert got[0].name == "page-hello"
    assert got[0].data == {"x": 1}
    assert got[0].source == "page-h1"
