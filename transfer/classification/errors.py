"""``InputError``: a bad input (data, backbone, options) that ``droppos classify`` reports in one line.

Other exceptions are bugs and keep their traceback.
"""


class InputError(ValueError):
    """A one-line, user-facing error that names the file or option and the fix."""
