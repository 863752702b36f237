"""Session notes: what the visit timeline says happened, and what it bills as.

`notes.contact` turns a visit's timeline into `VisitFacts` (who was there, minutes of
synchronous contact, modality, interruptions, location); `notes.billing` turns those
into a suggested CPT code, modifier and place of service. Both are pure: no I/O.
"""

from __future__ import annotations

from typing import Any


class NotesError(Exception):
    """The package's root error; `code` is stable and client-facing (like `VisitError`)."""

    def __init__(self, code: str, message: str, action: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.action = action
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "action": self.action,
                          **self.extra}}
