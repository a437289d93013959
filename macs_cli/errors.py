"""Errors that the command line reports as one line (no traceback) with a non-zero exit."""


class MacsError(Exception):
    """Base class: anything the user can fix (bad input, bad config, missing weights)."""

    exit_code = 1


class AudioError(MacsError):
    """An input audio file is missing, unreadable, empty or holds non-finite samples."""


class ConfigError(MacsError):
    """A configuration value is out of range or of the wrong type."""

    exit_code = 2


class ModelError(MacsError):
    """A checkpoint is missing, unreadable or of the wrong shape."""


class OutputExistsError(MacsError):
    """An output already exists and ``--force`` was not given."""
