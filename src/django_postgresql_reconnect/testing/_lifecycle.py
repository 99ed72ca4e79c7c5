"""The lifecycle every tool shares: ``start()``, ``close()``, and a with-block doing both.

One definition, so that ``with Tool(...) as tool:`` means the same for each of them: started
on entry (and everything cleaned up if starting fails half-way), closed on exit whatever
happened inside.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import TypeVar

_Tool = TypeVar("_Tool", bound="LabTool")


class LabTool(abc.ABC):
    """A resource a test starts, may stop and start again, and finally closes."""

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
