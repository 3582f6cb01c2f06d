// `counter`: a per-key counter kept in kv (samples/counter in JavaScript).
//
// - `POST /{key}` (or `POST /{key}?by=N`) increments and returns `{"key":…,"value":…}`
// - `GET /{key}` reads without changing it
// - `DELETE /{key}` resets it
// - `GET /` lists the counters
//
// Increments are compare-and-swap loops (kv.increment), so concurrent requests never lose
// a count. Values are stored as decimal text, like the Rust sample's, and handled as
// BigInt here so the whole i64 range round-trips exactly.

import { serve, kv, Response, ServiceError } from './nanogrid.js';

const INTEGER = /^[+-]?[0-9]+$/;

function read(key) {
  const bytes = kv.get(key);
  if (bytes === undefined) return 0n;
  const text = new TextDecoder().decode(bytes);
  if (!INTEGER.test(text)) throw ServiceError.internal(`counter ${JSON.stringify(key)} holds a non-integer`);
  return BigInt(text);
}

function by(req) {
  const s = req.queryParam('by');
  if (s === undefined) return 1n;
  if (!INTEGER.test(s)) throw ServiceError.invalid(`by=${s} is not an integer`);
  return BigInt(s);
}

serve((req) => {
  const key = req.route().replace(/^\/+|\/+$/g, '');
  if (key === '') {
    if (req.method !== 'GET') throw ServiceError.invalid('name a counter: /counter/{key}');
    return Response.json(200, { counters: kv.listKeys('', { limit: 1000 }) });
  }
  let value;
  switch (req.method) {
    case 'POST':
    case 'PUT':
      value = kv.increment(key, by(req));
      break;
    case 'GET':
      value = read(key);
      break;
    case 'DELETE':
      kv.delete(key);
      value = 0;
      break;
    default:
      throw ServiceError.invalid(`method ${req.method} is not supported; use GET, POST or DELETE`);
  }
  return Response.json(200, { key, value });
});
