"""The error type of every platform call: exceptions for the WIT `error` variant.

Every platform call (`kv`, `invoke`, `barrier`) raises a subclass of `Error` when it
fails, and a handler may raise one too: an `Error` that escapes `Service.handle` becomes
the JSON error response ``{"error":{"code":…,"message":…}}`` with the matching status,
exactly as the Rust SDK answers an `Err`:

=============  ===============  ======
exception      code             status
=============  ===============  ======
`NotFound`     ``not-found``    404
`Unavailable`  ``unavailable``  503
`Timeout`      ``timeout``      504
`Denied`       ``denied``       403
`Invalid`      ``invalid``      400
`Internal`     ``internal``     500
=============  ===============  ======
"""

from typing import Any, Callable, Optional, TypeVar

from componentize_py_types import Err as _Err
from componentize_py_types import Ok as _Ok
from wit_world.imports import types as _wit

__all__ = ["Error", "NotFound", "Unavailable", "Timeout", "Denied", "Invalid", "Internal"]


class Error(Exception):
    """A platform error (the WIT `types.error` variant) as a Python exception.

    Do not raise `Error` itself; raise one of its subclasses. `code`, `status` and
    `message` say what the JSON error response for it looks like.
    """

    #: The kebab-case code used in JSON error bodies (``not-found``, ``invalid``, …).
    code = "internal"
    #: The HTTP status of the error response for this error.
    status = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def to_wit(self) -> Any:
        """This error as the generated WIT variant value."""
        return _TO_WIT[type(self).code](self.message)

    @staticmethod
    def from_wit(err: Any) -> "Error":
        """The exception for a WIT `error` value (as the generated bindings return it)."""
        if isinstance(err, _wit.Error_NotFound):
            return NotFound(err.value)
        if isinstance(err, _wit.Error_Unavailable):
            return Unavailable(err.value)
        if isinstance(err, _wit.Error_Timeout):
            return Timeout()
        if isinstance(err, _wit.Error_Denied):
            return Denied(err.value)
        if isinstance(err, _wit.Error_Invalid):
            return Invalid(err.value)
        if isinstance(err, _wit.Error_Internal):
            return Internal(err.value)
        return Internal(f"unknown platform error: {err!r}")


class NotFound(Error):
    """The named thing (service, key, route) does not exist. Status 404."""

    code = "not-found"
    status = 404


class Unavailable(Error):
    """The callee exists but cannot serve now (stopped, overloaded, not ready). Status 503."""

    code = "unavailable"
    status = 503


class Timeout(Error):
    """The call did not finish within its deadline. Status 504."""

    code = "timeout"
    status = 504

    def __init__(self, message: Optional[str] = None) -> None:
        # The WIT case has no payload; its message is fixed, as in the Rust SDK.
        super().__init__(message or "the call timed out")


class Denied(Error):
    """The platform refused the operation (limits, permissions). Status 403."""

    code = "denied"
    status = 403


class Invalid(Error):
    """The arguments (or the request) were malformed. Status 400."""

    code = "invalid"
    status = 400


class Internal(Error):
    """A platform fault, or a bug; the message says what failed. Status 500."""

    code = "internal"
    status = 500


_TO_WIT = {
    "not-found": _wit.Error_NotFound,
    "unavailable": _wit.Error_Unavailable,
    "timeout": lambda _message: _wit.Error_Timeout(),
    "denied": _wit.Error_Denied,
    "invalid": _wit.Error_Invalid,
    "internal": _wit.Error_Internal,
}


_T = TypeVar("_T")


def _checked(fn: Callable[..., _T], *args: Any) -> _T:
    """Call a generated import, turning its `Err(error)` into the matching `Error`."""
    try:
        return fn(*args)
    except _Err as e:
        raise Error.from_wit(e.value) from None


def _outcome(result: Any, convert: Callable[[Any], Any]) -> Any:
    """An `Ok(v)` / `Err(e)` list item as `convert(v)` or an (unraised) `Error`."""
    if isinstance(result, _Ok):
        return convert(result.value)
    if isinstance(result, _Err):
        return Error.from_wit(result.value)
    return convert(result)
