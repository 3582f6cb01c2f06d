"""`{{name}}`: a nanoservice. `GET /{{name}}/anything?name=Ada` greets Ada.

Build with `nanogrid build`, try it with `nanogrid dev` (see README.md).
"""

from nanogrid import Request, Response, Service, config, export, log

from logic import greet


class App(Service):
    def handle(self, req: Request) -> Response:
        name = req.query_param("name", "world")
        log.info(f"greeting {name}")
        return Response.text(200, greet(config.get("greeting", "hello"), name, req.path))


# componentize-py exports the class bound to `Handler`.
Handler = export(App)
