// nanogrid.js — write nanogrid nanoservices in JavaScript.
//
// A nanoservice is a WebAssembly component of the `nanogrid:service/nanoservice` world
// (wit/service.wit). This module wraps the bindings componentize-js generates for that
// world in the same API as the Rust SDK (guest-sdk/), in JavaScript style:
//
//   import { serve, Response, kv } from './nanogrid.js';
//
//   serve((req) => {
//     const n = kv.increment(`visits:${req.route()}`);
//     return Response.json(200, { visits: n });
//   });
//
// - `serve(fn)`: register the handler; `fn(req)` returns a `Response` (or a Promise of
//   one). A thrown `ServiceError` becomes the JSON error response
//   `{"error":{"code":…,"message":…}}` with the matching status (not-found → 404,
//   invalid → 400, denied → 403, unavailable → 503, timeout → 504, internal → 500).
// - `Request` / `Response`: HTTP-shaped values with text and JSON helpers.
// - `kv`: state in the service's own namespace; `invoke`: call other services;
//   `barrier`: fan out, finish, and be resumed when every answer is in;
//   `log`, `config`, `context`: the rest of the platform.
//
// Build with guest-sdk-js/build.sh (componentize-js 0.23). The module's top level — this
// file's and the app's — runs once at build time (Wizer snapshot), where no platform call
// can be made: call `serve()` there, but kv, invoke, log, config and context only inside
// the handler. Each request runs in a fresh instance, so module-level variables do not
// carry state from one request to the next; keep state in `kv`.

import * as witKv from 'nanogrid:service/kv@0.1.0';
import * as witInvoke from 'nanogrid:service/invoke@0.1.0';
import * as witBarrier from 'nanogrid:service/barrier@0.1.0';
import * as witLog from 'nanogrid:service/log@0.1.0';
import * as witConfig from 'nanogrid:service/config@0.1.0';
import * as witContext from 'nanogrid:service/context@0.1.0';

const encoder = new TextEncoder();
const utf8 = new TextDecoder('utf-8', { fatal: true });
const EMPTY = new Uint8Array(0);

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/** HTTP status of each WIT error case. */
const STATUS = Object.freeze({
  'not-found': 404,
  unavailable: 503,
  timeout: 504,
  denied: 403,
  invalid: 400,
  internal: 500,
});

const TIMEOUT_MESSAGE = 'the call timed out';

/**
 * What a platform call (kv, invoke, …) fails with, and what a handler may throw: the WIT
 * `error` variant as a JavaScript `Error`. `code` is the case name (`not-found`,
 * `unavailable`, `timeout`, `denied`, `invalid`, `internal`), `message` its text.
 *
 * Thrown out of a handler, it becomes the response `{"error":{"code","message"}}` with
 * `status`, exactly like an `Err` in the Rust SDK.
 *
 * @example
 * if (!body.name) throw ServiceError.invalid('name is required');
 */
export class ServiceError extends Error {
  /**
   * @param {'not-found'|'unavailable'|'timeout'|'denied'|'invalid'|'internal'} code
   * @param {string} [message]
   * @param {{cause?: unknown}} [options]
   */
  constructor(code, message, options) {
    if (!Object.hasOwn(STATUS, code)) {
      throw new TypeError(`unknown error code ${JSON.stringify(code)}; one of ${Object.keys(STATUS).join(', ')}`);
    }
    super(code === 'timeout' ? TIMEOUT_MESSAGE : String(message ?? ''), options);
    this.name = 'ServiceError';
    /** The kebab-case WIT case name, as used in JSON error bodies. */
    this.code = code;
  }

  /** The HTTP status an error response for this error carries. */
  get status() {
    return STATUS[this.code];
  }

  /** @param {string} message */
  static notFound(message) {
    return new ServiceError('not-found', message);
  }
  /** @param {string} message */
  static unavailable(message) {
    return new ServiceError('unavailable', message);
  }
  static timeout() {
    return new ServiceError('timeout');
  }
  /** @param {string} message */
  static denied(message) {
    return new ServiceError('denied', message);
  }
  /** @param {string} message */
  static invalid(message) {
    return new ServiceError('invalid', message);
  }
  /** @param {string} message */
  static internal(message) {
    return new ServiceError('internal', message);
  }

