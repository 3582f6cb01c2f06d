// Test fixture: the `reach` guest in JavaScript, an unmodified `wasi:http/proxy`
// component built by tests/guests-build.sh with componentize-js (StarlingMonkey).
// It tries to reach outside its sandbox and reports what happened: 200 with what it
// got, or 403 with the error text.
//
// - GET /ok                        -> 200 `ok`
// - GET /read/<path>               -> reads the file `/<path>` through the
//                                     wasi:filesystem bindings (StarlingMonkey has no
//                                     file API of its own)
// - GET /connect/<ip:port>         -> 501 `no socket API`: StarlingMonkey has no socket
//                                     API, and componentize-js 0.23.0 cannot build a
//                                     world that imports wasi:sockets (see
//                                     tests/guests-wit/reach.wit)
// - GET /fetch/<host:port>/<path>  -> GET http://<host:port>/<path> through the
//                                     wasi:http/outgoing-handler bindings. Not fetch():
//                                     StarlingMonkey's fetch() turns every failure into
//                                     "NetworkError when attempting to fetch resource",
//                                     while the bindings give the WASI error code
//                                     (e.g. `HTTP-request-denied`)
//
// Routes match on what follows the first `/read/`, `/connect/`, `/fetch/` or `/ok` in
// the path, so they work whether or not the host strips a `/{service}` prefix.
//
// Nothing runs at the top level but the listener: componentize-js evaluates it at build
// time (Wizer), where no WASI call may be made.

import { getDirectories } from 'wasi:filesystem/preopens@0.2.10';
import { handle as sendRequest } from 'wasi:http/outgoing-handler@0.2.10';
import { Fields, OutgoingRequest } from 'wasi:http/types@0.2.10';

const MARKERS = ['/read/', '/connect/', '/fetch/', '/ok'];

function route(path) {
  let best = null;
  for (const marker of MARKERS) {
    let at = path.indexOf(marker);
    while (marker === '/ok' && at >= 0 && !['', '/'].includes(path.slice(at + 3))) {
      at = path.indexOf(marker, at + 1);
    }
    if (at >= 0 && (best === null || at < best.at)) best = { at, marker };
  }
  if (best === null) return [null, path];
  return [best.marker.replaceAll('/', ''), path.slice(best.at + best.marker.length)];
}

// componentize-js throws a ComponentError whose payload is the WIT error value: a
// string for enums (`no-entry`), `{ tag, val }` for variants.
function describe(e) {
  const p = e && e.payload;
  if (p === undefined || p === null) return e && e.message ? e.message : String(e);
  if (typeof p === 'string') return p;
  if (typeof p === 'object' && 'tag' in p) {
    return p.val === undefined ? p.tag : `${p.tag}: ${JSON.stringify(p.val, (_, v) => (typeof v === 'bigint' ? v.toString() : v))}`;
  }
  return JSON.stringify(p);
}

function text(status, body) {
  return new Response(body, { status, headers: { 'content-type': 'text/plain; charset=utf-8' } });
}

// The preopened directory with the longest path containing `target`, and the path
// relative to it.
function locate(target) {
  let best = null;
  for (const [dir, at] of getDirectories()) {
    const base = at === '/' ? '' : at.replace(/\/+$/, '');
    if (target !== base && !target.startsWith(base + '/')) continue;
    if (best === null || base.length > best.base.length) best = { dir, base };
  }
  if (best === null) return null;
  const rel = target.slice(best.base.length).replace(/^\/+/, '');
  return { dir: best.dir, rel: rel === '' ? '.' : rel };
}

function read(arg) {
  const target = '/' + arg;
  try {
    const found = locate(target);
    if (found === null) return text(403, `read: not-permitted: no preopened directory contains ${target}`);
    const file = found.dir.openAt({ symlinkFollow: true }, found.rel, {}, { read: true });
    const stream = file.readViaStream(0n);
    const chunks = readAll(stream);
    drop(stream, file);
    return new Response(new Blob(chunks), { status: 200, headers: { 'content-type': 'application/octet-stream' } });
  } catch (e) {
    return text(403, `read: ${describe(e)}`);
  }
}

// Resources are dropped child first (stream, then body, then response): the host
// refuses to drop a parent whose child is still alive.
const dispose = Symbol.dispose || Symbol.for('dispose');
function drop(...resources) {
  for (const r of resources) if (r && typeof r[dispose] === 'function') r[dispose]();
}

function readAll(stream) {
  const chunks = [];
  for (;;) {
    try {
      chunks.push(stream.blockingRead(65536n));
    } catch (e) {
      if (e && e.payload && e.payload.tag === 'closed') return chunks;
      throw e;
    }
  }
}

function fetchRoute(arg, search) {
  const slash = arg.indexOf('/');
  const authority = slash < 0 ? arg : arg.slice(0, slash);
  const rest = slash < 0 ? '' : arg.slice(slash + 1);
  try {
    const req = new OutgoingRequest(new Fields());
    req.setScheme({ tag: 'HTTP' });
    req.setAuthority(authority);
    req.setPathWithQuery(`/${rest}${search}`);
    const future = sendRequest(req, undefined);
    let got;
    while ((got = future.get()) === undefined) {
      const ready = future.subscribe();
      ready.block();
      drop(ready);
    }
    drop(future);
    if (got.tag === 'err') return text(403, 'fetch: response already taken');
    if (got.val.tag === 'err') return text(403, `fetch: ${describe({ payload: got.val.val })}`);
    const resp = got.val.val;
    const status = resp.status();
    const body = resp.consume();
    const stream = body.stream();
    const chunks = readAll(stream);
    drop(stream, body, resp);
    return new Response(new Blob(chunks), {
      status: status >= 200 && status < 300 ? 200 : 502,
      headers: { 'content-type': 'text/plain; charset=utf-8' },
    });
  } catch (e) {
    return text(403, `fetch: ${describe(e)}`);
  }
}

async function handle(request) {
  const url = new URL(request.url);
  let path = url.pathname;
  try {
    path = decodeURIComponent(path);
  } catch (_) {
    // keep the raw path
  }
  const [op, arg] = route(path);
  try {
    switch (op) {
      case 'ok':
        return text(200, 'ok');
      case 'read':
        return read(arg);
      case 'connect':
        return text(501, 'no socket API');
      case 'fetch':
        return fetchRoute(arg, url.search);
      default:
        return text(404, `no route ${path}`);
    }
  } catch (e) {
    return text(500, `${e && e.name ? e.name : 'Error'}: ${describe(e)}`);
  }
}

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
