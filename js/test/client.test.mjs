// The client role (src/client.js) against a real Python aRPC server: the helper
// tests/support/js_server.py, run as a subprocess, serves the machine js-src behind a
// FaultyProxy (to drop, corrupt and cut frames) and a relay, and takes commands on stdin.
// Run from js/: node --experimental-websocket --test test/client.test.mjs
// (TRIO_AM_PYTHON picks the Python; default: the repository's .venv).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { connect } from "../src/index.js";
import { Kind, ErrorCode, Result } from "../src/wire.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const python = process.env.TRIO_AM_PYTHON || path.join(root, ".venv/bin/python");
const LIMIT = 10_000; // ms, for any one wait

/** The Python server process: `call(cmd, args)` runs one command (see js_server.py). */
class PyServer {
  async start() {
    this.proc = spawn(python, [path.join(root, "tests/support/js_server.py")], {
      cwd: root,
      stdio: ["pipe", "pipe", "inherit"],
    });
    this.replies = new Map();
    this.next = 0;
    const lines = readline.createInterface({ input: this.proc.stdout });
    this.exited = new Promise((resolve) => this.proc.on("exit", resolve));
    this.info = await within(new Promise((resolve, reject) => {
      this.proc.on("exit", (code) => reject(new Error(`js_server.py exited with ${code}`)));
      lines.on("line", (line) => {
        const msg = JSON.parse(line);
        if (!("id" in msg)) return resolve(msg);
        const [res, rej] = this.replies.get(msg.id);
        this.replies.delete(msg.id);
        if (msg.ok) res(msg.value);
        else rej(new Error(msg.error));
        return undefined;
      });
    }), "the server to start");
  }

  call(cmd, args = {}) {
    const id = ++this.next;
    const reply = new Promise((res, rej) => this.replies.set(id, [res, rej]));
    this.proc.stdin.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    return within(reply, `command ${cmd}`);
  }

  async stop() {
    this.proc.stdin.end();
    const t = setTimeout(() => this.proc.kill(), 5000);
    await this.exited;
    clearTimeout(t);
  }
}

function within(promise, what, ms = LIMIT) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

async function until(cond, what) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > LIMIT) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The mirror's clock as {name: tick}, for comparing with the server's `time`. */
/** Wait until the proxy swallowed `n` frames of `kind` going `direction`. */
async function dropped(kind, direction, n) {
  const t0 = Date.now();
  while ((await py.call("dropped", { kind, direction })) < n) {
    if (Date.now() - t0 > LIMIT) throw new Error(`timed out waiting for a dropped frame ${kind}`);
  }
}

const clockOf = (m) => Object.fromEntries(m.names.map((n) => [n, m.tick(n)]));

