"""The lifecycle every tool shares: ``start()``, ``close()``, and a with-block doing both.

One definition, so that ``with Tool(...) as tool:`` means the same for each of them: started
on entry (and everything cleaned up if starting fails half-way), closed on exit whatever
happened inside; and, with ``close_once``, so that a final ``close()`` is final the same way.
"""

from __future__ import annotations

import abc
import atexit
import functools
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

_Tool = TypeVar("_Tool", bound="LabTool")


class LabTool(abc.ABC):
    """A resource a test starts, may stop and start again, and finally closes."""

    #: Whether ``close()`` ran, for a tool whose ``close()`` is final (``close_once``).
    _closed: bool

    @abc.abstractmethod
    def start(self) -> None:
        """Make the resource ready for use; calling it again when ready does nothing."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release everything the tool made (processes, files, links); safe to call twice."""

    def __enter__(self: _Tool) -> _Tool:
        try:
            self.start()
        except BaseException:
            # A start that failed half-way may have left a process or a directory behind.
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def close_once(close: Callable[[_Tool], None]) -> Callable[[_Tool], None]:
    """Make a tool's ``close()`` final, and safe to call twice.

    The first call marks the tool closed and drops the exit hook that
    ``atexit.register(self.close)`` may have set (what was closed by hand is not closed
    again at exit), then runs ``close``; later calls do nothing. The tool sets
    ``self._closed = False`` when made, and refuses to ``start()`` once it is True.
    """

    @functools.wraps(close)
    def close_first_time(self: _Tool) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        close(self)

    return close_first_time
