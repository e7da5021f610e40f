// Host role: a machine in the page, served over aRPC (as trio_am/rpc/server.py serves a
// Python machine) through the relay's listen tunnels (arpc.md C2, C3). Python peers
// connect to the relay's TCP listen address, or a relay listen handler attaches to it.
import { Machine } from "./machine.js";
import { Kind, ErrorCode, PROTO, SUBPROTOCOL, encodeFrame, decodeFrame, checksum } from "./wire.js";

const OPS = ["add", "remove", "set", "toggle"];
const FINAL_RELAY = new Set([ErrorCode.NOT_ALLOWED, ErrorCode.BAD_TARGET]);
const RESULT_CACHE = 1024;
const SESSION_TTL_MS = 60_000;
const LIMITS = { frame: 1 << 20, args: 1 << 16, args_depth: 32, inflight: 256, hb: 5, push: 0.005 };

function randomHex(bytes) {
  const a = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(a);
  return [...a].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The wire form of the schema (like rpc.protocol.wire_schema). */
function wireSchema(schema, names) {
  const out = {};
  for (const name of names) {
    const st = schema[name] || {};
    const d = {};
    if (st.multi) d.multi = true;
    for (const rel of ["require", "add", "remove"]) if (st[rel] && st[rel].length) d[rel] = [...st[rel]];
    if (st.tags && st.tags.length) d.tags = [...st.tags];
    out[name] = d;
  }
  return out;
}

/** Start hosting a page machine; see Host. */
export function host(options) {
  return new Host(options);
}

/**
 * A machine in the page, served to aRPC clients through a relay.
 * @param options {id, schema, handlers, relay ("ws://host:port"), listen ("host:port";
 *   omitted: a relay listen handler takes the tunnels), WebSocket, pushInterval (ms, 5)}
 * Reads and mutations are those of the page machine (`host.machine`): is1, tick, add1, ...
 */
export class Host {
  constructor({ id, schema, handlers = [], relay, listen = null, WebSocket = globalThis.WebSocket, pushInterval = 5 }) {
    if (!id || !relay) throw new Error("host() needs an id and a relay URL");
    this.id = id;
    this.machine = new Machine(schema, { id, handlers });
    this.relay = relay.replace(/\/$/, "");
    this.listen = listen;
    this.epoch = randomHex(8);
    this.pushInterval = pushInterval;
    this.stopped = false;
    this.lastError = null;
    this._WS = WebSocket;
    this._sessions = new Map(); // sid -> Session
    this._attempt = 0;
    this._pushTimer = null;
    this._payloadToken = 0;
    this.machine.onChange(() => this._schedulePush());
    this._openIdle();
  }

  // ---- the page machine
  is1(n) { return this.machine.is1(n); }
  is(ns) { return this.machine.is(ns); }
  not1(n) { return this.machine.not1(n); }
  any1(...ns) { return this.machine.any1(...ns); }
  tick(n) { return this.machine.tick(n); }
  time() { return this.machine.time(); }
  activeStates() { return this.machine.activeStates(); }
  when1(n) { return this.machine.when1(n); }
  whenNot1(n) { return this.machine.whenNot1(n); }
  whenTick(n, t) { return this.machine.whenTick(n, t); }
  onChange(cb) { return this.machine.onChange(cb); }
  add1(n, args) { return this.machine.add1(n, args); }
  add(ns, args) { return this.machine.add(ns, args); }
  remove1(n, args) { return this.machine.remove1(n, args); }
  remove(ns, args) { return this.machine.remove(ns, args); }
  set(ns, args) { return this.machine.set(ns, args); }
  toggle1(n, args) { return this.machine.toggle1(n, args); }

  /** The number of connected aRPC sessions. */
  get sessions() {
    let n = 0;
    for (const s of this._sessions.values()) if (s.ws) n += 1;
    return n;
  }

  /** Send a payload to every connected session, or to `dest` (a sid or a client id). */
  sendPayload(name, data, { dest = null } = {}) {
    let sent = 0;
    for (const s of this._sessions.values()) {
      if (!s.ws || (dest && dest !== s.sid && dest !== s.clientId)) continue;
      s.send([Kind.PAYLOAD, ++this._payloadToken, name, data, this.id, "", s.clientId]);
      sent += 1;
    }
    return sent;
  }

  /** Close every tunnel and stop offering new ones. */
  async stop() {
    this.stopped = true;
    if (this._idle) this._idle.close(1000);
    for (const s of this._sessions.values()) s.close(1001, "the page host stopped");
    this._sessions.clear();
  }

  // ---- tunnels
  _openIdle() {
    if (this.stopped) return;
    const url = `${this.relay}/listen/${this.id}${this.listen ? `/${this.listen}` : ""}`;
    const ws = new this._WS(url, SUBPROTOCOL);
    ws.binaryType = "arraybuffer";
    this._idle = ws;
    let session = null;
    ws.onmessage = (ev) => {
      if (session) { session.receive(ev.data); return; }
      let f;
      try { f = decodeFrame(ev.data); } catch { return; }
      if (f[0] === Kind.RELAY_BRIDGED) {
        // this tunnel now carries one client; offer a fresh idle one
        this._attempt = 0;
        session = new Session(this, ws, String(f[1]));
        if (this._idle === ws) this._idle = null;
        this._openIdle();
      } else if (f[0] === Kind.RELAY_ERROR) {
        this.lastError = { code: f[1], message: f[2] };
        console.warn(`am.js host ${this.id}: relay error ${f[1]}: ${f[2]}`);
        if (FINAL_RELAY.has(f[1])) this.stopped = true;
      }
    };
    ws.onclose = () => {
      if (session) { session.detach(ws); return; }
      if (this._idle !== ws) return;
      this._idle = null;
      if (this.stopped) return;
      const delay = Math.min(10_000, 250 * 2 ** this._attempt++);
      setTimeout(() => this._openIdle(), delay);
    };
    ws.onerror = () => {};
  }

  _schedulePush() {
    if (this._pushTimer !== null) return;
    this._pushTimer = setTimeout(() => {
      this._pushTimer = null;
      for (const s of this._sessions.values()) s.push();
    }, this.pushInterval);
  }

  _expire() {
    const now = Date.now();
    for (const [sid, s] of this._sessions) {
      if (!s.ws && now - s.lostAt > SESSION_TTL_MS) this._sessions.delete(sid);
    }
  }
}

/** One client's session: its view of the clock, sequence numbers and cached results. */
class Session {
  constructor(host, ws, peer) {
    this.host = host;
    this.ws = ws;
    this.peer = peer;
    this.sid = null;
    this.clientId = null;
    this.seq = 0;
    this.ack = 0;
    this.base = null; // the ticks last sent (untracked states stay 0)
    this.qt = 0;
    this.mt = 0;
    this.tracked = null;
    this.results = new Map();
    this.lostAt = 0;
  }

  send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(encodeFrame(frame));
  }

  close(code = 1000, reason = "") {
    if (this.ws) try { this.ws.close(code, reason); } catch { /* closing */ }
    this.ws = null;
  }

  detach(ws) {
    if (this.ws === ws) { this.ws = null; this.lostAt = Date.now(); }
    if (!this.sid) return;
    this.host._expire();
  }

  error(req, code, message, fatal = false) {
    this.send([Kind.ERROR, req ?? null, code, message, fatal]);
    if (fatal) this.close(code === ErrorCode.VERSION || code === ErrorCode.HANDSHAKE ? 1002 : 1000);
  }

  receive(data) {
    if (typeof data === "string") { this.close(1003, "text messages are not accepted"); return; }
    let f;
    try {
      f = decodeFrame(data);
    } catch (err) {
      this.error(null, ErrorCode.MALFORMED, `not a frame: ${err.message}`);
      return;
    }
    try {
      this.frame(f);
    } catch (err) {
      console.error(`am.js host ${this.host.id}: frame ${f[0]} failed`, err);
      this.error(Number.isInteger(f[1]) ? f[1] : null, ErrorCode.INTERNAL, String(err && err.message));
    }
  }

  frame(f) {
    const kind = f[0];
    if (this.sid === null && kind !== Kind.HELLO) {
      this.error(null, ErrorCode.HANDSHAKE, "HELLO must come first", true);
      return;
    }
    switch (kind) {
      case Kind.HELLO: return this.hello(f[1]);
      case Kind.MUTATE: return this.mutate(f);
      case Kind.SYNC: return this.snapshot(f[1]);
      case Kind.GET: return this.get(f[1], f[2]);
      case Kind.PING: return this.send([Kind.PONG, f[1]]);
      case Kind.PONG: case Kind.PAYLOAD_ACK: case Kind.ERROR: return undefined;
      case Kind.BYE:
        this.host._sessions.delete(this.sid);
        this.close(1000, "bye");
        return undefined;
      default:
        this.error(Number.isInteger(f[1]) ? f[1] : null, ErrorCode.UNKNOWN_KIND, `frame kind ${kind} is unknown or not allowed`);
        return undefined;
    }
  }

  view() {
    const ticks = this.host.machine.ticks;
    return ticks.map((t, i) => (this.tracked[i] ? t : 0));
  }

  hello(h) {
    const host = this.host;
    const m = host.machine;
    if (this.sid !== null) { this.error(null, ErrorCode.HANDSHAKE, "HELLO repeated", true); return; }
    if (!h || typeof h !== "object") { this.error(null, ErrorCode.HANDSHAKE, "HELLO must be a map", true); return; }
    if (h.proto !== PROTO) { this.error(null, ErrorCode.VERSION, `unsupported proto ${h.proto}`, true); return; }
    if (typeof h.id !== "string" || !/^[A-Za-z0-9._-]{1,128}$/.test(h.id)) {
      this.error(null, ErrorCode.HANDSHAKE, "bad client id", true);
      return;
    }
    let resumed = false;
    const r = h.resume;
    const old = r && r.epoch === host.epoch ? host._sessions.get(r.sid) : null;
    if (old && old !== this) {
      // take the session over: its sequence numbers, ack and cached results
      old.close(1000, "resumed elsewhere");
      Object.assign(this, { sid: old.sid, seq: old.seq, ack: old.ack, results: old.results });
      resumed = true;
    } else {
      this.sid = randomHex(16);
    }
    this.clientId = h.id;
    const allow = Array.isArray(h.allow) ? new Set(h.allow) : null;
    const skip = new Set(Array.isArray(h.skip) ? h.skip : []);
    this.tracked = m.names.map((n) => (allow === null || allow.has(n)) && !skip.has(n));
    host._sessions.set(this.sid, this);
    this.base = this.view();
    this.qt = m.queueTick;
    this.mt = m.machineTick;
    this.seq += 1;
    this.send([Kind.WELCOME, {
      proto: PROTO, sid: this.sid, epoch: host.epoch, resumed, id: host.id, parent: null, tags: [],
      names: m.names, schema: wireSchema(m.schema, m.names), complete: true,
      hash: new Uint8Array(16), time: this.base, qt: this.qt, mt: this.mt, seq: this.seq, ack: this.ack,
      limits: LIMITS, grant: { mutable: m.names, payloads: true, getters: ["export", "tags"] },
    }]);
    if (resumed) {
      // replay what the client may have missed, up to ack
      for (const req of r.pending || []) {
        if (req > this.ack) continue;
        const res = this.results.has(req) ? this.results.get(req) : -1;
        this.send([Kind.RESULT, this.seq, this.ack, null, req, res]);
      }
    }
  }

  mutate(f) {
    const [, req, op, idxs, args, flags, src] = f;
    const m = this.host.machine;
    if (!Number.isInteger(req) || !Number.isInteger(op) || op < 0 || op > 3 || !Array.isArray(idxs)) {
      this.error(Number.isInteger(req) ? req : null, ErrorCode.BAD_FIELD, "MUTATE: bad fields");
      return;
    }
    if (req <= this.ack) { this.error(req, ErrorCode.REQ_ORDER, `req ${req} did not increase`); return; }
    if (args != null && (typeof args !== "object" || Array.isArray(args))) {
      this.error(req, ErrorCode.BAD_ARGS, "args must be a map");
      return;
    }
    const seen = new Set();
    for (const i of idxs) {
      if (!Number.isInteger(i) || i < 0 || i >= m.names.length || seen.has(i)) {
        this.error(req, ErrorCode.UNKNOWN_STATE, `index ${i} is out of range or repeated`);
        return;
      }
      seen.add(i);
    }
    const names = idxs.map((i) => m.names[i]);
    const source = {
      machId: Array.isArray(src) && typeof src[0] === "string" ? src[0] : this.clientId,
      txId: Array.isArray(src) && typeof src[1] === "string" ? src[1] : "",
      machTime: Array.isArray(src) && Number.isInteger(src[2]) ? src[2] : 0,
      sessionId: this.sid,
    };
    let res;
    if (flags & 2) {
      res = m.addErr(args && args.err, args, m.has1("ErrOnClient") ? "ErrOnClient" : undefined);
    } else {
      res = m.mutate(OPS[op], names, args, source);
    }
    this.ack = req;
    this.results.set(req, res);
    if (this.results.size > RESULT_CACHE) this.results.delete(this.results.keys().next().value);
    if (flags & 1) return;
    const d = this.delta();
    if (d) this.seq += 1;
    this.send([Kind.RESULT, this.seq, this.ack, d, req, res]);
  }

  /** The delta from the last sent clock to now (the base moves), or null. */
  delta() {
    const m = this.host.machine;
    const now = this.view();
    const pairs = [];
    now.forEach((t, i) => { if (t > this.base[i]) pairs.push(i, t - this.base[i]); });
    const dqt = Math.max(0, m.queueTick - this.qt);
    const dmt = Math.max(0, m.machineTick - this.mt);
    if (!pairs.length && !dqt && !dmt) return null;
    this.base = now;
    this.qt += dqt;
    this.mt += dmt;
    return [pairs, dqt, dmt, checksum(now, this.qt, this.mt)];
  }

  push() {
    if (!this.ws || this.sid === null) return;
    const d = this.delta();
    if (!d) return;
    this.seq += 1;
    this.send([Kind.CLOCK, this.seq, this.ack, d]);
  }

  snapshot(req) {
    const m = this.host.machine;
    this.base = this.view();
    this.qt = m.queueTick;
    this.mt = m.machineTick;
    this.seq += 1;
    this.send([Kind.SNAPSHOT, this.seq, this.ack, this.base, this.qt, this.mt, Number.isInteger(req) ? req : null]);
  }

  get(req, name) {
    const m = this.host.machine;
    if (name === "tags") this.send([Kind.VALUE, req, []]);
    else if (name === "export") this.send([Kind.VALUE, req, { id: this.host.id, names: m.names, time: m.time() }]);
    else this.error(req, ErrorCode.UNSUPPORTED, `unknown getter ${JSON.stringify(name)}`);
  }
}
