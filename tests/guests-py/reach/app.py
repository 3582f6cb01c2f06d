"""Test fixture: the `reach` guest in Python, an unmodified `wasi:http/proxy` component.

Built by `tests/guests-build.sh` with componentize-py against
`wasi:http/proxy@0.2.12` (tests/guests-wit). It tries to reach outside its sandbox and
reports what happened: 200 with what it got, or 403 with the error text.

- `GET /ok` -> 200 `ok`
- `GET /raise` -> an uncaught exception three calls deep (the guest traps; its traceback
  is what the node reports)
- `GET /read/<path>` -> reads the file `/<path>` (Python `open()`, i.e. wasi:filesystem)
- `GET /connect/<ip:port>` -> opens a TCP connection (Python `socket`, i.e. wasi:sockets)
- `GET /fetch/<host:port>/<path>` -> `GET http://<host:port>/<path>` through
  wasi:http/outgoing-handler; a refusal shows the WASI error code
  (e.g. `HttpRequestDenied()`)

Routes match on what follows the first `/read/`, `/connect/`, `/fetch/` or `/ok` in the
path, so they work whether or not the host strips a `/{service}` prefix.
"""

import errno
import socket
from typing import Optional, Tuple
from urllib.parse import unquote

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler, streams
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
)

MARKERS = ("/read/", "/connect/", "/fetch/", "/ok")
CHUNK = 4096  # blocking-write-and-flush takes at most 4096 bytes per call


def route(path: str) -> Tuple[Optional[str], str]:
    """The earliest marker in `path` and what follows it (`/ok` must end the path)."""
    best: Optional[Tuple[int, str]] = None
    for marker in MARKERS:
        at = path.find(marker)
        while marker == "/ok" and at >= 0 and path[at + 3 :] not in ("", "/"):
            at = path.find(marker, at + 1)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, marker)
    if best is None:
        return None, path
    at, marker = best
    return marker.strip("/"), path[at + len(marker) :]


def os_error(e: OSError) -> str:
    name = errno.errorcode.get(e.errno) if isinstance(e.errno, int) else None
    return f"{name}: {e}" if name else f"{type(e).__name__}: {e}"


def wasi_error(e: BaseException) -> str:
    """`Err(ErrorCode_HttpRequestDenied())` -> `HttpRequestDenied()`."""
    value = e.value if isinstance(e, Err) else e
    return repr(value).removeprefix("ErrorCode_")


def read(arg: str) -> Tuple[int, bytes]:
    try:
        with open("/" + arg, "rb") as f:
            return 200, f.read()
    except OSError as e:
        return 403, f"read: {os_error(e)}".encode()


def connect(arg: str) -> Tuple[int, bytes]:
    host, _, port = arg.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.connect((host, int(port)))
        return 200, b"connected"
    except (OSError, ValueError) as e:
        text = os_error(e) if isinstance(e, OSError) else f"ValueError: {e}"
        return 403, f"connect: {text}".encode()


def read_body(body) -> bytes:
    out = bytearray()
    with body.stream() as stream:
        while True:
            try:
                out += stream.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise
    return bytes(out)


def fetch(arg: str, query: str) -> Tuple[int, bytes]:
    authority, _, rest = arg.partition("/")
    try:
        req = OutgoingRequest(Fields())
        req.set_scheme(Scheme_Http())
        req.set_authority(authority)
        req.set_path_with_query("/" + rest + (("?" + query) if query else ""))
        future = outgoing_handler.handle(req, None)
        with future:
            while True:
                got = future.get()
                if got is not None:
                    break
                with future.subscribe() as pollable:
                    pollable.block()
        if isinstance(got, Err):
            return 403, b"fetch: response already taken"
        inner = got.value
        if isinstance(inner, Err):
            return 403, f"fetch: {wasi_error(inner)}".encode()
        with inner.value as resp:
            status = resp.status()
            data = read_body(resp.consume())
        return (200 if 200 <= status < 300 else 502), data
    except Err as e:
        return 403, f"fetch: {wasi_error(e)}".encode()


def respond(response_out: ResponseOutparam, status: int, body: bytes) -> None:
    resp = OutgoingResponse(Fields.from_list([("content-type", b"text/plain; charset=utf-8")]))
    resp.set_status_code(status)
    out = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with out.write() as stream:
        for i in range(0, len(body), CHUNK):
            stream.blocking_write_and_flush(body[i : i + CHUNK])
    OutgoingBody.finish(out, None)


def explode(depth: int) -> None:
    if depth == 0:
        raise ValueError("reach was asked to raise")
    explode(depth - 1)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path, _, query = (request.path_with_query() or "/").partition("?")
        if path.endswith("/raise"):
            explode(3)
        op, arg = route(unquote(path))
        try:
            if op == "ok":
                status, body = 200, b"ok"
            elif op == "read":
                status, body = read(arg)
            elif op == "connect":
                status, body = connect(arg)
            elif op == "fetch":
                status, body = fetch(arg, query)
            else:
                status, body = 404, f"no route {path}".encode()
        except Exception as e:  # a bug here should still answer, not trap
            status, body = 500, f"{type(e).__name__}: {e}".encode()
        respond(response_out, status, body)