/** Wait until the mirror shows the server's clock (pushes take a few ms). */
async function converged(py, m) {
  let want;
  const t0 = Date.now();
  for (;;) {
    want = await py.call("time");
    try {
      assert.deepEqual(clockOf(m), want);
      return want;
    } catch (err) {
      if (Date.now() - t0 > LIMIT) throw err;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

const py = new PyServer();
const clients = [];
/** A client that the suite closes at the end. */
function client(url, opts) {
  const m = connect(url, { reconnect: { initial: 0.05, max: 0.5 }, ...opts });
  clients.push(m);
  return m;
}

before(() => py.start());
after(async () => {
  await Promise.all(clients.map((m) => m.close()));
  await py.stop();
});

test("handshake: the mirror equals the source", async () => {
  const m = client(py.info.ws, { id: "t-hs" });
  assert.equal(m.status, "connecting");
  assert.equal(await within(m.ready, "ready"), m);
  assert.equal(m.status, "ready");
  assert.equal(m.remoteId, "js-src");
  assert.equal(m.epoch, py.info.epoch);
  assert.match(m.sid, /^[0-9a-f]{32}$/);
  for (const n of ["Exception", "Start", "Foo", "Bar", "Vetoed", "Msg"]) assert.ok(m.names.includes(n), n);
  assert.deepEqual(m.schema.Bar, { remove: ["Foo"] });
  assert.deepEqual(clockOf(m), await py.call("time"));
  assert.deepEqual(m.activeStates(), m.names.filter((n) => m.is1(n)));
});

test("add1, remove1, set, toggle1: results and the mirror", async () => {
  const m = client(py.info.ws, { id: "t-mut" });
  await within(m.ready, "ready");
  assert.equal(await m.add1("Foo"), Result.EXECUTED);
  assert.ok(m.is1("Foo")); // the RESULT's delta is applied before the call resolves
  assert.equal(await m.add1("Bar"), Result.EXECUTED);
  assert.ok(m.is(["Bar"]) && m.not1("Foo") && m.any1("Foo", "Bar"));
  assert.equal(await m.remove1("Bar"), Result.EXECUTED);
  assert.equal(await m.add1("Vetoed"), Result.CANCELED);
  assert.equal(await m.set(["Foo", "Start"]), Result.EXECUTED);
  assert.deepEqual(m.time(["Foo", "Start"]).map((t) => t % 2), [1, 1]);
  assert.equal(await m.toggle1("Foo"), Result.EXECUTED);
  assert.ok(m.not1("Foo"));
  await converged(py, m);
});

test("when1, whenNot1, whenTick and onChange follow the source", async () => {
  const m = client(py.info.ws, { id: "t-when" });
  await within(m.ready, "ready");
  await py.call("remove", { state: "Bar" });
  await within(m.whenNot1("Bar"), "whenNot1(Bar)");
  const seen = [];
  const off = m.onChange((mirror, names) => seen.push(...names));
  const bar = m.when1("Bar");
  const tick = m.tick("Bar");
  await py.call("add", { state: "Bar" });
  await within(bar, "when1(Bar)");
  await within(m.whenTick("Bar", tick + 1), "whenTick");
  assert.ok(seen.includes("Bar"), `changes: ${seen}`);
  off();
  seen.length = 0;
  await py.call("remove", { state: "Bar" });
  await within(m.whenNot1("Bar"), "whenNot1(Bar)");
  assert.deepEqual(seen, []);
});

test("payloads: delivered and acked; refused without a listener", async () => {
  const m = client(py.info.ws, { id: "t-pay" });
  await within(m.ready, "ready");
  // no listener: ok=false with code PAYLOAD
  assert.deepEqual(await py.call("payload", { name: "x", dest: "t-pay" }), { ok: false, code: ErrorCode.PAYLOAD });
  const got = [];
  m.onPayload((p) => got.push(p));
  assert.deepEqual(await py.call("payload", { name: "greet", data: { text: "hi" }, dest: "t-pay" }), { ok: true });
  assert.equal(got.length, 1);
  assert.deepEqual(
    { name: got[0].name, data: got[0].data, source: got[0].source, dest: got[0].dest },
    { name: "greet", data: { text: "hi" }, source: "js-src", dest: "t-pay" },
  );
});

test("GET: a value, and an unknown getter", async () => {
  const m = client(py.info.ws, { id: "t-get" });
  await within(m.ready, "ready");
  assert.deepEqual(await m.get("echo", { x: 1 }), { client: "t-get", params: { x: 1 } });
  assert.deepEqual(await m.get("tags"), []);
  await assert.rejects(m.get("nope"), { name: "UnsupportedError", code: ErrorCode.UNSUPPORTED });
});

test("errors: unknown names throw before sending; ERROR frames carry the code", async () => {
  const m = client(py.info.ws, { id: "t-err", token: "limited" });
  assert.throws(() => m.add1("Foo"), { name: "StateError" }); // names unknown before WELCOME
  await within(m.ready, "ready");
  const out = m.stats.framesOut;
  assert.throws(() => m.add1("Nope"), { name: "StateError", code: ErrorCode.UNKNOWN_STATE });
  assert.throws(() => m.add(["Foo", "Nope"]), { name: "StateError" });
  assert.throws(() => m.is1("Nope"), { name: "StateError" });
  assert.throws(() => m.add1("Foo", [1]), TypeError);
  assert.equal(m.stats.framesOut, out, "no frame was sent");
  await assert.rejects(m.add1("Bar"), { name: "AuthError", code: ErrorCode.FORBIDDEN });
  assert.equal(await m.add1("Foo"), Result.EXECUTED); // the session goes on

  const refused = client(py.info.ws, { id: "t-auth", token: "wrong" });
  await assert.rejects(within(refused.ready, "ready"), { code: ErrorCode.AUTH });
  assert.equal(refused.status, "closed");
  await assert.rejects(refused.add1("Foo"), { name: "ConnectionLostError" });
});

test("a gap and a bad checksum are repaired with SYNC -> SNAPSHOT", async () => {
  const m = client(py.info.proxy, { id: "t-gap" });
  await within(m.ready, "ready");
  await converged(py, m);
  // a CLOCK lost on the way: the next one has a gap
  await py.call("drop_next", { kind: Kind.CLOCK });
  await py.call("add", { state: "Msg" });
  await new Promise((r) => setTimeout(r, 50));
  await py.call("add", { state: "Msg" });
  await until(() => m.stats.resyncs === 1, "a resync");
  await converged(py, m);
  // a CLOCK whose checksum is wrong
  await py.call("corrupt_next_clock");
  await py.call("add", { state: "Msg" });
  await until(() => m.stats.resyncs === 2, "a second resync");
  await converged(py, m);
  // an explicit SYNC round trip
  await within(m.sync(), "sync()");
  assert.deepEqual(clockOf(m), await py.call("time"));
  assert.equal(m.stats.badFrames, 0);
});

test("reconnect and resume: a lost RESULT is replayed, a lost MUTATE resent, both applied once", async () => {
  const m = client(py.info.proxy, { id: "t-resume" });
  await within(m.ready, "ready");
  const sid = m.sid;
  const statuses = [];
  m.onStatus((s) => statuses.push(s));

  // the server applies it, the RESULT is lost with the connection
  let count = await py.call("count");
  let tick = (await py.call("time")).Msg;
  await py.call("blackhole", { direction: "down" });
  const first = m.add1("Msg");
  await py.call("wait_tick", { state: "Msg", tick: tick + 1 });
  await py.call("cut");
  assert.equal(await within(first, "the replayed RESULT"), Result.EXECUTED);
  assert.equal(await py.call("count"), count + 1);

  // the MUTATE never reaches the server: it is resent after the resume
  await until(() => m.status === "ready", "ready again");
  count = await py.call("count");
  tick = (await py.call("time")).Msg;
  const before = await py.call("dropped", { kind: Kind.MUTATE, direction: "up" });
  await py.call("blackhole", { direction: "up" });
  const second = m.add1("Msg");
  await dropped(Kind.MUTATE, "up", before + 1);
  assert.equal(await py.call("count"), count, "not applied yet");
  await py.call("cut");
  assert.equal(await within(second, "the resent MUTATE"), Result.EXECUTED);
  assert.equal(await py.call("count"), count + 1);
  assert.ok((await py.call("time")).Msg > tick);

  assert.equal(m.sid, sid, "the same session");
  assert.deepEqual(statuses, ["reconnecting", "ready", "reconnecting", "ready"]);
  await converged(py, m);
});

test("heartbeat: PINGs while idle; a silent server is dropped and the link comes back", async () => {
  const m = client(py.info.proxy, { id: "t-hb", heartbeat: 0.1 });
  await within(m.ready, "ready");
  const statuses = [];
  m.onStatus((s) => statuses.push(s));
  const out = m.stats.framesOut;
  await new Promise((r) => setTimeout(r, 350));
  assert.ok(m.stats.framesOut >= out + 2, "PINGs were sent");
  assert.equal(m.status, "ready", "PONGs keep it alive");
  await py.call("blackhole", { direction: "down" });
  await until(() => m.status === "reconnecting", "the heartbeat timeout");
  await py.call("restore");
  await until(() => m.status === "ready", "ready again");
  assert.deepEqual(statuses, ["reconnecting", "ready"]);
  await converged(py, m);
});

test("a new epoch fails what was sent with OutcomeUnknownError", async () => {
  const m = client(py.info.proxy, { id: "t-epoch" });
  await within(m.ready, "ready");
  const epoch = m.epoch;
  const before = await py.call("dropped", { kind: Kind.MUTATE, direction: "up" });
  await py.call("blackhole", { direction: "up" });
  const lost = m.add1("Foo");
  await dropped(Kind.MUTATE, "up", before + 1);
  await py.call("restore");
  const newEpoch = await py.call("restart");
  await assert.rejects(within(lost, "the failure"), { name: "OutcomeUnknownError" });
  await until(() => m.status === "ready", "ready again");
  assert.equal(m.epoch, newEpoch);
  assert.notEqual(m.epoch, epoch);
  assert.equal(await m.add1("Foo"), Result.EXECUTED); // ids go on; the new session takes them
  await converged(py, m);
});

test("through the relay; a target the relay refuses closes the client", async () => {
  const m = client(`${py.info.relay}/dial/t-relay/${py.info.tcp}`, { id: "t-relay" });
  await within(m.ready, "ready");
  assert.equal(await m.add1("Msg"), Result.EXECUTED);
  await converged(py, m);

  const refused = client(`${py.info.relay}/dial/t-relay2/127.0.0.1:1`, { id: "t-relay2" });
  await assert.rejects(within(refused.ready, "ready"), { code: ErrorCode.NOT_ALLOWED });
  assert.equal(refused.status, "closed");
});

test("close(): BYE ends the session; calls fail afterwards", async () => {
  const m = client(py.info.ws, { id: "t-close" });
  await within(m.ready, "ready");
  assert.ok((await py.call("sessions")).includes(m.sid));
  const waiting = assert.rejects(m.when1("Vetoed"), { name: "ConnectionLostError" });
  await m.close();
  assert.equal(m.status, "closed");
  await waiting;
  let sessions = await py.call("sessions");
  for (const t0 = Date.now(); sessions.includes(m.sid) && Date.now() - t0 < LIMIT;) {
    sessions = await py.call("sessions");
  }
  assert.ok(!sessions.includes(m.sid), "BYE ended the session");
  await assert.rejects(m.add1("Foo"), { name: "ConnectionLostError" });
});
