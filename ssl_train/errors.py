"""Errors that the command-line entry points turn into one clear line and a non-zero exit."""


class SSLTrainError(Exception):
    """A problem with the user's input or run (bad config value, missing data, diverged loss)."""


class NonFiniteLossError(SSLTrainError):
    """Training produced a NaN or infinite loss; the run is stopped rather than continued on garbage."""