  /**
   * The error from its WIT value (`{tag, val}`, as componentize-js represents variants).
   * @param {{tag: string, val?: string}} value
   */
  static fromWit(value) {
    return new ServiceError(value.tag, value.val);
  }

  /** The WIT value of this error. */
  toWit() {
    return this.code === 'timeout' ? { tag: 'timeout' } : { tag: this.code, val: this.message };
  }

  /** `{code, message}`, the inner part of the JSON error body. */
  toJSON() {
    return { code: this.code, message: this.message };
  }
}

/** The WIT error carried by an exception thrown from an import, if it is one. */
function witErrorOf(e) {
  const p = e !== null && typeof e === 'object' ? e.payload : undefined;
  if (p !== null && typeof p === 'object' && typeof p.tag === 'string' && Object.hasOwn(STATUS, p.tag)) return p;
  return undefined;
}

/**
 * Run an import that returns `result<T, error>`: componentize-js throws the `err` case
 * (a ComponentError whose payload is the WIT value); rethrow it as a ServiceError.
 */
function platform(f) {
  try {
    return f();
  } catch (e) {
    const w = witErrorOf(e);
    if (w !== undefined) throw ServiceError.fromWit(w);
    throw e;
  }
}

/** A `list<result<response, error>>` as an array of Response | ServiceError. */
function settled(results) {
  return results.map((r) => (r.tag === 'ok' ? Response.fromWit(r.val) : ServiceError.fromWit(r.val)));
}

// ---------------------------------------------------------------------------------------
// Bytes, text, JSON
// ---------------------------------------------------------------------------------------

/**
 * Bytes for a body or a kv value: strings are UTF-8 encoded; Uint8Array, other typed
 * arrays, DataView and ArrayBuffer are taken as they are; null/undefined is empty.
 * @param {string|Uint8Array|ArrayBuffer|ArrayBufferView|null|undefined} value
 * @returns {Uint8Array}
 */
export function toBytes(value) {
  if (value === undefined || value === null) return EMPTY;
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`expected a string or bytes, got ${describe(value)}`);
}

function describe(value) {
  if (value === null) return 'null';
  if (typeof value === 'object') return value.constructor ? `a ${value.constructor.name}` : 'an object';
  return `a ${typeof value}`;
}

/** UTF-8 text of `bytes`, or a ServiceError of `code` prefixed by `what`. */
function decodeText(bytes, code, what) {
  try {
    return utf8.decode(bytes);
  } catch (e) {
    throw new ServiceError(code, `${what} is not utf-8: ${e.message}`);
  }
}

// BigInt has no JSON form; write it as a JSON number when the engine can (JSON.rawJSON),
// else as a string.
function jsonReplacer(_key, value) {
  if (typeof value !== 'bigint') return value;
  return typeof JSON.rawJSON === 'function' ? JSON.rawJSON(value.toString()) : value.toString();
}

/** JSON text of `value`; a value JSON cannot represent is an `invalid` error. */
function toJson(value) {
  let text;
  try {
    text = JSON.stringify(value, jsonReplacer);
  } catch (e) {
    throw new ServiceError('invalid', `bad json: ${e.message}`);
  }
  if (text === undefined) throw new ServiceError('invalid', `bad json: ${describe(value)} has no JSON form`);
  return text;
}

function parseJson(text, code, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ServiceError(code, `${what}: ${e.message}`);
  }
}

/** Headers as WIT wants them: `[[name, value], …]` from an array of pairs or an object. */
function toHeaders(headers) {
  if (headers === undefined || headers === null) return [];
  const pairs = Array.isArray(headers) ? headers : Object.entries(headers);
  return pairs.map(([name, value]) => [String(name), String(value)]);
}

function findHeader(headers, name) {
  const want = name.toLowerCase();
  const hit = headers.find(([k]) => k.toLowerCase() === want);
  return hit === undefined ? undefined : hit[1];
}

// ---------------------------------------------------------------------------------------
// Request and Response
// ---------------------------------------------------------------------------------------

/**
 * An HTTP-shaped request: the one a handler receives, or one to send with `invoke`.
 * `path` is the part after `/{service}` in the ingress URL, query string included
 * (`/items?limit=3`). Fields are plain and public; the `with…` methods return `this`.
 */
