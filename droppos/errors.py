"""``UserError``: the one exception type for bad input, reported by ``droppos`` in one line.

Library code raises a subclass of :class:`UserError` whose message names the input (file, option,
key) and the fix; the ``droppos`` command prints ``droppos <command>: error: <message>`` and exits 2
(no traceback). Any other exception is a bug and keeps its traceback. ``UserError`` derives from
``ValueError`` so that callers catching ``ValueError`` keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A one-line, user-facing error naming the input and the fix."""

    exit_code = 2
