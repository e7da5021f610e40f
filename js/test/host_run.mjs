// A page-hosted machine run by node, for tests/js/test_host_relay.py:
//   node --experimental-websocket test/host_run.mjs RELAY_WS ID [LISTEN]
// It hosts `Foo`, `Bar`, `Vetoed` and `Echo` through the relay; prints "ready" once
// its first idle tunnel is open, and one JSON line per handler call.
import { host } from "../../trio_am/relay/static/am.js";

const [relay, id, listen] = process.argv.slice(2);
const schema = {
  Start: {},
  Ready: { require: ["Start"] },
  Foo: {},
  Bar: { require: ["Foo"] },
  Vetoed: {},
  Echo: { multi: true },
};
const h = host({
  id,
  relay,
  listen: listen || null,
  schema,
  handlers: {
    Foo_state(e) {
      console.log(JSON.stringify({ handler: "Foo_state", source: e.source && e.source.machId }));
      e.machine.add1("Bar"); // queued, runs after this handler
    },
    Vetoed_enter() {
      return false;
    },
    Echo_state(e) {
      console.log(JSON.stringify({ handler: "Echo_state", args: e.args }));
    },
  },
});
h.add(["Start", "Ready"]);
const wait = setInterval(() => {
  if (h._idle && h._idle.readyState === 1) {
    clearInterval(wait);
    console.log("ready");
  }
}, 10);
// stdin commands: "add NAME" / "remove NAME" mutate the page machine
process.stdin.setEncoding("utf8");
let buf = "";
process.stdin.on("data", (chunk) => {
  buf += chunk;
  let i;
  while ((i = buf.indexOf("\n")) >= 0) {
    const [cmd, name] = buf.slice(0, i).trim().split(" ");
    buf = buf.slice(i + 1);
    const res = cmd === "add" ? h.add1(name) : h.remove1(name);
    console.log(JSON.stringify({ cmd, name, res }));
  }
});
process.stdin.on("end", () => process.exit(0));
