"""Call other services by name, wherever they run.

On the same node a call runs in-process; the request id and trace id travel with it.
An error *status* from the callee is a normal `Response` (check `resp.ok` or call
`resp.raise_for_status(name)`); an exception means the call itself failed (unknown
service → `NotFound`, overload → `Unavailable`, deadline → `Timeout`, …).

::

    from nanogrid import invoke, Request

    resp = invoke.call("wordcount", Request.post_json("/", {"text": "a b c"}))
    stats = resp.raise_for_status("wordcount").json_body()

    # concurrently; results in the order of the calls, each a Response or an Error
    a, b = invoke.call_all([("a", Request.get("/")), ("b", Request.get("/"))])
"""

from typing import Any, List, Sequence, Tuple, Union

from wit_world.imports import invoke as _wit

from .errors import Error, _checked, _outcome
from .message import Request, Response

__all__ = ["call", "get", "post_json", "call_all", "Outcome"]

#: One result of `call_all` / `barrier.results`: the callee's response, or the `Error`
#: the call failed with (returned, not raised).
Outcome = Union[Response, Error]


def call(service: str, req: Request) -> Response:
    """Send `req` to `service` and wait for its response."""
    return Response._from_wit(_checked(_wit.call, service, req))


def get(service: str, path: str) -> Response:
    """``GET path`` on `service`."""
    return call(service, Request.get(path))


def post_json(service: str, path: str, value: Any) -> Response:
    """``POST path`` on `service` with `value` as its JSON body."""
    return call(service, Request.post_json(path, value))


def call_all(calls: Sequence[Tuple[str, Request]]) -> List[Outcome]:
    """Run several ``(service, request)`` calls concurrently. The results are in the
    order of `calls`; each is a `Response` or the `Error` that call failed with (check
    with ``isinstance(r, nanogrid.Error)``, or ``raise r``)."""
    results = _wit.call_all([(s, r) for s, r in calls])
    return [_outcome(r, Response._from_wit) for r in results]
