// `{{name}}`: an unmodified `wasi:http/proxy` component in JavaScript, no nanogrid SDK, so
// it runs on any wasi:http host. `GET /{{name}}/anything` says what was asked.
//
// Build with `nanogrid build`, try it with `nanogrid dev` (see README.md). componentize-js
// (StarlingMonkey) serves the `fetch` event as wasi:http/incoming-handler; the module's
// top level runs at build time, so do the work in the handler.

import { answer } from './logic.js';

addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  const text = answer('{{name}}', event.request.method, url.pathname + url.search);
  event.respondWith(new Response(text, { headers: { 'content-type': 'text/plain; charset=utf-8' } }));
});
