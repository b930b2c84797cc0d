"""Browser viewer (viser) over any `Renderer` or a training run's `LiveFeed`.

Imports only `renderers` and `scenes` types (never `app`); viser loads lazily inside
`serve`, so `import splatlab.viewer` stays light for the trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .live import LiveFeed

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from splatlab.renderers.base import Renderer
    from splatlab.scenes.types import Cameras, Normalization

    from .server import ViewerServer


def serve(
    renderer: Optional["Renderer"] = None,
    *,
    feed: Optional[LiveFeed] = None,
    cameras: Optional["Cameras"] = None,
    points: Optional[tuple["np.ndarray", Optional["np.ndarray"]]] = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    client_splats: bool = False,
    crop_path: Optional[Path] = None,
    background: Optional[tuple[float, float, float]] = None,
    normalization: Optional["Normalization"] = None,
    allow_origins: tuple[str, ...] = (),
    max_res: Optional[int] = None,
    block: bool = True,
) -> "ViewerServer":
    """Start the viewer on http://host:port (the next free port if taken).

    Give a `renderer` (static view) or a `feed` (live training; renders its newest publish),
    optionally the training `cameras` (normalized frame, drawn as clickable frustums) and
    the initial `points` (P 3, colours P 3 uint8 or None). `crop_path` is where the crop
    box is saved (JSON; in the normalized frame, and in original coordinates when
    `normalization` is given). `background` (RGB in [0, 1]) is the initial render
    background. Only pages served by this viewer (on its own host and port) may connect;
    `allow_origins` adds others (e.g. "http://localhost:9000" for an SSH tunnel). At most
    `security.MAX_CLIENTS` browsers at once. `max_res` is the initial long side of a still frame
    (the GUI slider; default 1024 on a GPU, 512 on CPU). A non-loopback `host` prints a warning to stderr. With `block=False` it returns the running `ViewerServer`
    (`.url`, `.port`, `.stop()`); with `block=True` it serves until Ctrl-C.
    """
    from .server import ViewerServer, warn_if_exposed

    server = ViewerServer(
        renderer=renderer, feed=feed, cameras=cameras, points=points, host=host, port=port,
        client_splats=client_splats, crop_path=crop_path, background=background,
        normalization=normalization, allow_origins=tuple(allow_origins), max_res=max_res,
    )
    warn_if_exposed(host, server.port)
    if block:
        server.wait()
    return server


__all__ = ["LiveFeed", "serve"]
