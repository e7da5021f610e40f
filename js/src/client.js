// The client role of am.js (arpc.md B5-B9, C3): a mirror of a remote trio_am machine,
// the JS twin of trio_am/rpc/client.py and netmachine.py.
//
// One connection at a time: it dials, sends HELLO (with `resume` after a loss), applies
// WELCOME, resends what the server has not taken yet, then reads frames, answers PINGs and
// sends its own after `heartbeat` idle seconds, until the link fails; then it dials again
// with backoff. Request ids grow by one and a resumed session replays cached results, so a
// mutation is applied at most once within an epoch and exactly once across a resume; after
// a server restart (a new epoch) the requests that were sent fail with OutcomeUnknownError.
//
// Errors carry `.name` and `.code` (a B11 code, or a relay code 32-35; 0 for local ones).
import { Kind, Op, ErrorCode, PROTO, SUBPROTOCOL, encodeFrame, decodeFrame, checksum } from "./wire.js";

const ID_RE = /^[A-Za-z0-9._-]{1,128}$/;
/** Dead after `3 * heartbeat * DEAD_MARGIN` silent seconds (as in client.py). */
const DEAD_MARGIN = 0.95;
/** Fatal ERROR codes not worth a reconnect, and relay codes likewise (C2). */
const NO_RETRY = new Set([ErrorCode.AUTH, ErrorCode.VERSION, ErrorCode.SOURCE_GONE]);
const RELAY_NO_RETRY = new Set([ErrorCode.NOT_ALLOWED, ErrorCode.BAD_TARGET]);
const DEFAULT_BACKOFF = { initial: 0.25, factor: 2, max: 10, jitter: 0.1, maxElapsed: 300 };
/** Error names by B11 code, as Python's error_from_frame picks its classes. */
const ERROR_NAMES = {
  [ErrorCode.AUTH]: "AuthError", [ErrorCode.FORBIDDEN]: "AuthError",
  [ErrorCode.UNKNOWN_STATE]: "StateError", [ErrorCode.BAD_ARGS]: "ArgsError",
  [ErrorCode.UNSUPPORTED]: "UnsupportedError", [ErrorCode.PAYLOAD]: "DeliveryError",
};

/** An aRPC error: `name` says what kind (e.g. "AuthError", "OutcomeUnknownError"). */
export class RpcError extends Error {
  constructor(message, code = 0, name = ERROR_NAMES[code] ?? "ProtocolError", detail = undefined) {
    super(message);
    this.name = name;
    this.code = code;
    this.detail = detail;
  }
}

const connectionLost = (why) => new RpcError(why, 0, "ConnectionLostError");
const outcomeUnknown = (why) => new RpcError(why, 0, "OutcomeUnknownError");

/** The connection ended: reconnect (`retry`) or give up with `error`. */
class Lost extends Error {
  constructor(why, retry = true, error = connectionLost(why)) {
    super(why);
    this.retry = retry;
    this.error = error;
  }
}

// ------------------------------------------------------------------ frame checks (B4, B11)
// Like protocol.parse_server_frame: every field is checked before a frame is used, so the
// mirror never applies a delta that has not been checked.
const uint = (v) => Number.isSafeInteger(v) && v >= 0;
const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !ArrayBuffer.isView(v);
const opt = (check) => (v) => v == null || check(v);
const str = (v) => typeof v === "string";
const any = () => true;
const isDelta = (d) =>
  Array.isArray(d) && d.length >= 4 && Array.isArray(d[0]) && d[0].length % 2 === 0 &&
  d[0].every(uint) && uint(d[1]) && uint(d[2]) && uint(d[3]);

// kind: [required fields, a check per field]
const SPECS = {
  [Kind.RESULT]: [5, [uint, uint, opt(isDelta), uint, (v) => Number.isSafeInteger(v) && v >= -1]],
  [Kind.CLOCK]: [3, [uint, uint, opt(isDelta)]],
  [Kind.SNAPSHOT]: [5, [uint, uint, (v) => Array.isArray(v) && v.every(uint), uint, uint, opt(uint)]],
  [Kind.PAYLOAD]: [5, [uint, str, any, str, str, opt(str)]],
  [Kind.VALUE]: [2, [uint, any]],
  [Kind.PING]: [1, [uint]],
  [Kind.PONG]: [1, [uint]],
  [Kind.ERROR]: [3, [opt(uint), uint, str, opt((v) => typeof v === "boolean"), opt(isMap)]],
  [Kind.BYE]: [2, [uint, str]],
};

