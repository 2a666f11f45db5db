"""What a command's user error looks like to the tests: one ``droppos <command>: error:`` line, no traceback."""

from __future__ import annotations


def one_line_error(capsys, *needles: str) -> str:
    """The command's error: one ``droppos <command>: error:`` line, no traceback (engines' own log lines,
    such as torch's CUDA notice, may stand beside it)."""
    text = capsys.readouterr().err
    errors = [ln for ln in text.splitlines() if ln.startswith("droppos ") and ": error: " in ln]
    assert "Traceback" not in text and len(errors) == 1 and all(n in errors[0] for n in needles), text
    return errors[0]