export class Request {
  /**
   * @param {string} method
   * @param {string} path
   * @param {{headers?: Array<[string,string]>|Record<string,string>, body?: string|Uint8Array|ArrayBuffer|ArrayBufferView}} [init]
   */
  constructor(method, path, init = {}) {
    /** @type {string} */
    this.method = String(method);
    /** @type {string} */
    this.path = String(path);
    /** @type {Array<[string, string]>} */
    this.headers = toHeaders(init.headers);
    /** @type {Uint8Array} */
    this.body = toBytes(init.body);
  }

  /** A `GET` request for `path`. */
  static get(path) {
    return new Request('GET', path);
  }

  /** A `POST` request for `path` with a raw or text body. */
  static post(path, body) {
    return new Request('POST', path, { body });
  }

  /** A `POST` request for `path` with a JSON body (and `content-type: application/json`). */
  static postJson(path, value) {
    return new Request('POST', path, {
      headers: [['content-type', 'application/json']],
      body: toJson(value),
    });
  }

  /** @internal The Request for a WIT `request` record. */
  static fromWit(r) {
    const req = Object.create(Request.prototype);
    req.method = r.method;
    req.path = r.path;
    req.headers = r.headers;
    req.body = r.body ?? EMPTY;
    return req;
  }

  /** @internal The WIT `request` record of this request. */
  toWit() {
    return { method: this.method, path: this.path, headers: toHeaders(this.headers), body: toBytes(this.body) };
  }

  /** Add a header (builder style). */
  withHeader(name, value) {
    this.headers.push([String(name), String(value)]);
    return this;
  }

  /**
   * Route the call to the node holding `key`'s data in the callee's kv namespace (the
   * `x-nanogrid-key` header): processing runs next to its data.
   */
  withRoutingKey(key) {
    return this.withHeader('x-nanogrid-key', key);
  }

  /** Replace the body (builder style); strings are UTF-8 encoded. */
  withBody(body) {
    this.body = toBytes(body);
    return this;
  }

  /** The path without its query string: `/items` for `/items?limit=3`. */
  route() {
    const q = this.path.indexOf('?');
    return q < 0 ? this.path : this.path.slice(0, q);
  }

  /** The raw query string, if any: `limit=3` for `/items?limit=3`. */
  query() {
    const q = this.path.indexOf('?');
    return q < 0 ? undefined : this.path.slice(q + 1);
  }

  /**
   * The first value of a query parameter, as written (no percent-decoding, like the Rust
   * SDK); `''` for a bare `?flag`; `undefined` when absent. For decoded values use
   * `searchParams()`.
   * @returns {string|undefined}
   */
  queryParam(name) {
    const query = this.query();
    if (query === undefined) return undefined;
    for (const pair of query.split('&')) {
      const eq = pair.indexOf('=');
      const [k, v] = eq < 0 ? [pair, ''] : [pair.slice(0, eq), pair.slice(eq + 1)];
      if (k === name) return v;
    }
    return undefined;
  }

  /** The query as a (decoding) URLSearchParams. */
  searchParams() {
    return new URLSearchParams(this.query() ?? '');
  }

  /** The first header with this name, compared case-insensitively. */
  header(name) {
    return findHeader(this.headers, name);
  }

  /** The body as UTF-8 text; an `invalid` error (→ 400) when it is not UTF-8. */
  text() {
    return decodeText(this.body, 'invalid', 'body');
  }

  /** The body parsed as JSON; an `invalid` error (→ 400) when it is not JSON. */
  json() {
    return parseJson(this.text(), 'invalid', 'bad json');
  }
}

/**
 * An HTTP-shaped response: what a handler returns, and what `invoke` gets back.
 */
export class Response {
  /**
   * @param {number} [status=200]
   * @param {string|Uint8Array|ArrayBuffer|ArrayBufferView} [body]
   * @param {Array<[string,string]>|Record<string,string>} [headers]
   */
  constructor(status = 200, body = undefined, headers = undefined) {
    /** @type {number} */
    this.status = status;
    /** @type {Array<[string, string]>} */
    this.headers = toHeaders(headers);
    /** @type {Uint8Array} */
    this.body = toBytes(body);
  }

  /** A `text/plain` response. */
  static text(status, text) {
    return new Response(status, String(text), [['content-type', 'text/plain; charset=utf-8']]);
  }

