// `{{name}}`: a counter per key, kept in kv.
//
// - `POST /{{name}}/{key}` adds one (compare-and-swap: concurrent requests lose no count)
// - `GET /{{name}}/{key}` reads it; `GET /{{name}}/` lists the keys
//
// Build with `nanogrid build`, try it with `nanogrid dev` (see README.md).

import { serve, Response, ServiceError, kv } from './nanogrid.js';
import { keyOf } from './logic.js';

serve((req) => {
  const key = keyOf(req.route());
  if (key === undefined) return Response.json(200, { keys: kv.listKeys('', { limit: 1000 }) });
  let value;
  if (req.method === 'POST') {
    value = kv.increment(key, 1);
  } else if (req.method === 'GET') {
    value = Number(kv.getText(key) ?? '0');
  } else {
    throw ServiceError.invalid(`${req.method} is not supported here; use GET or POST`);
  }
  return Response.json(200, { key, value });
});

export { handler } from './nanogrid.js';
