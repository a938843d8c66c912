"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class AscError(Exception):
    """A problem the user can fix (bad input, missing file, invalid config)."""

    exit_code = 2


class ConfigError(AscError, ValueError):
    """An invalid configuration value; the message names the file and key."""


class DataError(AscError):
    """A dataset or audio file that cannot be used; the message names the file (and line)."""
