"""User-facing errors: caught by the CLI and printed as one line (traceback only with --debug)."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A bad path, file, config or camera. The message names the file and the problem."""

    def __init__(self, problem: str, path: Path | str | None = None):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)
