"""Requests and responses: the generated WIT records plus helpers.

`Request` and `Response` subclass the records the bindings generate, so they can be
passed straight to `invoke.call` and returned from a handler. Bodies are `bytes`
(a `str` given as a body is encoded as UTF-8); headers are a list of ``(name, value)``
pairs.

JSON is written compactly (``{"key":"x","value":1}``) and as UTF-8, as the Rust SDK
writes it.
"""

import json as _json
from typing import Any, Iterable, Optional, Tuple, Union

from wit_world.imports import types as _wit

from .errors import Error, Invalid, Unavailable

__all__ = ["Request", "Response", "Body"]

#: What a body may be given as: raw bytes, or text (encoded as UTF-8).
Body = Union[bytes, bytearray, memoryview, str]


def _bytes(body: Optional[Body]) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"a body must be bytes or str, not {type(body).__name__}")


def _dumps(value: Any) -> bytes:
    return _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _find_header(headers: Iterable[Tuple[str, str]], name: str) -> Optional[str]:
    lower = name.lower()
    for k, v in headers:
        if k.lower() == lower:
            return v
    return None


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"body is not utf-8: {e}") from None


def _json_of(body: bytes) -> Any:
    try:
        return _json.loads(body)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Invalid(f"bad json: {e}") from None


class Request(_wit.Request):
    """An HTTP-shaped request: `method`, `path` (query string included), `headers`, `body`.

    A handler receives one; build others for `invoke.call`::

        Request.get("/items?limit=3")
        Request.post_json("/", {"text": "hello"})
        Request("PUT", "/items/7", body="seven").with_header("x-trace", "1")
    """

    def __init__(
        self,
        method: str = "GET",
        path: str = "/",
        headers: Optional[Iterable[Tuple[str, str]]] = None,
        body: Optional[Body] = None,
    ) -> None:
        super().__init__(method, path, [(str(k), str(v)) for k, v in headers or ()], _bytes(body))

    @classmethod
    def _from_wit(cls, req: Any) -> "Request":
        if isinstance(req, cls):
            return req
        return cls(req.method, req.path, req.headers, req.body)

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def get(cls, path: str) -> "Request":
        """A ``GET`` request for `path`."""
        return cls("GET", path)

    @classmethod
    def post(cls, path: str, body: Optional[Body] = None) -> "Request":
        """A ``POST`` request for `path` with a raw body."""
        return cls("POST", path, body=body)

    @classmethod
    def post_json(cls, path: str, value: Any) -> "Request":
        """A ``POST`` request for `path` with `value` as its JSON body."""
        return cls("POST", path, [("content-type", "application/json")], _dumps(value))

    # -- builders (they change the request and return it) ---------------------------------

    def with_header(self, name: str, value: str) -> "Request":
        """Add a header."""
        self.headers.append((name, value))
        return self

    def with_routing_key(self, key: str) -> "Request":
        """Route the call to the node holding `key`'s data in the callee's kv namespace
        (the ``x-nanogrid-key`` header): processing runs next to its data."""
        return self.with_header("x-nanogrid-key", key)

    def with_body(self, body: Body) -> "Request":
        """Replace the body."""
        self.body = _bytes(body)
        return self

    # -- reading ------------------------------------------------------------------------

    @property
    def route(self) -> str:
        """The path without its query string: ``/items`` for ``/items?limit=3``."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> Optional[str]:
        """The raw query string, if any: ``limit=3`` for ``/items?limit=3``."""
        parts = self.path.split("?", 1)
        return parts[1] if len(parts) == 2 else None

    def query_param(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of a query parameter, or `default` (no percent-decoding, as
        in the Rust SDK; a bare ``?flag`` has the value ``""``)."""
        query = self.query
        if query is None:
            return default
        for pair in query.split("&"):
            k, _, v = pair.partition("=")
            if k == name:
                return v
        return default

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first header with this name, compared case-insensitively, or `default`."""
        found = _find_header(self.headers, name)
        return default if found is None else found

    def text(self) -> str:
        """The body as UTF-8 text; raises `Invalid` if it is not."""
        return _text(self.body)

    def json(self) -> Any:
        """The body parsed as JSON; raises `Invalid` if it is not JSON."""
        return _json_of(self.body)


class Response(_wit.Response):
    """An HTTP-shaped response: `status`, `headers`, `body`.

    Build one with `Response.text`, `Response.json` or the constructor; read one that
    `invoke.call` returned with `ok`, `text_body()`, `json_body()`, `header()`.
    """

    def __init__(
        self,
        status: int = 200,
        body: Optional[Body] = None,
        headers: Optional[Iterable[Tuple[str, str]]] = None,
    ) -> None:
        super().__init__(int(status), [(str(k), str(v)) for k, v in headers or ()], _bytes(body))

    @classmethod
    def _from_wit(cls, resp: Any) -> "Response":
        if isinstance(resp, cls):
            return resp
        return cls(resp.status, resp.body, resp.headers)

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def text(cls, status: int, body: str) -> "Response":
        """A ``text/plain`` response."""
        return cls(status, body, [("content-type", "text/plain; charset=utf-8")])

    @classmethod
    def json(cls, status: int, value: Any) -> "Response":
        """An ``application/json`` response with `value` serialised compactly."""
        return cls(status, _dumps(value), [("content-type", "application/json")])

    @classmethod
    def from_error(cls, err: Error) -> "Response":
        """The JSON error response for `err`, in the platform's
        ``{"error":{"code":…,"message":…}}`` shape, with `err.status`."""
        return cls.json(err.status, {"error": {"code": err.code, "message": err.message}})

    def with_header(self, name: str, value: str) -> "Response":
        """Add a header (returns the response)."""
        self.headers.append((name, value))
        return self

    # -- reading ------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first header with this name, compared case-insensitively, or `default`."""
        found = _find_header(self.headers, name)
        return default if found is None else found

    def text_body(self) -> str:
        """The body as UTF-8 text; raises `Invalid` if it is not."""
        return _text(self.body)

    def json_body(self) -> Any:
        """The body parsed as JSON; raises `Invalid` if it is not JSON."""
        return _json_of(self.body)

    def raise_for_status(self, service: str = "the service") -> "Response":
        """Return the response if it is 2xx, else raise `Unavailable`
        (``"{service} answered {status}: {body}"``)."""
        if not self.ok:
            body = self.body.decode("utf-8", errors="replace")
            raise Unavailable(f"{service} answered {self.status}: {body}")
        return self