  /** An `application/json` response; BigInts are written as JSON numbers. */
  static json(status, value) {
    return new Response(status, toJson(value), [['content-type', 'application/json']]);
  }

  /**
   * The JSON error response for `err`, in the platform's `{"error":{code,message}}`
   * shape. Anything that is not a ServiceError is answered as `internal` (500).
   */
  static fromError(err) {
    const e = err instanceof ServiceError ? err : new ServiceError('internal', errorText(err));
    return Response.json(e.status, { error: { code: e.code, message: e.message } });
  }

  /** @internal The Response for a WIT `response` record. */
  static fromWit(r) {
    const resp = Object.create(Response.prototype);
    resp.status = r.status;
    resp.headers = r.headers;
    resp.body = r.body ?? EMPTY;
    return resp;
  }

  /** @internal The WIT `response` record of this response. */
  toWit() {
    const status = this.status;
    if (!Number.isInteger(status) || status < 0 || status > 65535) {
      throw new ServiceError('internal', `response status ${String(status)} is not a u16`);
    }
    return { status, headers: toHeaders(this.headers), body: toBytes(this.body) };
  }

  /** Add a header (builder style). */
  withHeader(name, value) {
    this.headers.push([String(name), String(value)]);
    return this;
  }

  /** The first header with this name, compared case-insensitively. */
  header(name) {
    return findHeader(this.headers, name);
  }

  /** The body as UTF-8 text; an `invalid` error when it is not UTF-8. */
  text() {
    return decodeText(this.body, 'invalid', 'body');
  }

  /** The body parsed as JSON; an `invalid` error when it is not JSON. */
  json() {
    return parseJson(this.text(), 'invalid', 'bad json');
  }

  /** Whether the status is 2xx. */
  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  /** Whether the status is 2xx (the Rust SDK's name for `ok`). */
  isSuccess() {
    return this.ok;
  }
}

function errorText(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  try {
    return `uncaught ${typeof err === 'string' ? err : JSON.stringify(err)}`;
  } catch {
    return `uncaught ${String(err)}`;
  }
}

// ---------------------------------------------------------------------------------------
// kv
// ---------------------------------------------------------------------------------------

/**
 * How many replicas must agree on a kv read or write. On a single node every level means
 * the same. The kv functions default to `QUORUM`, which a counter or any
 * read-modify-write needs on a cluster.
 * @enum {string}
 */
export const Consistency = Object.freeze({ ONE: 'one', QUORUM: 'quorum', ALL: 'all' });

const LEVELS = new Set(Object.values(Consistency));

function level(consistency) {
  if (!LEVELS.has(consistency)) {
    throw new TypeError(`consistency must be one of one, quorum, all; got ${String(consistency)}`);
  }
  return consistency;
}

function key(k) {
  if (typeof k !== 'string') throw new TypeError(`a kv key is a string, got ${describe(k)}`);
  return k;
}

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const INTEGER = /^[+-]?[0-9]+$/;

/**
 * Key-value state in the calling service's own namespace. Values are bytes; strings are
 * stored UTF-8 encoded. Every read and write takes an optional consistency
 * (`'one' | 'quorum' | 'all'`, default `'quorum'`).
 */
