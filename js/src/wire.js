// Frames of the aRPC protocol, version 1 (arpc.md B3, B4, B11) and of the relay (C2).
// Shared by the client role (client.js) and the host role (host.js).
import { Encoder, Decoder, ExtensionCodec } from "@msgpack/msgpack";

export const PROTO = 1;
export const SUBPROTOCOL = "am-rpc.1";

export const Kind = Object.freeze({
  HELLO: 1, WELCOME: 2, MUTATE: 3, RESULT: 4, SYNC: 5, CLOCK: 6, GET: 7, SNAPSHOT: 8,
  PAYLOAD_ACK: 9, MUTATIONS: 10, PAYLOAD: 12, VALUE: 14, SCHEMA: 16,
  PING: 32, PONG: 33, ERROR: 34, BYE: 35,
  RELAY_BRIDGED: 112, RELAY_ERROR: 113,
});

export const Op = Object.freeze({ ADD: 0, REMOVE: 1, SET: 2, TOGGLE: 3 });

export const ErrorCode = Object.freeze({
  MALFORMED: 1, UNKNOWN_KIND: 2, BAD_FIELD: 3, TOO_LARGE: 4, VERSION: 5, HANDSHAKE: 6,
  AUTH: 7, FORBIDDEN: 8, UNKNOWN_STATE: 9, BAD_ARGS: 10, REQ_ORDER: 11, OVERLOAD: 12,
  SHUTDOWN: 13, SOURCE_GONE: 14, INTERNAL: 15, TIMEOUT: 16, UNSUPPORTED: 17, PAYLOAD: 18,
  ABUSE: 19,
  // relay codes (RELAY_ERROR only)
  NOT_ALLOWED: 32, BAD_TARGET: 33, UNREACHABLE: 34, TARGET_CLOSED: 35,
});

export const FLAG_NO_RESULT = 1;
export const FLAG_ERROR = 2;

export const Result = Object.freeze({ EXECUTED: 0, CANCELED: 1 });

const EXT_TYPED_ARGS = 1;
const EXT_ERROR = 2;

/** Typed args (ext type 1): `key` is "<prefix>__<state>", `data` the unstructured value. */
export class TypedArgs {
  constructor(key, data) {
    this.key = key;
    this.data = data;
  }
}

/** An exception that travelled over the wire (ext type 2). */
export class RemoteError extends Error {
  constructor(type, message, traceback) {
    super(`${type}: ${message}`);
    this.name = "RemoteError";
    this.type = type;
    this.remoteMessage = message;
    this.traceback = traceback;
  }
}

const codec = new ExtensionCodec();
codec.register({
  type: EXT_TYPED_ARGS,
  encode: (v) => (v instanceof TypedArgs ? encodeRaw([v.key, v.data]) : null),
  decode: (data) => {
    const p = decodeRaw(data);
    if (!Array.isArray(p) || p.length !== 2 || typeof p[0] !== "string") {
      throw new Error("typed args must be [key, data]");
    }
    return new TypedArgs(p[0], p[1]);
  },
});
codec.register({
  type: EXT_ERROR,
  encode: (v) => (v instanceof RemoteError ? encodeRaw([v.type, v.remoteMessage, v.traceback ?? ""]) : null),
  decode: (data) => {
    const p = decodeRaw(data);
    if (!Array.isArray(p) || p.length !== 3) throw new Error("an exception must be [type, message, traceback]");
    return new RemoteError(String(p[0]), String(p[1]), String(p[2]));
  },
});

const rawEncoder = new Encoder();
const rawDecoder = new Decoder();
function encodeRaw(v) { return rawEncoder.encode(v); }
function decodeRaw(b) { return rawDecoder.decode(b); }

const encoder = new Encoder({ extensionCodec: codec, ignoreUndefined: true });
const decoder = new Decoder({
  extensionCodec: codec,
  maxStrLength: 1 << 20, maxBinLength: 4 << 20, maxArrayLength: 1 << 20,
  maxMapLength: 1 << 20, maxExtLength: 4 << 20,
});

/** One frame -> bytes (Uint8Array). */
export function encodeFrame(frame) {
  return encoder.encode(frame);
}

/** Bytes -> a frame array; throws on bad msgpack or a non-array / no int kind. */
export function decodeFrame(bytes) {
  const f = decoder.decode(bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes);
  if (!Array.isArray(f) || f.length === 0 || !Number.isInteger(f[0])) {
    throw new Error("a frame is a non-empty array starting with an integer kind");
  }
  return f;
}

/** Args for a Python server's `args_types`: `{[key]: TypedArgs(key, obj)}`. */
export function typedArgs(key, obj) {
  return { [key]: new TypedArgs(key, obj) };
}

/** The data of typed args `key` in an args map, or undefined. */
export function argsOf(args, key) {
  const v = args ? args[key] : undefined;
  return v instanceof TypedArgs ? v.data : v;
}

/** (sum(ticks) + qt + mt) mod 2**32, the delta checksum (B4). */
export function checksum(ticks, qt, mt) {
  let s = qt + mt;
  for (const t of ticks) s += t;
  return s % 4294967296;
}
