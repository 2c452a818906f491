"""'Did you mean ...?' for unknown names: one rule (``difflib.get_close_matches``, cutoff 0.6) everywhere."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most like ``name`` (difflib ratio >= 0.6), or None."""
    matches = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return matches[0] if matches else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or ``""`` when nothing is close."""
    match = closest(name, known)
    return f"; did you mean {match!r}?" if match else ""


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> ValueError:
    """``ValueError("unknown {kind} 'name'; known: [...]; did you mean 'x'?")`` (known names sorted)."""
    known = sorted(str(k) for k in known)
    return ValueError(f"unknown {kind} {name!r}; known: {known}{did_you_mean(name, known)}")
