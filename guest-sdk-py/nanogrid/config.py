"""The service's configuration: the ``config`` map of its deployment spec
(``nanogrid deploy … --config KEY=VALUE``).

::

    from nanogrid import config
    greeting = config.get("greeting", "hello")
"""

from typing import Dict, Optional

from wit_world.imports import config as _wit

__all__ = ["get", "all"]


def get(key: str, default: Optional[str] = None) -> Optional[str]:
    """One value, or `default` when it is not set."""
    value = _wit.get(key)
    return default if value is None else value


def all() -> Dict[str, str]:  # noqa: A001 (config.all)
    """Every configured key and value."""
    return dict(_wit.get_all())
