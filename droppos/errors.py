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


def one_line(e: Exception) -> str:
    """The message of a user error; raised in a DataLoader worker, torch re-raises it with the worker's
    traceback in the text: its last line is the message."""
    text = str(e)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].split(f"{type(e).__name__}: ", 1)[-1]
    return text.replace("  ", " ")


def print_user_error(command: str, e: Exception) -> None:
    """``droppos COMMAND: error: MESSAGE`` on stderr: the one line of a user error."""
    import sys

    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):  # a bar left open ends its line first
        bar.close()
    print(f"droppos {command}: error: {one_line(e)}", file=sys.stderr, flush=True)