export const kv = Object.freeze({
  /**
   * Read a key; `undefined` when it is absent.
   * @param {string} k
   * @param {'one'|'quorum'|'all'} [consistency='quorum']
   * @returns {Uint8Array|undefined}
   */
  get(k, consistency = Consistency.QUORUM) {
    return platform(() => witKv.get(key(k), level(consistency)));
  },

  /**
   * Read a key as UTF-8 text; `undefined` when absent; `internal` when not UTF-8.
   * @returns {string|undefined}
   */
  getText(k, consistency = Consistency.QUORUM) {
    const bytes = kv.get(k, consistency);
    return bytes === undefined ? undefined : decodeText(bytes, 'internal', `value of key ${JSON.stringify(k)}`);
  },

  /**
   * Read a JSON value; `undefined` when absent; `internal` when not JSON.
   * @returns {any}
   */
  getJson(k, consistency = Consistency.QUORUM) {
    const text = kv.getText(k, consistency);
    return text === undefined
      ? undefined
      : parseJson(text, 'internal', `value of key ${JSON.stringify(k)} is not the expected json`);
  },

  /**
   * Write a key.
   * @param {string} k
   * @param {string|Uint8Array|ArrayBuffer|ArrayBufferView} value
   * @param {'one'|'quorum'|'all'} [consistency='quorum']
   */
  set(k, value, consistency = Consistency.QUORUM) {
    const bytes = toBytes(value);
    platform(() => witKv.set(key(k), bytes, level(consistency)));
  },

  /** Write a value as JSON. */
  setJson(k, value, consistency = Consistency.QUORUM) {
    kv.set(k, toJson(value), consistency);
  },

  /** Delete a key (deleting an absent key is not an error). */
  delete(k, consistency = Consistency.QUORUM) {
    platform(() => witKv.delete(key(k), level(consistency)));
  },

  /**
   * Atomically replace the value only if it is still `expected` (`undefined`/`null`: the
   * key must be absent). Returns whether the swap happened.
   * @param {string} k
   * @param {string|Uint8Array|null|undefined} expected
   * @param {string|Uint8Array} next
   * @returns {boolean}
   */
  compareAndSwap(k, expected, next) {
    const want = expected === undefined || expected === null ? undefined : toBytes(expected);
    const bytes = toBytes(next);
    return platform(() => witKv.compareAndSwap(key(k), want, bytes));
  },

  /**
   * Up to `limit` keys that start with `prefix`, in byte order, strictly after `after`.
   * The node caps `limit` (its max_list_keys); page with `after` or use `keys()`.
   * @param {string} [prefix='']
   * @param {{after?: string, limit?: number}} [options]
   * @returns {string[]}
   */
  listKeys(prefix = '', { after, limit = 1000 } = {}) {
    if (!Number.isInteger(limit) || limit < 0 || limit > 0xffffffff) {
      throw new TypeError(`limit must be a u32, got ${String(limit)}`);
    }
    return platform(() => witKv.listKeys(key(prefix), after === undefined ? undefined : key(after), limit));
  },

  /**
   * Every key that starts with `prefix`, in byte order, fetched page by page.
   * @param {string} [prefix='']
   * @param {{pageSize?: number}} [options]
   * @returns {Generator<string>}
   */
  *keys(prefix = '', { pageSize = 1000 } = {}) {
    let after;
    for (;;) {
      const page = kv.listKeys(prefix, { after, limit: pageSize });
      yield* page;
      if (page.length === 0) return;
      after = page[page.length - 1];
    }
  },

  /**
   * Atomically add `delta` to the integer stored (as decimal text, like the Rust SDK's
   * `kv::increment`) at `k`, starting from 0, and return the new value. Retries with
   * compare-and-swap on contention. `invalid` when the key holds something else or the
   * result leaves the i64 range. With a number `delta` the result is a number and must
   * stay a safe integer (±2^53−1); pass a BigInt delta for the full i64 range.
   * @param {string} k
   * @param {number|bigint} [delta=1]
   * @returns {number|bigint} the new value (a BigInt when `delta` is one)
   */
  increment(k, delta = 1) {
    const big = typeof delta === 'bigint';
    if (!big && !Number.isSafeInteger(delta)) throw new TypeError(`delta must be an integer, got ${String(delta)}`);
    const d = BigInt(delta);
    const name = JSON.stringify(k);
    for (;;) {
      const current = kv.get(k);
      let value = 0n;
      if (current !== undefined) {
        let text;
        try {
          text = utf8.decode(current);
        } catch {
          text = '';
        }
        if (!INTEGER.test(text)) throw ServiceError.invalid(`key ${name} does not hold an integer`);
        value = BigInt(text);
        if (value < I64_MIN || value > I64_MAX) throw ServiceError.invalid(`key ${name} does not hold an integer`);
      }
      const next = value + d;
      if (next < I64_MIN || next > I64_MAX) throw ServiceError.invalid(`counter ${name} would overflow`);
      if (!big && (next > BigInt(Number.MAX_SAFE_INTEGER) || next < BigInt(Number.MIN_SAFE_INTEGER))) {
        throw ServiceError.invalid(`counter ${name} would leave the safe integer range; use a BigInt delta`);
      }
      if (kv.compareAndSwap(k, current, next.toString())) return big ? next : Number(next);
    }
  },
});

// ---------------------------------------------------------------------------------------
// invoke and barrier
// ---------------------------------------------------------------------------------------

