"""`build_html`: one self-contained HTML file that shows a model in any browser.

viser 1.1 ships its whole client as a single-file bundle (client/build/index.html in the
wheel, ~0.8 MB), and `get_scene_serializer().as_html()` injects the recorded scene as a
base64 zstd payload (`window.__VISER_EMBED_DATA__`). So the export needs no server and no
network: the splats are drawn by viser's WebGL Gaussian splat renderer, colour only
(SH DC -> RGB; view-dependent SH is not supported by viser's splats). `browser.py` says
what is done so that page matches a server render of its start camera.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Optional

import numpy as np

from splatlab.scenes.files import atomic_write_bytes
from splatlab.scenes.geometry import Box, focal_to_fov, look_at, up_direction

from .browser import add_splats, initial_view, set_initial_camera
from .splats import browser_splats, centers, crop_renderer


def solid_background(rgb: tuple[float, float, float]) -> np.ndarray:
    """A tiny image of one colour: viser stretches background images over the viewport,
    which is the only way to set a background colour that survives serialization."""
    return np.tile((np.clip(np.asarray(rgb, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8), (4, 4, 1))


def start_view(renderer, cameras=None) -> tuple[dict, Optional[np.ndarray]]:
    """The page's start camera (viser `initial_camera` fields) and its c2w (4 4, OpenCV
    axes; None without cameras): the server viewer's, from the first training camera."""
    c = centers(renderer)
    means = np.zeros((0, 3)) if c is None else c.detach().double().cpu().numpy()
    finite = means[np.isfinite(means).all(1)]
    center = np.median(finite, axis=0) if len(finite) else np.zeros(3)
    if cameras is not None and len(cameras) > 0:
        c2w = cameras.camtoworlds[0].double().cpu().numpy()
        fov = focal_to_fov(float(cameras.fy[0]), float(cameras.height[0]))
        return initial_view(c2w, fov, center), c2w
    radius = float(np.percentile(np.linalg.norm(finite - center, axis=-1), 90)) if len(finite) else 1.0
    eye = center + (radius or 1.0) * np.array([2.0, -2.0, 1.2])
    view = {"position": tuple(float(v) for v in eye), "look_at": tuple(float(v) for v in center),
            "up": (0.0, 0.0, 1.0), "fov": math.radians(50.0)}
    return view, look_at(eye, center, (0.0, 0.0, 1.0))


def add_static_scene(server, renderer, cameras=None, background=None, crop: Optional[Box] = None):
    """Splats (browser-rendered), the start camera and the background onto a viser server.
    `renderer` must offer `browser_splats` (renderers/base.py). Returns the `BrowserSplats`
    sent (counts of dropped and widened Gaussians)."""
    renderer = crop_renderer(renderer, crop)
    arrays = browser_splats(renderer)
    if arrays is None:
        raise ValueError(f"{type(renderer).__name__} cannot be drawn by the browser (no browser_splats)")
    view, c2w = start_view(renderer, cameras)
    if cameras is not None and len(cameras) > 0:
        up = up_direction(cameras.camtoworlds)
        if up is not None:
            server.scene.set_up_direction(tuple(float(v) for v in up))
    sent = add_splats(server.scene, "/splats", arrays, view_c2w=c2w)
    if background is not None:
        server.scene.set_background_image(solid_background(background), format="png")
    set_initial_camera(server.initial_camera, view)
    return sent


def build_html(renderer, path: Path | str, *, cameras=None, background=None, crop: Optional[Box] = None,
               title: Optional[str] = None) -> Path:
    """Write one self-contained HTML file showing `renderer` (one with `browser_splats`) to `path`.
    `cameras` (optional) gives the start view and the up direction; `background` is RGB
    in [0, 1]; `crop` hides Gaussians outside a box (normalized frame); `title` names the
    page (the file's stem by default). Returns the path."""
    import viser

    path = Path(path)
    # A throwaway server on an OS-chosen loopback port: serialization needs one; its
    # banner (and its "Server stopped" line, printed from its own thread) go nowhere.
    with contextlib.redirect_stdout(io.StringIO()):
        server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
        try:
            add_static_scene(server, renderer, cameras=cameras, background=background, crop=crop)
            page = server.get_scene_serializer().as_html()
        finally:
            server.stop()
    page = set_title(page, title if title is not None else path.stem)
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def set_title(page: str, title: str) -> str:
    """Replace the viser client's <title> with `title` (HTML-escaped)."""
    import html as html_escape

    new = f"<title>{html_escape.escape(title)}</title>"
    if "<title>Viser</title>" in page:
        return page.replace("<title>Viser</title>", new, 1)
    return page.replace("</head>", new + "</head>", 1)


__all__ = ["build_html", "add_static_scene", "solid_background", "start_view", "set_title"]
