"""Facts about the current call."""

from wit_world.imports import context as _wit

__all__ = ["request_id", "service_name", "trace_id"]


def request_id() -> str:
    """The correlation id of the request being handled."""
    return _wit.request_id()


def service_name() -> str:
    """The name this service is deployed under."""
    return _wit.service_name()


def trace_id() -> str:
    """The W3C trace id of the request being handled (32 lower-case hex digits). The
    platform carries it through `invoke`, `call_all`, barriers and forwarding, so every
    service a request reaches sees the same id; look the trace up with
    ``nanogrid trace ID``."""
    return _wit.trace_id()
