"""Fan out and finish: a durable barrier collects the answers and resumes the service.

::

    from nanogrid import Request, Response, Service, barrier

    class App(Service):
        def handle(self, req):
            bid = barrier.id(req)
            if bid is not None:
                # The continuation: every call has answered. req.body is the state.
                answers = barrier.results(bid)
                ok = sum(1 for a in answers if isinstance(a, Response) and a.ok)
                return Response.text(200, f"{ok} of {len(answers)} answered")
            calls = [("a", Request.get("/")), ("b", Request.get("/"))]
            bid = barrier.fan_out(calls, Request("POST", "/resume", body="my state"))
            return Response.text(202, bid)
"""

from typing import List, Optional, Sequence, Tuple

from wit_world.imports import barrier as _wit

from .errors import _checked, _outcome
from .invoke import Outcome
from .message import Request, Response

__all__ = ["HEADER", "fan_out", "id", "results"]

#: The header a continuation arrives with; its value is the barrier id.
HEADER = "x-nanogrid-barrier"


def fan_out(calls: Sequence[Tuple[str, Request]], then: Request) -> str:
    """Start ``(service, request)`` `calls` concurrently and return the barrier's id at
    once; the current request can finish. When every call has answered, `then` is sent
    to this service with the header `HEADER`; put what the continuation needs in
    `then`'s body. The barrier lives in the grid: if its node stops, calls that had not
    answered are sent again and `then` still runs (at least once)."""
    return _checked(_wit.fan_out, [(s, r) for s, r in calls], then)


def id(req: Request) -> Optional[str]:  # noqa: A001 (barrier.id)
    """The barrier that resumed this request, if it is a continuation."""
    return req.header(HEADER)


def results(barrier_id: str) -> List[Outcome]:
    """The answers of one of this service's barriers, in the order of its calls: each a
    `Response` or an `Error` (a call that has not answered yet is `Unavailable`)."""
    return [_outcome(r, Response._from_wit) for r in _checked(_wit.results, barrier_id)]
