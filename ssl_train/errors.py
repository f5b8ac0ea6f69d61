"""Errors that the command-line entry points turn into one clear line and a non-zero exit."""


class SSLTrainError(Exception):
    """A problem with the user's input or run (bad config value, missing data, diverged loss)."""


class NonFiniteLossError(SSLTrainError):
    """Training produced a NaN or infinite loss; the run is stopped rather than continued on garbage."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for a one-line error; its type name where the message says
    nothing readable (empty, or a bare number such as an unpickler's magic key)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return text if any(c.isalpha() for c in text) else f"{type(exc).__name__} {text}".strip()
