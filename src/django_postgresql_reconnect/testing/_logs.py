"""Reading what a daemon logged since a given moment, to put it in an error message.

A tool notes the log's size before it starts a daemon, then reads from there: the message
shows this start's complaint, not an older one.
"""

from __future__ import annotations

from pathlib import Path


def size(path: Path) -> int:
    """The log's size now (0 if it does not exist yet): where the next lines will start."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_from(path: Path, offset: int) -> str:
    """The log from ``offset`` on, or ``""`` if it cannot be read."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of ``text``, for a message; ``(empty)`` if there are none."""
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"


def last_lines(path: Path, text: str, lines: int = 30) -> str:
    """The end of ``text``, read from the log at ``path``, under a heading that names it: the
    part of an error message that shows what the daemon said."""
    return f"--- last lines of {path} ---\n{tail(text, lines)}"
