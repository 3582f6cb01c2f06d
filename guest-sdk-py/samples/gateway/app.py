"""`gateway` in Python: composes `wordcount` and `counter` through `invoke` (the twin of
samples/gateway).

``POST /`` with text in the body: counts its words with `wordcount` and bumps the
``gateway-docs`` counter with `counter`, both calls running concurrently through
`invoke.call_all`, and returns both results:
``{"request_id": …, "trace_id": …, "stats": {…wordcount…}, "documents": N}``.
"""

from typing import Any

from nanogrid import Error, Request, Response, Service, context, export, invoke


def body_json(service: str, result: Any) -> Any:
    if isinstance(result, Error):
        raise result
    return result.raise_for_status(service).json_body()


class Gateway(Service):
    def handle(self, req: Request) -> Response:
        text = req.text()
        stats, docs = invoke.call_all([
            ("wordcount", Request.post_json("/", {"text": text})),
            ("counter", Request("POST", "/gateway-docs")),
        ])
        return Response.json(200, {
            "request_id": context.request_id(),
            "trace_id": context.trace_id(),
            "stats": body_json("wordcount", stats),
            "documents": body_json("counter", docs)["value"],
        })


Handler = export(Gateway)
