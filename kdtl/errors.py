"""Errors a user can cause and fix.

Anything raised as a :class:`UserError` is reported by the command line as a
single line on stderr with exit code 2 (the convention of argparse and most
Unix tools for "you called me wrong"), without a traceback. Everything else is
a bug in kdtl and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: config, paths, data or models."""


class ConfigError(UserError):
    """The composed configuration is invalid."""


class DataError(UserError):
    """The data cannot be found or read, or does not have the expected layout."""


class ModelError(UserError):
    """A model cannot be built or loaded as configured."""
