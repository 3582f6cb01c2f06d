"""The service's own logic, free of platform calls, so it can be tested on this machine."""


def transform(text: str) -> str:
    """This stage's own work."""
    return text.upper()
