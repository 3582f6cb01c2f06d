"""The service's own logic, free of platform calls, so it can be tested on this machine."""

from typing import Optional


def key_of(route: str) -> Optional[str]:
    """The counter a request path names, or None for the listing."""
    key = route.strip("/")
    return key or None
