"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class EdgeqError(Exception):
    """A problem with the user's input or environment, stated in one line.

    Anything else that escapes is a bug in edgeq and is shown as a traceback with --debug.
    """
