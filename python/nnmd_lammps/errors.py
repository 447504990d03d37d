"""The package's exception type: every user-facing error is an NNMDError with a
one-line message naming the problem (the CLI prints it and exits non-zero)."""


class NNMDError(Exception):
    """A problem with user input (file, configuration, structure) or a model file."""
