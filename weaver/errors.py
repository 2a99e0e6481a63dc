"""Errors meant for the person at the keyboard: the entry points print them without a traceback."""


class WeaverError(Exception):
    """A problem the user can fix (a config value, a file, a column): the message says what and how."""


class ConfigError(WeaverError, ValueError):
    """A config value is invalid; the message names the key."""


class DataError(WeaverError):
    """Input data cannot be used as configured; the message names the file, split or column."""
