"""Whether a process still lives, and waiting for one to go, by its pid."""

from __future__ import annotations

import os
import time
from pathlib import Path


def process_exists(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init to reap it is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        # The state follows the parenthesised command name, which may itself hold spaces.
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def wait_for_exit(pid: int, *, deadline: float) -> None:
    """Wait until ``pid`` is gone, or ``deadline`` (``time.monotonic()``) has passed."""
    while process_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
