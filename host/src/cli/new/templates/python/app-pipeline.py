"""`{{name}}`: one stage of a pipeline. It upper-cases the body and, when its config
names a `next` service, passes the result on with invoke and answers what that returned.

Build with `nanogrid build`, try it with `nanogrid dev` (see README.md).
"""

from nanogrid import Request, Response, Service, config, export, invoke

from logic import transform


class App(Service):
    def handle(self, req: Request) -> Response:
        out = transform(req.text())
        nxt = config.get("next")
        if nxt is None:
            return Response.text(200, out)
        return invoke.call(nxt, Request.post("/", out))


# componentize-py exports the class bound to `Handler`.
Handler = export(App)
