"""``InputError``: a bad input (data, backbone, options) that ``droppos classify`` reports in one line.

Other exceptions are bugs and keep their traceback.
"""

from droppos.errors import UserError


class InputError(UserError):
    """A one-line, user-facing error that names the file or option and the fix."""
