"""`splatlab export` (placeholder until its issue lands)."""

from __future__ import annotations

from .errors import UserError


def run(argv: list[str]) -> int:
    raise UserError("`splatlab export` is not yet available in this version")