/** A decoded server frame -> {kind, fields} (optional fields null) or {kind, data}; throws. */
function parseServerFrame(f) {
  const kind = f[0];
  if (kind === Kind.WELCOME || kind === Kind.SCHEMA) {
    if (!isMap(f[1])) throw new Error(`frame kind ${kind}: expected a map`);
    return { kind, data: f[1] };
  }
  const spec = SPECS[kind];
  // MUTATIONS too: only sent to clients that ask for `muts`, which this one never does
  if (!spec) throw new Error(`frame kind ${kind} is unknown or not expected`);
  const [required, checks] = spec;
  if (f.length - 1 < required) throw new Error(`frame kind ${kind}: expected at least ${required} fields`);
  const fields = checks.map((check, i) => {
    const v = f[i + 1] ?? null;
    if (!check(v)) throw new Error(`frame kind ${kind}: field ${i + 1} has a wrong type`);
    return v;
  });
  return { kind, fields };
}

/** `[names, time]` of a WELCOME or SCHEMA map, or null when malformed. */
function namesAndTime(names, time) {
  if (Array.isArray(names) && Array.isArray(time) && names.length === time.length &&
      names.every(str) && time.every(uint)) {
    return [names, time];
  }
  return null;
}

const now = () => performance.now() / 1000;

