"""Exceptions for user mistakes.

``UserError`` subclasses ``ValueError`` so that the Python API raises the ``ValueError`` the contract promises,
while the CLI can tell a user's mistake (exit status 2, one line) from a bug (traceback).
"""

from __future__ import annotations

import difflib

__all__ = ["UserError", "CheckpointError", "NonFiniteLossError", "closest"]


class UserError(ValueError):
    """A mistake in what the user asked for: an unknown name, a bad value, a missing file."""


class CheckpointError(UserError):
    """A run directory or checkpoint that is missing, incomplete or corrupt."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def closest(name: str, choices, n: int = 3) -> str:
    """A hint naming the choices closest to ``name`` (or all of them when few), for error messages."""
    choices = sorted(choices)
    near = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(repr(c) for c in near) + "?"
    return "choose from: " + ", ".join(choices)
