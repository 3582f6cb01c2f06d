"""Log lines in the node's log, tagged with the service name and request id.

::

    from nanogrid import log
    log.info("started")
    log.log("warn", "disk almost full")    # or log.Level.WARN
"""

from typing import Union

from wit_world.imports import log as _wit
from wit_world.imports.log import Level

__all__ = ["Level", "log", "trace", "debug", "info", "warn", "warning", "error"]


def log(level: Union[Level, str], message: str) -> None:
    """Log `message` at `level` (a `Level` or its name: ``"info"``, ``"warn"``, …)."""
    if not isinstance(level, Level):
        name = str(level).upper()
        level = Level[{"WARNING": "WARN"}.get(name, name)]
    _wit.log(level, str(message))


def trace(message: str) -> None:
    """Log at trace level."""
    _wit.log(Level.TRACE, str(message))


def debug(message: str) -> None:
    """Log at debug level."""
    _wit.log(Level.DEBUG, str(message))


def info(message: str) -> None:
    """Log at info level."""
    _wit.log(Level.INFO, str(message))


def warn(message: str) -> None:
    """Log at warn level."""
    _wit.log(Level.WARN, str(message))


#: Alias of `warn`, as in Python's `logging`.
warning = warn


def error(message: str) -> None:
    """Log at error level."""
    _wit.log(Level.ERROR, str(message))
