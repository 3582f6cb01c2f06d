// `{{name}}`: a nanoservice. `GET /{{name}}/anything?name=Ada` greets Ada.
//
// Build with `nanogrid build`, try it with `nanogrid dev` (see README.md). The module's top
// level runs at build time: make platform calls (config, log, kv, …) only in the handler.

import { serve, Response, config, log } from './nanogrid.js';
import { greet } from './logic.js';

serve((req) => {
  const name = req.queryParam('name') ?? 'world';
  log.info(`greeting ${name}`);
  return Response.text(200, greet(config.get('greeting', 'hello'), name, req.path));
});

export { handler } from './nanogrid.js';
