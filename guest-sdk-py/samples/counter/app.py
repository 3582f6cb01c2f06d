"""`counter` in Python: a per-key counter kept in kv (the twin of samples/counter).

- ``POST /{key}`` (or ``POST /{key}?by=N``) increments and returns ``{"key":…,"value":…}``
- ``GET /{key}`` reads without changing it
- ``DELETE /{key}`` resets it
- ``GET /`` lists the counters

Increments are compare-and-swap loops (`kv.increment`), so concurrent requests never
lose a count; values are decimal text, so this service and the Rust one share data.
"""

from nanogrid import Invalid, Request, Response, Service, export, kv


class Counter(Service):
    def handle(self, req: Request) -> Response:
        key = req.route.strip("/")
        if not key:
            if req.method != "GET":
                raise Invalid("name a counter: /counter/{key}")
            return Response.json(200, {"counters": kv.list_keys(limit=1000)})
        if req.method in ("POST", "PUT"):
            by = req.query_param("by", "1")
            try:
                delta = int(by)
            except ValueError:
                raise Invalid(f"by={by} is not an integer") from None
            value = kv.increment(key, delta)
        elif req.method == "GET":
            value = kv.get_int(key)
        elif req.method == "DELETE":
            kv.delete(key)
            value = 0
        else:
            raise Invalid(f"method {req.method} is not supported; use GET, POST or DELETE")
        return Response.json(200, {"key": key, "value": value})


Handler = export(Counter)
