"""Key-value state in the calling service's own namespace.

Every function defaults to `QUORUM` consistency, which is what a counter or any
read-modify-write needs on a cluster; pass ``consistency=kv.ONE`` (or ``"one"``) for a
cheaper read, ``kv.ALL`` for a write every replica must take. Failures raise
`nanogrid.Error` subclasses.

::

    from nanogrid import kv

    kv.set("greeting", "hello")            # str values are stored as UTF-8
    kv.get("greeting")                     # b"hello" (None when absent)
    kv.get_text("greeting")                # "hello"
    kv.set_json("cfg", {"limit": 3})
    kv.get_json("cfg", default={})
    kv.get_int("hits")                     # 0 when absent
    kv.increment("hits", 1)                # CAS loop; value kept as decimal text
    kv.compare_and_swap("lock", None, "me")
    kv.list_keys("user:", limit=100)
"""

import json as _json
from typing import Any, Iterator, List, Optional, Union

from wit_world.imports import kv as _wit
from wit_world.imports.kv import Consistency

from .errors import Internal, Invalid, _checked
from .message import Body, _bytes

__all__ = [
    "Consistency", "ONE", "QUORUM", "ALL",
    "get", "get_text", "get_json", "get_int", "set", "set_json", "delete",
    "compare_and_swap", "list_keys", "keys", "increment",
]

#: One replica answers (fast, may be stale on a cluster).
ONE = Consistency.ONE
#: A majority of replicas agree (the default).
QUORUM = Consistency.QUORUM
#: Every replica agrees.
ALL = Consistency.ALL

ConsistencyLike = Union[Consistency, str]

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


def _level(consistency: ConsistencyLike) -> Consistency:
    if isinstance(consistency, Consistency):
        return consistency
    try:
        return Consistency[str(consistency).upper()]
    except KeyError:
        raise Invalid(f"unknown consistency {consistency!r}; use one, quorum or all") from None


def get(key: str, consistency: ConsistencyLike = QUORUM) -> Optional[bytes]:
    """The value of `key`, or ``None`` when it is absent."""
    return _checked(_wit.get, key, _level(consistency))


def get_text(key: str, default: Optional[str] = None, consistency: ConsistencyLike = QUORUM) -> Optional[str]:
    """The value of `key` as UTF-8 text, or `default` when it is absent."""
    value = get(key, consistency)
    if value is None:
        return default
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise Internal(f"value of key {_quote(key)} is not utf-8 text") from None


def get_json(key: str, default: Any = None, consistency: ConsistencyLike = QUORUM) -> Any:
    """The value of `key` parsed as JSON, or `default` when it is absent."""
    value = get(key, consistency)
    if value is None:
        return default
    try:
        return _json.loads(value)
    except ValueError as e:
        raise Internal(f"value of key {_quote(key)} is not the expected json: {e}") from None


def get_int(key: str, default: int = 0, consistency: ConsistencyLike = QUORUM) -> int:
    """The value of `key` as an integer in decimal text (how `increment` stores it), or
    `default` when it is absent; raises `Internal` if it holds something else."""
    value = get(key, consistency)
    if value is None:
        return default
    parsed = _parse_int(value)
    if parsed is None:
        raise Internal(f"value of key {_quote(key)} is not an integer")
    return parsed


def set(key: str, value: Body, consistency: ConsistencyLike = QUORUM) -> None:  # noqa: A001 (kv.set)
    """Write `key` (a `str` value is stored as UTF-8)."""
    _checked(_wit.set, key, _bytes(value), _level(consistency))


def set_json(key: str, value: Any, consistency: ConsistencyLike = QUORUM) -> None:
    """Write `value` as compact JSON."""
    data = _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    _checked(_wit.set, key, data, _level(consistency))


def delete(key: str, consistency: ConsistencyLike = QUORUM) -> None:
    """Delete `key` (deleting an absent key is not an error)."""
    _checked(_wit.delete, key, _level(consistency))


def compare_and_swap(key: str, expected: Optional[Body], new: Body) -> bool:
    """Replace the value of `key` with `new` only if it is still `expected`
    (``None``: the key must be absent). Returns whether the swap happened."""
    exp = None if expected is None else _bytes(expected)
    return _checked(_wit.compare_and_swap, key, exp, _bytes(new))


def list_keys(prefix: str = "", after: Optional[str] = None, limit: int = 1000) -> List[str]:
    """Up to `limit` keys that start with `prefix`, in byte order, strictly after `after`."""
    return _checked(_wit.list_keys, prefix, after, int(limit))


def keys(prefix: str = "", page: int = 1000) -> Iterator[str]:
    """Every key that starts with `prefix`, in byte order, fetched `page` at a time."""
    after: Optional[str] = None
    while True:
        batch = list_keys(prefix, after, page)
        yield from batch
        if len(batch) < page:
            return
        after = batch[-1]


def _parse_int(value: bytes) -> Optional[int]:
    # Exactly what Rust's `str::parse::<i64>` accepts: an optional sign and ASCII digits.
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    n = int(text)
    return n if _I64_MIN <= n <= _I64_MAX else None


def increment(key: str, delta: int = 1) -> int:
    """Atomically add `delta` to the integer stored (as decimal text) at `key`, starting
    from 0, and return the new value. Retries with compare-and-swap on contention.

    The value is a signed 64-bit integer, stored the way the Rust SDK stores it, so Rust
    and Python services can share counters. Raises `Invalid` if the key holds something
    else or the result would overflow.
    """
    delta = int(delta)
    while True:
        current = get(key)
        if current is None:
            value = 0
        else:
            parsed = _parse_int(current)
            if parsed is None:
                raise Invalid(f"key {_quote(key)} does not hold an integer")
            value = parsed
        nxt = value + delta
        if not _I64_MIN <= nxt <= _I64_MAX:
            raise Invalid(f"counter {_quote(key)} would overflow")
        if compare_and_swap(key, current, str(nxt).encode("ascii")):
            return nxt


def _quote(key: str) -> str:
    # Quoted like Rust's `{:?}` of a string, so messages match the Rust SDK's.
    return _json.dumps(key, ensure_ascii=False)
