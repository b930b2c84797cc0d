"""`SceneError`, in a module that imports no torch (the CLI catches it before any command loads)."""

from __future__ import annotations

from pathlib import Path


class SceneError(Exception):
    """A user-facing input problem: one line naming the file and what is wrong."""

    def __init__(self, path: Path | str | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


__all__ = ["SceneError"]
