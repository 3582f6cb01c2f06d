"""Write nanogrid nanoservices in a few lines of Python.

A nanoservice is a WebAssembly component of the ``nanogrid:service/nanoservice`` world
(``wit/service.wit``). This package wraps the bindings componentize-py generates for that
world (its ``wit_world`` module) in a small API, the Python twin of the Rust
``nanogrid-sdk``:

- `Service`: subclass it, implement ``handle(self, req)``, and export it with
  ``Handler = export(MyService)`` (componentize-py looks for a class named ``Handler``
  in the app module).
- `Request` / `Response`: HTTP-shaped values with text and JSON helpers.
- `kv`: state in the service's own namespace (consistency levels, compare-and-swap,
  `kv.increment`); `invoke`: call other services; `barrier`: fan out, finish, and be
  resumed when every answer is in; `log`, `config`, `context`: the rest of the platform.
- `Error` and its subclasses `NotFound`, `Unavailable`, `Timeout`, `Denied`, `Invalid`,
  `Internal`: what platform calls raise. One that escapes ``handle`` becomes a JSON
  error response ``{"error":{"code":…,"message":…}}`` with the matching status
  (``not-found`` → 404, ``invalid`` → 400, ``unavailable`` → 503, …).

Example (``samples/counter`` in short)::

    from nanogrid import Request, Response, Service, export, kv, log

    class Visits(Service):
        def handle(self, req: Request) -> Response:
            key = "visits:" + req.route
            n = kv.increment(key)
            log.info(f"{key} is now {n}")
            return Response.json(200, {"key": key, "visits": n})

    Handler = export(Visits)

Build it with ``guest-sdk-py/build.sh DIR visits.wasm`` and deploy the component with
``nanogrid deploy visits.wasm --name visits``.

Each request runs in a fresh instance, so module globals do not carry state from one
request to the next (they are reset to what they were when the component was built);
keep state in `kv`.
"""

import traceback as _traceback
from typing import Any, Callable, Type, Union

from wit_world import exports as _exports

from . import barrier, config, context, invoke, kv, log
from .errors import Denied, Error, Internal, Invalid, NotFound, Timeout, Unavailable
from .message import Request, Response

__version__ = "0.1.0"

__all__ = [
    "Service", "export", "Request", "Response",
    "Error", "NotFound", "Unavailable", "Timeout", "Denied", "Invalid", "Internal",
    "kv", "invoke", "barrier", "log", "config", "context",
]


class Service:
    """A nanoservice: one method from request to response.

    Subclass it and implement `handle`; export the subclass with `export`. A new instance
    is made for every request (and every request runs in a fresh component instance).

    `handle` may return a `Response`, or for short: a ``dict`` or ``list`` (200 JSON), a
    ``str`` (200 text) or ``bytes`` (200, raw body).
    """

    #: Turn an exception that is not a `nanogrid.Error` into a 500 ``internal`` JSON
    #: response (logged at error level with its traceback, on one line). Set to ``False`` to let it trap
    #: the instance instead, as a panic does in a Rust service.
    catch_exceptions: bool = True

    def handle(self, req: Request) -> Any:
        """Handle one request. A raised `Error` becomes its JSON error response."""
        raise NotImplementedError("a Service must implement handle(self, req)")


def _coerce(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, (dict, list)):
        return Response.json(200, result)
    if isinstance(result, str):
        return Response.text(200, result)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(200, result)
    if result is not None and hasattr(result, "status") and hasattr(result, "body"):
        return Response._from_wit(result)  # a generated `types.Response`
    raise TypeError(f"handle returned {type(result).__name__}; return a nanogrid.Response")


def _dispatch(handle: Callable[[Request], Any], catch: bool, wit_req: Any) -> Response:
    req = Request._from_wit(wit_req)
    try:
        return _coerce(handle(req))
    except Error as err:
        return Response.from_error(err)
    except Exception as exc:
        if not catch:
            raise
        message = f"unhandled {type(exc).__name__}: {exc}"
        try:
            log.error(f"{message} (at {_where(exc)})")
        except Exception:
            pass
        return Response.from_error(Internal(message))


_SDK_DIR = __file__.rsplit("/", 1)[0] + "/"


def _where(exc: BaseException) -> str:
    """The traceback of `exc` on one line, innermost frame first, without the SDK's."""
    frames = []
    for f in reversed(_traceback.extract_tb(exc.__traceback__)):
        name = f.filename
        if name.startswith(_SDK_DIR):
            continue
        # componentize-py bundles the app's sources under /0/, /1/, …
        parts = name.split("/", 2)
        if len(parts) == 3 and parts[0] == "" and parts[1].isdigit():
            name = parts[2]
        frames.append(f"{name}:{f.lineno} in {f.name}")
    return " < ".join(frames) or "unknown"


def export(service: Union[Type[Service], Callable[[Request], Any]]) -> type:
    """The exported handler class for `service`: bind it to the name ``Handler`` at the
    top level of the app module, which is where componentize-py looks for it::

        Handler = export(MyService)

    `service` is a `Service` subclass (instantiated per request) or a plain function
    ``handle(req) -> Response``.
    """
    if isinstance(service, type):
        if not issubclass(service, Service):
            raise TypeError(f"export({service.__name__}): a service class must subclass nanogrid.Service")
        cls = service
        catch = bool(getattr(cls, "catch_exceptions", True))

        def handle(req: Request) -> Any:
            return cls().handle(req)

        name = cls.__name__
    elif callable(service):
        handle = service
        catch = True
        name = getattr(service, "__name__", "handler")
    else:
        raise TypeError("export() takes a nanogrid.Service subclass or a function")

    class Handler(_exports.Handler):
        """The ``nanogrid:service/handler`` export, generated by `nanogrid.export`."""

        def handle(self, req: Any) -> Response:
            return _dispatch(handle, catch, req)

    Handler.__qualname__ = f"Handler[{name}]"
    return Handler
