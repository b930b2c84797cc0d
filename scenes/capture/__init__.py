"""Input work before a scene exists: a folder of photos or a video -> a posed COLMAP
dataset that `splatlab.scenes` loads. `process.py` is the pipeline (staging, caching,
the output folder and what may be deleted in it), `sfm.py` runs pycolmap, `video.py`
picks sharp frames. `splatlab process` (app/process.py) is a thin command over it."""

from __future__ import annotations

from pathlib import Path

from ..errors import SceneError


class CaptureError(SceneError):
    """Unusable capture input or output folder: one line naming the path and the problem
    (the CLI prints it and exits 2). Problem first, as `UserError` takes it."""

    def __init__(self, problem: str, path: Path | str | None = None):
        super().__init__(path, problem)


__all__ = ["CaptureError"]
