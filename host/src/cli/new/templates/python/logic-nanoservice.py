"""The service's own logic, free of platform calls, so it can be tested on this machine."""


def greet(greeting: str, name: str, path: str) -> str:
    return f"{greeting}, {name}! you asked for {path}\n"
