// `{{name}}`: one stage of a pipeline. It upper-cases the body and, when its config names
// a `next` service, passes the result on with invoke and answers what that returned.
//
// Build with `nanogrid build`, try it with `nanogrid dev` (see README.md).

import { serve, Request, Response, config, invoke } from './nanogrid.js';
import { transform } from './logic.js';

serve((req) => {
  const out = transform(req.text());
  const next = config.get('next');
  if (next === undefined) return Response.text(200, out);
  return invoke.call(next, new Request('POST', '/').withBody(out));
});

export { handler } from './nanogrid.js';
