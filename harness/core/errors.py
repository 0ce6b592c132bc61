"""The one exception type that user-facing commands turn into a one-line message and exit code 2."""


class InputError(ValueError):
    """Bad user input (file, column, row, option): the message names what and where."""
