"""`{{name}}`: a counter per key, kept in kv.

- `POST /{{name}}/{key}` adds one (compare-and-swap: concurrent requests lose no count)
- `GET /{{name}}/{key}` reads it; `GET /{{name}}/` lists the keys

Build with `nanogrid build`, try it with `nanogrid dev` (see README.md).
"""

from nanogrid import Invalid, Request, Response, Service, export, kv

from logic import key_of


class App(Service):
    def handle(self, req: Request) -> Response:
        key = key_of(req.route)
        if key is None:
            return Response.json(200, {"keys": kv.list_keys(limit=1000)})
        if req.method == "POST":
            value = kv.increment(key, 1)
        elif req.method == "GET":
            value = kv.get_int(key)
        else:
            raise Invalid(f"{req.method} is not supported here; use GET or POST")
        return Response.json(200, {"key": key, "value": value})


# componentize-py exports the class bound to `Handler`.
Handler = export(App)
