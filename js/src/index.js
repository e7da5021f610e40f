// am.js: the browser side of trio_am aRPC. See docs/browser.md.
export { Kind, Op, ErrorCode, Result, TypedArgs, RemoteError, typedArgs, argsOf, encodeFrame, decodeFrame, SUBPROTOCOL } from "./wire.js";
export { connect } from "./client.js";
export { host, Host } from "./host.js";
export { Machine, StateUnknownError } from "./machine.js";
