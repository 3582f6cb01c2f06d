"""The service's own logic, free of WASI calls, so it can be tested on this machine."""


def answer(name: str, method: str, path: str) -> str:
    return f"hello from {name}! you asked for {method} {path}\n"
