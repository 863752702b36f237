"""Programs a test needs from the machine: in CI a missing one fails the run (CI must
never skip silently); elsewhere the test is skipped with the command that installs it."""

from __future__ import annotations

import os
import shutil

import pytest


def require(program: str, install: str) -> str:
    """The path of `program`, else fail (CI) or skip, naming `install`."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} is missing: {install}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
