"""`splatlab info` (placeholder until its issue lands)."""

from __future__ import annotations

from .errors import UserError


def run(argv: list[str]) -> int:
    raise UserError("`splatlab info` is not yet available in this version")