function toWitRequest(req) {
  if (req instanceof Request) return req.toWit();
  if (req !== null && typeof req === 'object' && typeof req.method === 'string' && typeof req.path === 'string') {
    return Request.prototype.toWit.call({ headers: [], body: EMPTY, ...req });
  }
  throw new TypeError(`expected a Request, got ${describe(req)}`);
}

function toWitCalls(calls) {
  if (!Array.isArray(calls)) throw new TypeError('calls must be an array of [service, request] pairs');
  return calls.map((c) => {
    if (!Array.isArray(c) || c.length !== 2 || typeof c[0] !== 'string') {
      throw new TypeError('each call must be a [service, request] pair');
    }
    return [c[0], toWitRequest(c[1])];
  });
}

/**
 * Call other services by name, wherever they run. The request id and trace travel along.
 * An error status from the callee is a normal Response; a thrown ServiceError means the
 * call itself failed (unknown service → not-found, overload → unavailable, …).
 */
export const invoke = Object.freeze({
  /**
   * Send `req` to `service` and wait for its response.
   * @param {string} service
   * @param {Request} req
   * @returns {Response}
   */
  call(service, req) {
    const r = toWitRequest(req);
    return Response.fromWit(platform(() => witInvoke.call(String(service), r)));
  },

  /** `GET path` on `service`. */
  get(service, path) {
    return invoke.call(service, Request.get(path));
  },

  /** `POST path` on `service` with a JSON body. */
  postJson(service, path, value) {
    return invoke.call(service, Request.postJson(path, value));
  },

  /**
   * Run several calls concurrently; the results come back in the order of `calls`, each
   * a Response or, when that call failed, a ServiceError (test with `instanceof`).
   * @param {Array<[string, Request]>} calls
   * @returns {Array<Response|ServiceError>}
   */
  callAll(calls) {
    return settled(witInvoke.callAll(toWitCalls(calls)));
  },
});

/**
 * Fan out and finish: a durable barrier in the grid collects the answers and resumes this
 * service when all are in.
 *
 * @example
 * serve((req) => {
 *   const id = barrier.id(req);
 *   if (id !== undefined) {                      // the continuation
 *     const answers = barrier.results(id);
 *     const ok = answers.filter((a) => a instanceof Response && a.ok).length;
 *     return Response.text(200, `${ok} of ${answers.length} answered`);
 *   }
 *   const calls = [['a', Request.get('/')], ['b', Request.get('/')]];
 *   return Response.text(202, barrier.fanOut(calls, Request.post('/resume', 'my state')));
 * });
 */
export const barrier = Object.freeze({
  /** The header a continuation arrives with; its value is the barrier id. */
  HEADER: 'x-nanogrid-barrier',

  /**
   * Start `calls` concurrently and return the barrier's id at once; the current request
   * can finish. When every call has answered, `then` is sent to this service with the
   * header `x-nanogrid-barrier: <id>`; put what the continuation needs in its body. The
   * barrier lives in the grid: calls that had not answered when its node stopped are sent
   * again and `then` still runs (at least once).
   * @param {Array<[string, Request]>} calls
   * @param {Request} then
   * @returns {string} the barrier id
   */
  fanOut(calls, then) {
    const c = toWitCalls(calls);
    const t = toWitRequest(then);
    return platform(() => witBarrier.fanOut(c, t));
  },

  /**
   * The barrier that resumed this request, if it is a continuation.
   * @param {Request} req
   * @returns {string|undefined}
   */
  id(req) {
    return req.header(barrier.HEADER);
  },

  /**
   * The answers of one of this service's barriers, in the order of its calls: each a
   * Response or a ServiceError (`unavailable` for a call that has not answered yet).
   * @param {string} id
   * @returns {Array<Response|ServiceError>}
   */
  results(id) {
    return settled(platform(() => witBarrier.results(String(id))));
  },
});

// ---------------------------------------------------------------------------------------
// log, config, context
// ---------------------------------------------------------------------------------------

const LOG_LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error']);

function format(parts) {
  return parts
    .map((p) => {
      if (typeof p === 'string') return p;
      if (p instanceof Error) return p.stack ? `${p.name}: ${p.message}\n${p.stack}` : `${p.name}: ${p.message}`;
      try {
        const s = JSON.stringify(p, jsonReplacer);
        return s === undefined ? String(p) : s;
      } catch {
        return String(p);
      }
    })
    .join(' ');
}

