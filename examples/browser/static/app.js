// The page of the browser example (arpc.md F6): it hosts bar and mirrors foo.
//
// - bar ("browser-bar-<random>") is a machine in this page, served through the relay:
//   the page offers listen tunnels (/listen/<id>, no host:port) and the server's listen
//   handler attaches its client "server-bar" to it.
// - foo ("server-foo", Python) is mirrored through the relay's /dial/browser-foo-<random>,
//   which an in-process dial handler of the server serves.
// Enter adds SubmitMsg on bar; its handler adds Msg on bar and on foo.
import { connect, host, typedArgs, argsOf } from "/am.js";

// the typed args of Msg: AMsg(msg) in examples/browser/server.py
const MSG_KEY = "browser__Any";

// the same schemas as server.py: basic + state-source states, Msg (multi)
const SHARED = {
  Exception: { multi: true },
  ErrNetwork: { multi: true, require: ["Exception"], add: ["Exception"] },
  ErrHandlerTimeout: { multi: true, require: ["Exception"], add: ["Exception"] },
  Start: {},
  Ready: { require: ["Start"] },
  Healthcheck: { multi: true },
  Heartbeat: {},
  ErrOnClient: { require: ["Exception"] },
  Msg: { multi: true },
};
const BAR_SCHEMA = { ...SHARED, SubmitMsg: { multi: true } };

const $ = (id) => document.getElementById(id);
const ui = {
  barId: $("bar-id"),
  barSessions: $("bar-sessions"),
  barStates: $("bar-states"),
  fooStatus: $("foo-status"),
  fooStates: $("foo-states"),
  input: $("input"),
  list: $("list"),
  error: $("error"),
};

function addLine(text) {
  console.log(text);
  const li = document.createElement("li");
  li.textContent = text;
  ui.list.appendChild(li);
}

function showError(text) {
  console.error(text);
  ui.error.textContent = text;
}

function msgOf(args) {
  const data = argsOf(args, MSG_KEY);
  return data && typeof data.msg === "string" ? data.msg : "";
}

// one <li data-state=Name data-active=true|false> per state
function renderStates(ul, names, isActive) {
  if (ul.children.length !== names.length) {
    ul.replaceChildren(
      ...names.map((name) => {
        const li = document.createElement("li");
        li.dataset.state = name;
        li.textContent = name;
        return li;
      }),
    );
  }
  for (const li of ul.children) li.dataset.active = String(isActive(li.dataset.state));
}

const sid = Math.random().toString(36).slice(2, 8);
const barId = `browser-bar-${sid}`;
const ws = location.origin.replace(/^http/, "ws");
ui.barId.textContent = barId;

let foo = null; // the mirror of foo, set below

// ---- bar: the machine of this page
const barHandlers = {
  Msg_enter(e) {
    return msgOf(e.args) !== ""; // an empty message is refused
  },
  Msg_state(e) {
    // both foo and bar add Msg: the author is the mutation's source machine
    const author = e.source ? e.source.machId : "bar";
    addLine(`[${author}] ${msgOf(e.args)}`);
  },
  SubmitMsg_state(e) {
    const text = ui.input.value;
    ui.input.value = "";
    const args = typedArgs(MSG_KEY, { msg: text });
    e.machine.add1("Msg", args); // queued: runs after this handler
    if (foo !== null) {
      foo.add1("Msg", args).catch((err) => showError(`foo.add1(Msg): ${err}`));
    }
  },
};

const bar = host({ id: barId, schema: BAR_SCHEMA, handlers: barHandlers, relay: ws });
const barNames = Object.keys(BAR_SCHEMA);
const renderBar = () => {
  renderStates(ui.barStates, barNames, (n) => bar.is1(n));
  ui.barSessions.textContent = String(bar.sessions);
};
bar.onChange(renderBar);
setInterval(renderBar, 250); // sessions come and go without a state change
bar.add1("Start");
renderBar();

// ---- foo: a mirror of the server's machine
foo = connect(`${ws}/dial/browser-foo-${sid}`, { id: barId });
let boredTick = 0;
foo.onStatus(() => {
  ui.fooStatus.textContent = foo.status;
});
foo.onChange((mirror) => {
  renderStates(ui.fooStates, mirror.names, (n) => mirror.is1(n));
  // a handler piped from foo's mirror: Bored became active (again). One delta may hold
  // both an activation and the deactivation (tick +2): count the odd ticks passed.
  const tick = mirror.tick("Bored");
  const activations = Math.floor((tick + 1) / 2) - Math.floor((boredTick + 1) / 2);
  boredTick = tick;
  if (activations > 0) addLine("foo is bored...");
});
foo.ready.then(
  () => {
    ui.fooStatus.textContent = foo.status;
  },
  (err) => showError(`cannot connect to foo: ${err}`),
);

// ---- UI
ui.input.addEventListener("keydown", (ev) => {
  if (ev.key !== "Enter") return;
  ev.preventDefault();
  bar.add1("SubmitMsg");
});
$("toggle-foo-ready").addEventListener("click", () => {
  foo.toggle1("Ready").catch((err) => showError(`foo.toggle1(Ready): ${err}`));
});
$("toggle-bar-ready").addEventListener("click", () => {
  bar.toggle1("Ready");
});

// for the console and the tests
window.example = { bar, foo, barId };