// ------------------------------------------------------------------ the mirror
class RemoteMachine {
  constructor(url, opts) {
    if (typeof opts.id !== "string" || !ID_RE.test(opts.id)) {
      throw new TypeError("connect: `id` must match [A-Za-z0-9._-]{1,128}");
    }
    this.url = url;
    this.id = opts.id;
    this._token = opts.token;
    this.heartbeat = opts.heartbeat === undefined ? 5 : opts.heartbeat;
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.reconnect };
    this.callTimeout = opts.callTimeout === undefined ? 5 : opts.callTimeout;
    this.connectTimeout = opts.connectTimeout ?? 3;
    this.handshakeTimeout = opts.handshakeTimeout ?? 5;
    this.maxPending = opts.maxPending ?? 1024;
    this._WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("connect: no WebSocket (node 20 needs --experimental-websocket, or pass {WebSocket})");
    }

    /** "connecting" | "ready" | "reconnecting" | "closed" */
    this.status = "connecting";
    // from the last WELCOME
    this.sid = null;
    this.epoch = null;
    this.remoteId = null;
    this.schema = null;
    this.grant = {};
    this.limits = {};
    this.stats = { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, badFrames: 0, resyncs: 0, connections: 0 };

    // the mirror (protocol.Mirror): ticks by index into _names
    this._names = [];
    this._index = new Map();
    this._ticks = [];
    this._qt = 0;
    this._mt = 0;
    this._seq = 0;
    this._resyncing = false;

    // requests by id, in id order: {req, kind, data, sent, resolve, reject, timer}
    this._pending = new Map();
    this._nextReq = 0;
    this._ack = 0;

    this._conn = null;         // {ws, linked, lastSent, lastRecv, timer, hb, nonce}
    this._retryTimer = null;
    this._lostAt = null;       // when the current run of failed attempts began
    this._attempt = 0;
    this._closed = false;
    this._waiters = [];
    this._onChange = new Set();
    this._onPayload = new Set();
    this._onStatus = new Set();
    this._welcomed = false;
    this.ready = new Promise((resolve, reject) => {
      this._readyResolve = resolve;
      this._readyReject = reject;
    });
    this.ready.catch(() => {}); // a caller who never awaits `ready` gets no unhandled rejection
    this._dial();
  }

  // ---------------------------------------------------------------- reading the mirror
  get names() {
    return [...this._names];
  }

  _i(name) {
    const i = this._index.get(name);
    if (i === undefined) {
      const when = this._welcomed ? "" : " (the names are known once `ready` resolves)";
      throw new RpcError(`state ${JSON.stringify(name)} is not in ${this.remoteId ?? this.url}${when}`,
        ErrorCode.UNKNOWN_STATE, "StateError");
    }
    return i;
  }

  tick(name) { return this._ticks[this._i(name)]; }
  is1(name) { return this.tick(name) % 2 === 1; }
  not1(name) { return !this.is1(name); }
  is(names) { return this.time(names).every((t) => t % 2 === 1); }
  any1(...names) { return this.time(names).some((t) => t % 2 === 1); }
  /** The ticks of all states (in `names` order), or of the given `names`. */
  time(names) { return names ? names.map((n) => this.tick(n)) : [...this._ticks]; }
  activeStates() { return this._names.filter((_, i) => this._ticks[i] % 2 === 1); }

  when1(name) { return this._when(() => this.is1(name)); }
  whenNot1(name) { return this._when(() => this.not1(name)); }
  whenTick(name, minTick) { return this._when(() => this.tick(name) >= minTick); }

  async _when(test) {
    if (!this._welcomed) await this.ready;
    if (test()) return;
    if (this._closed) throw connectionLost("the client is closed");
    await new Promise((resolve, reject) => this._waiters.push({ test, resolve, reject }));
  }

  onChange(cb) { return subscribe(this._onChange, cb); }
  onPayload(cb) { return subscribe(this._onPayload, cb); }
  onStatus(cb) { return subscribe(this._onStatus, cb); }

  // ---------------------------------------------------------------- requests
  add1(name, args) { return this._mutate(Op.ADD, [name], args); }
  add(names, args) { return this._mutate(Op.ADD, names, args); }
  remove1(name, args) { return this._mutate(Op.REMOVE, [name], args); }
  remove(names, args) { return this._mutate(Op.REMOVE, names, args); }
  set(names, args) { return this._mutate(Op.SET, names, args); }
  toggle1(name, args) { return this._mutate(Op.TOGGLE, [name], args); }
  toggle(names, args) { return this._mutate(Op.TOGGLE, names, args); }

  /** Call getter `name` on the server; resolves to its value. */
  get(name, params) {
    if (typeof name !== "string") throw new TypeError("get: the getter name must be a string");
    return this._request(params == null ? [Kind.GET, 0, name] : [Kind.GET, 0, name, params]);
  }

  /** Ask for a full snapshot; resolves once it is applied. */
  async sync() {
    await this._request([Kind.SYNC, 0]);
  }

  // Unknown names, bad args or values msgpack cannot encode throw here, before any frame.
  _mutate(op, names, args) {
    if (this._closed) return Promise.reject(connectionLost("the client is closed"));
    if (!Array.isArray(names)) throw new TypeError("expected an array of state names");
    const idxs = [...new Set(names)].map((n) => this._i(n));
    if (args == null) return this._request([Kind.MUTATE, 0, op, idxs]);
    if (!isMap(args)) throw new TypeError("args must be an object with string keys");
    return this._request([Kind.MUTATE, 0, op, idxs, args]);
  }

  _request(frame) {
    if (this._closed) return Promise.reject(connectionLost("the client is closed"));
    if (this._pending.size >= this.maxPending) {
      return Promise.reject(new RpcError(`${this._pending.size} requests wait already (maxPending)`, 0, "NotConnectedError"));
    }
    const req = this._nextReq + 1;
    frame[1] = req;
    const data = encodeFrame(frame);
    this._nextReq = req;
    let r;
    const promise = new Promise((resolve, reject) => {
      r = { req, kind: frame[0], data, sent: false, resolve, reject, timer: null };
    });
    this._pending.set(req, r);
    if (this.callTimeout) {
      // like client.py: the caller stops waiting, the request stays tracked (and resent)
      r.timer = setTimeout(() => r.reject(new RpcError(`no answer within ${this.callTimeout}s`, 0, "TimeoutError")),
        this.callTimeout * 1000);
    }
    const conn = this._conn;
    if (conn && conn.linked) {
      r.sent = true;
      this._write(conn, data);
    }
    return promise;
  }

  _settle(r, value, err) {
    this._pending.delete(r.req);
    clearTimeout(r.timer);
    if (err) r.reject(err);
    else r.resolve(value);
  }

  // ---------------------------------------------------------------- closing
  /** Send BYE (the session ends, it cannot be resumed) and close with 1000. */
  async close() {
    if (this._closed) return;
    const conn = this._conn;
    this._finish(connectionLost("the client was closed"));
    if (!conn) return;
    const ws = conn.ws;
    if (ws.readyState === 1) {
      const closed = new Promise((resolve) => {
        ws.addEventListener("close", resolve);
        setTimeout(resolve, 1000);
      });
      ws.send(encodeFrame([Kind.BYE, 1000, "bye"]));
      ws.close(1000, "bye");
      await closed;
    } else {
      ws.close();
    }
  }

  /** The end: status "closed"; everything still waiting fails. */
  _finish(err) {
    this._closed = true;
    clearTimeout(this._retryTimer);
    if (this._conn) {
      clearTimeout(this._conn.timer);
      this._conn = null;
    }
    for (const r of [...this._pending.values()]) {
      this._settle(r, undefined, r.sent ? outcomeUnknown(err.message) : connectionLost(err.message));
    }
    for (const w of this._waiters) w.reject(err);
    this._waiters = [];
    if (!this._welcomed) this._readyReject(err);
    this._setStatus("closed", err);
  }

  _setStatus(status, err) {
    if (this.status === status) return;
    this.status = status;
    for (const cb of [...this._onStatus]) call(cb, status, err);
  }

  // ---------------------------------------------------------------- the connection
  _dial() {
    let ws;
    try {
      ws = new this._WebSocket(this.url, SUBPROTOCOL);
    } catch (err) { // a malformed URL: no point in retrying
      this._finish(connectionLost(`cannot dial ${this.url}: ${err.message}`));
      return;
    }
    ws.binaryType = "arraybuffer";
    const conn = { ws, linked: false, lastSent: now(), lastRecv: now(), timer: null, hb: 0, nonce: 0 };
    this._conn = conn;
    this.stats.connections += 1;
    const guard = (fn) => (ev) => {
      if (conn !== this._conn) return; // a connection we left already
      try {
        fn(ev);
      } catch (err) {
        if (!(err instanceof Lost)) throw err;
        this._lose(conn, err);
      }
    };
    conn.timer = setTimeout(guard(() => { throw new Lost("connect timeout"); }), this.connectTimeout * 1000);
    ws.onopen = guard(() => {
      clearTimeout(conn.timer);
      this._write(conn, encodeFrame([Kind.HELLO, this._hello()]));
      conn.timer = setTimeout(guard(() => { throw new Lost("no WELCOME in time"); }), this.handshakeTimeout * 1000);
    });
    ws.onmessage = guard((ev) => this._receive(conn, ev.data));
    ws.onclose = guard((ev) => { throw new Lost(`connection closed (${ev.code} ${ev.reason || ""})`.trim()); });
    ws.onerror = () => {}; // a close event follows
  }

  _hello() {
    const hello = { proto: PROTO, id: this.id, schema: true };
    if (this._token != null) hello.token = this._token;
    if (this.sid !== null) {
      hello.resume = {
        sid: this.sid,
        epoch: this.epoch,
        seq: this._seq,
        // the server replays the results of these (up to its ack); GETs have no cache
        pending: [...this._pending.values()].filter((r) => r.sent && r.kind === Kind.MUTATE).map((r) => r.req),
      };
    }
    return hello;
  }

  _write(conn, data) {
    conn.ws.send(data);
    conn.lastSent = now();
    this.stats.framesOut += 1;
    this.stats.bytesOut += data.byteLength;
  }

  /** Leave `conn` and, unless the loss is final, dial again after a backoff delay. */
  _lose(conn, lost) {
    this._conn = null;
    clearTimeout(conn.timer);
    if (conn.ws.readyState <= 1) conn.ws.close(1000, "lost");
    if (!lost.retry) {
      this._finish(lost.error);
      return;
    }
    const t = now();
    if (this._lostAt === null || conn.linked) {
      // a new loss: the schedule starts again from `initial`
      this._lostAt = t;
      this._attempt = 0;
    }
    const b = this.backoff;
    let delay = Math.min(b.max, b.initial * b.factor ** this._attempt);
    if (b.jitter) delay *= 1 + b.jitter * (2 * Math.random() - 1);
    delay = Math.max(0, delay);
    // like Go's backoff: no attempt starts after maxElapsed
    if (t + delay - this._lostAt > b.maxElapsed) {
      this._finish(connectionLost(`reconnecting failed (last: ${lost.message})`));
      return;
    }
    this._attempt += 1;
    this._setStatus("reconnecting", lost.error);
    this._retryTimer = setTimeout(() => this._dial(), delay * 1000);
  }

  _receive(conn, data) {
    conn.lastRecv = now();
    this.stats.framesIn += 1;
    if (typeof data === "string") throw new Lost("the server sent a text message"); // B2
    this.stats.bytesIn += data.byteLength;
    let frame;
    try {
      const f = decodeFrame(data);
      if (f[0] === Kind.RELAY_ERROR) return this._relayError(f);
      if (f[0] === Kind.RELAY_BRIDGED) return undefined; // listen tunnels only
      frame = parseServerFrame(f);
    } catch (err) {
      if (err instanceof Lost) throw err;
      if (!conn.linked) throw new Lost(`bad first frame: ${err.message}`);
      this._bad(err.message);
      return undefined;
    }
    if (conn.linked) return this._handle(conn, frame);
    if (frame.kind === Kind.ERROR) this._error(frame.fields); // every error before WELCOME is fatal
    if (frame.kind !== Kind.WELCOME) throw new Lost(`expected WELCOME, got frame kind ${frame.kind}`);
    return this._welcome(conn, frame.data);
  }

  /** RELAY_ERROR [113, code, message] (C2): the tunnel is over, except for TOO_LARGE. */
  _relayError(f) {
    const code = Number.isInteger(f[1]) ? f[1] : 0;
    const msg = `relay error ${code}: ${f[2] ?? ""}`;
    if (code === ErrorCode.TOO_LARGE) {
      this._bad(msg); // the relay dropped one frame; the tunnel stays open
      return;
    }
    throw new Lost(msg, !RELAY_NO_RETRY.has(code), new RpcError(msg, code, "ConnectionLostError"));
  }

  _bad(why) {
    this.stats.badFrames += 1;
    console.warn(`am.js client ${this.id}: bad frame from the server: ${why}`);
  }

  // ---------------------------------------------------------------- frames
  _welcome(conn, w) {
    const checked = namesAndTime(w.names, w.time);
    if (!checked) throw new Lost("malformed WELCOME");
    const newSession = this.sid !== null && (w.epoch !== this.epoch || !w.resumed);
    if (newSession) {
      // a server restart (or an expired session): what was sent may or may not have run
      for (const r of [...this._pending.values()]) {
        if (r.sent && r.kind !== Kind.SYNC) this._settle(r, undefined, outcomeUnknown("the server restarted (new epoch)"));
      }
      this._ack = 0;
    }
    this.sid = w.sid;
    this.epoch = w.epoch;
    this.remoteId = w.id ?? null;
    this.grant = isMap(w.grant) ? w.grant : {};
    this.limits = isMap(w.limits) ? w.limits : {};
    if (isMap(w.schema)) this.schema = w.schema;
    const changed = this._reset(checked[0], checked[1], w.qt, w.mt, w.seq);
    this._setAck(uint(w.ack) ? w.ack : 0);
    for (const r of [...this._pending.values()]) {
      if (r.kind === Kind.SYNC) this._settle(r); // WELCOME is a snapshot
      else if (r.kind === Kind.GET && r.sent && r.req <= this._ack) {
        this._settle(r, undefined, connectionLost("the answer was lost with the connection"));
      }
    }
    conn.linked = true;
    clearTimeout(conn.timer);
    // the rest, in id order, with the same ids (B5 step 4)
    for (const r of this._pending.values()) {
      if (r.req > this._ack) {
        r.sent = true;
        this._write(conn, r.data);
      }
    }
    if (this.heartbeat) {
      const hb = this.limits.hb;
      conn.hb = typeof hb === "number" && hb > 0 ? Math.min(this.heartbeat, hb) : this.heartbeat;
      this._beat(conn);
    }
    this._setStatus("ready");
    if (!this._welcomed) {
      this._welcomed = true;
      this._readyResolve(this);
    }
    this._changed(changed);
  }

  _handle(conn, { kind, fields, data }) {
    switch (kind) {
      case Kind.RESULT: {
        const [seq, ack, d, req, res] = fields;
        this._clock(seq, d, ack);
        const r = this._pending.get(req);
        if (r) {
          if (res === -1) this._settle(r, undefined, outcomeUnknown("applied, but its result is no longer cached"));
          else this._settle(r, res);
        }
        break;
      }
      case Kind.CLOCK:
        this._clock(fields[0], fields[2], fields[1]);
        break;
      case Kind.SNAPSHOT: {
        const [seq, ack, time, qt, mt, req] = fields;
        if (time.length !== this._names.length) {
          this._bad("SNAPSHOT of a wrong size");
          break;
        }
        const changed = this._reset(this._names, time, qt, mt, seq);
        this._setAck(ack);
        const r = this._pending.get(req);
        if (r && r.kind === Kind.SYNC) this._settle(r);
        this._changed(changed);
        break;
      }
      case Kind.SCHEMA: {
        // states were added to the source: new names, schema and clock
        const checked = namesAndTime(data.names, data.time);
        if (!checked) {
          this._bad("malformed SCHEMA");
          break;
        }
        if (isMap(data.schema)) this.schema = data.schema;
        this._changed(this._reset(checked[0], checked[1], data.qt, data.mt, data.seq));
        break;
      }
      case Kind.PAYLOAD:
        this._payload(conn, fields);
        break;
      case Kind.VALUE: {
        const r = this._pending.get(fields[0]);
        if (r && r.kind === Kind.GET) this._settle(r, fields[1]);
        break;
      }
      case Kind.PING:
        this._write(conn, encodeFrame([Kind.PONG, fields[0]]));
        break;
      case Kind.ERROR: {
        const [req, code, msg, , detail] = fields;
        const r = req == null ? undefined : this._pending.get(req);
        if (r) {
          this._settle(r, undefined, new RpcError(msg, code, undefined, detail ?? undefined));
          this._setAck(req);
        } else {
          this._error(fields);
        }
        break;
      }
      case Kind.BYE:
        throw new Lost(`the server said bye: ${fields[0]} ${fields[1]}`);
      default: // PONG: its arrival (lastRecv) is all that counts
    }
  }

  /** An ERROR naming no pending request: a fatal one (or any before WELCOME) ends the link. */
  _error([, code, msg, fatal, detail]) {
    const err = new RpcError(msg, code, undefined, detail ?? undefined);
    if (fatal || !this._conn.linked) throw new Lost(`server error ${code}: ${msg}`, !NO_RETRY.has(code), err);
    console.warn(`am.js client ${this.id}: server error ${code}: ${msg}`);
  }

  /** A CLOCK or RESULT: check seq and the checksum (B6), or resync. */
  _clock(seq, d, ack) {
    if (!this._resyncing) {
      if (d === null) {
        if (seq !== this._seq) this._resync(`seq ${seq} without a delta after ${this._seq}`);
      } else if (!this._apply(seq, d)) {
        this._resync(`gap or bad checksum at seq ${seq} (had ${this._seq})`);
      }
    }
    this._setAck(ack);
  }

  /** protocol.Mirror.apply: false (nothing changed) on a gap, a bad index or checksum. */
  _apply(seq, [pairs, dqt, dmt, sum]) {
    if (seq !== this._seq + 1) return false;
    const ticks = [...this._ticks];
    const changed = [];
    for (let k = 0; k < pairs.length; k += 2) {
      const i = pairs[k];
      if (i >= ticks.length) return false;
      ticks[i] += pairs[k + 1];
      if (pairs[k + 1]) changed.push(this._names[i]);
    }
    const qt = this._qt + dqt;
    const mt = this._mt + dmt;
    if (checksum(ticks, qt, mt) !== sum) return false;
    this._ticks = ticks;
    this._qt = qt;
    this._mt = mt;
    this._seq = seq;
    this._changed(changed);
    return true;
  }

  /** Take a full clock (WELCOME, SNAPSHOT, SCHEMA); returns the names whose tick moved. */
  _reset(names, time, qt, mt, seq) {
    const before = new Map(this._names.map((n, i) => [n, this._ticks[i]]));
    if (names !== this._names) {
      this._names = [...names];
      this._index = new Map(names.map((n, i) => [n, i]));
    }
    this._ticks = [...time];
    this._qt = uint(qt) ? qt : 0;
    this._mt = uint(mt) ? mt : 0;
    this._seq = uint(seq) ? seq : 0;
    this._resyncing = false;
    return this._names.filter((n, i) => (before.get(n) ?? 0) !== this._ticks[i]);
  }

  /** A gap or a bad checksum: ignore deltas until the SNAPSHOT (B6). */
  _resync(why) {
    console.info(`am.js client ${this.id}: resync: ${why}`);
    this._resyncing = true;
    this.stats.resyncs += 1;
    this._request([Kind.SYNC, 0]).catch(() => {}); // the SNAPSHOT itself is what counts
  }

  _setAck(ack) {
    if (ack > this._ack) this._ack = ack;
  }

  _payload(conn, [token, name, data, source, sourceTx, dest]) {
    let ok = false;
    for (const cb of [...this._onPayload]) {
      if (call(cb, { name, data, source, sourceTx, dest, token })) ok = true;
    }
    const code = ok ? [] : [ErrorCode.PAYLOAD];
    this._write(conn, encodeFrame([Kind.PAYLOAD_ACK, token, ok, ...code]));
  }

  _changed(names) {
    if (!names.length) return;
    for (const cb of [...this._onChange]) call(cb, this, names);
    this._waiters = this._waiters.filter((w) => {
      try {
        if (!w.test()) return true;
        w.resolve();
      } catch (err) {
        w.reject(err);
      }
      return false;
    });
  }

  /** Send PING after `hb` idle seconds; drop the link after 3 silent heartbeats (B9). */
  _beat(conn) {
    if (conn !== this._conn) return;
    const hb = conn.hb;
    const dead = 3 * hb * DEAD_MARGIN;
    const t = now();
    if (t - conn.lastRecv >= dead) {
      this._lose(conn, new Lost(`no frame from the server for ${3 * hb}s`));
      return;
    }
    if (t - conn.lastSent >= hb) {
      conn.nonce += 1;
      this._write(conn, encodeFrame([Kind.PING, conn.nonce]));
    }
    const next = Math.min(conn.lastRecv + dead, conn.lastSent + hb);
    conn.timer = setTimeout(() => this._beat(conn), Math.max(next - now(), 0.001) * 1000);
  }
}

function subscribe(set, cb) {
  if (typeof cb !== "function") throw new TypeError("expected a function");
  set.add(cb);
  return () => set.delete(cb);
}

/** Run a user callback; true when it returned without throwing (its error is logged). */
function call(cb, ...args) {
  try {
    cb(...args);
    return true;
  } catch (err) {
    console.error("am.js: a callback failed", err);
    return false;
  }
}

/**
 * Connect to a trio_am aRPC server (directly or through a relay's /dial/ path) and mirror
 * its machine. Returns at once; `await m.ready` waits for the first WELCOME.
 *
 * @param {string} url  "ws://host:port" of a Python server, or "ws://relay/dial/<id>/<host:port>"
 * @param {object} opts {id, token?, heartbeat? (s, 5; 0 = off), reconnect? {initial, factor,
 *   max, jitter, maxElapsed} (s), callTimeout? (s, 5; 0 = none), connectTimeout? (3),
 *   handshakeTimeout? (5), maxPending? (1024), WebSocket? (default globalThis.WebSocket)}
 */
export function connect(url, opts = {}) {
  return new RemoteMachine(url, opts);
}