/**
 * Lines in the node's log, tagged with the service name and request id. Several
 * arguments are joined with spaces; non-strings are written as JSON.
 */
export const log = Object.freeze({
  /**
   * @param {'trace'|'debug'|'info'|'warn'|'error'} lvl
   * @param {...unknown} parts
   */
  log(lvl, ...parts) {
    if (!LOG_LEVELS.has(lvl)) throw new TypeError(`log level must be one of ${[...LOG_LEVELS].join(', ')}`);
    witLog.log(lvl, format(parts));
  },
  trace: (...parts) => witLog.log('trace', format(parts)),
  debug: (...parts) => witLog.log('debug', format(parts)),
  info: (...parts) => witLog.log('info', format(parts)),
  warn: (...parts) => witLog.log('warn', format(parts)),
  error: (...parts) => witLog.log('error', format(parts)),
});

/** The service's configuration: the `config` map of its deployment spec. */
export const config = Object.freeze({
  /**
   * One value; `fallback` (default `undefined`) when it is not set.
   * @param {string} k
   * @param {string} [fallback]
   * @returns {string|undefined}
   */
  get(k, fallback = undefined) {
    return witConfig.get(String(k)) ?? fallback;
  },

  /**
   * Every configured key and value.
   * @returns {Record<string, string>}
   */
  all() {
    return Object.fromEntries(witConfig.getAll());
  },
});

/** Facts about the current call. */
export const context = Object.freeze({
  /** The correlation id of the request being handled; `invoke` calls carry it along. */
  requestId: () => witContext.requestId(),
  /** The name this service is deployed under (in a fused chain: the entry service's). */
  serviceName: () => witContext.serviceName(),
  /**
   * The W3C trace id of the request being handled (32 lower-case hex digits), carried
   * through invoke, callAll, barriers and forwarding; `nanogrid trace ID` shows it.
   */
  traceId: () => witContext.traceId(),
});

// ---------------------------------------------------------------------------------------
// The handler export
// ---------------------------------------------------------------------------------------

/** @type {((req: Request) => Response | Promise<Response>) | null} */
let service = null;

/**
 * Register the service's handler. Call it once, at the top level of the app module.
 * `fn(req)` returns a Response (or a Promise of one, so an `async` function works).
 * A thrown ServiceError becomes its JSON error response; any other exception is logged
 * at `error` level with its stack and answered as `internal` (500).
 * @param {(req: Request) => Response | Promise<Response>} fn
 */
export function serve(fn) {
  if (typeof fn !== 'function') throw new TypeError('serve() takes the handler function');
  if (service !== null) throw new Error('serve() was already called: a service has one handler');
  service = fn;
}

function answer(out) {
  if (!(out instanceof Response)) {
    return failed(new ServiceError('internal', `the handler returned ${describe(out)}, not a Response`));
  }
  try {
    return out.toWit();
  } catch (e) {
    return failed(e);
  }
}

function failed(e) {
  if (!(e instanceof ServiceError)) {
    const w = witErrorOf(e);
    if (w !== undefined) {
      e = ServiceError.fromWit(w);
    } else {
      try {
        witLog.log('error', `uncaught exception: ${format([e])}`);
      } catch {
        // logging must not hide the error
      }
    }
  }
  return Response.fromError(e).toWit();
}

/**
 * `nanogrid:service/handler.handle`. componentize-js resolves a returned Promise before
 * answering, so async handlers work.
 */
function handle(witRequest) {
  if (service === null) {
    return failed(new ServiceError('internal', 'no handler: the app must call serve(fn) at its top level'));
  }
  let out;
  try {
    out = service(Request.fromWit(witRequest));
  } catch (e) {
    return failed(e);
  }
  if (out !== null && typeof out === 'object' && typeof out.then === 'function') {
    return Promise.resolve(out).then(answer, failed);
  }
  return answer(out);
}

/**
 * The `handler` export of the nanoservice world. build.sh re-exports it from the app's
 * entry module; an app built with componentize-js directly writes
 * `export { handler } from './nanogrid.js';`.
 */
export const handler = Object.freeze({ handle });
