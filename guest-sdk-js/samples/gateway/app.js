// `gateway`: composes `wordcount` and `counter` through invoke (samples/gateway in
// JavaScript).
//
// `POST /` with text in the body: counts its words with `wordcount` and bumps the
// `gateway-docs` counter with `counter`, both calls running concurrently through
// `invoke.callAll`, and returns both results:
// `{"request_id": …, "trace_id": …, "stats": {…wordcount…}, "documents": N}`.

import { serve, invoke, context, Request, Response, ServiceError } from './nanogrid.js';

function bodyJson(service, result) {
  if (result instanceof ServiceError) throw result;
  if (!result.ok) {
    const text = new TextDecoder().decode(result.body);
    throw ServiceError.unavailable(`${service} answered ${result.status}: ${text}`);
  }
  return result.json();
}

serve((req) => {
  const text = req.text();
  const [counted, bumped] = invoke.callAll([
    ['wordcount', Request.postJson('/', { text })],
    ['counter', new Request('POST', '/gateway-docs')],
  ]);
  const stats = bodyJson('wordcount', counted);
  const docs = bodyJson('counter', bumped);
  return Response.json(200, {
    request_id: context.requestId(),
    trace_id: context.traceId(),
    stats,
    documents: docs.value,
  });
});
