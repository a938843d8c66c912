"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class AscError(Exception):
    """A problem the user can fix (bad input, missing file, invalid config)."""

    exit_code = 2


class ConfigError(AscError, ValueError):
    """An invalid configuration value; the message names the file and key."""


class DataError(AscError):
    """A dataset or audio file that cannot be used; the message names the file (and line)."""


def positive_seconds(value: object, what: str) -> float:
    """A positive, finite number of seconds, or a ConfigError naming `what` (an option or a key)."""
    import math

    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{what} must be a positive, finite number of seconds, got {value!r}")
    return seconds
