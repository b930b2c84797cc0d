"""`build_html`: one self-contained HTML file that shows a model in any browser.

viser 1.1 ships its whole client as a single-file bundle (client/build/index.html in the
wheel, ~0.8 MB), and `get_scene_serializer().as_html()` injects the recorded scene as a
base64 zstd payload (`window.__VISER_EMBED_DATA__`). So the export needs no server and no
network: the splats are drawn by viser's WebGL Gaussian splat renderer, colour only
(SH DC -> RGB; view-dependent SH is not supported by viser's splats).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Optional

import numpy as np

from splatlab.scenes.files import atomic_write_bytes
from splatlab.scenes.geometry import Box, focal_to_fov, up_direction

from .splats import browser_splats, centers, crop_renderer


def solid_background(rgb: tuple[float, float, float]) -> np.ndarray:
    """A tiny image of one colour: viser stretches background images over the viewport,
    which is the only way to set a background colour that survives serialization."""
    return np.tile((np.clip(np.asarray(rgb, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8), (4, 4, 1))


def add_static_scene(server, renderer, cameras=None, background=None, crop: Optional[Box] = None) -> None:
    """Splats (browser-rendered), the start camera and the background onto a viser server.
    `renderer` must offer `browser_splats` (renderers/base.py)."""
    renderer = crop_renderer(renderer, crop)
    arrays = browser_splats(renderer)
    if arrays is None:
        raise ValueError(f"{type(renderer).__name__} cannot be drawn by the browser (no browser_splats)")
    server.scene.add_gaussian_splats("/splats", **arrays)
    if background is not None:
        server.scene.set_background_image(solid_background(background), format="png")
    means = centers(renderer).float().cpu().numpy()
    center = np.median(means, axis=0) if len(means) else np.zeros(3)
    ic = server.initial_camera
    if cameras is not None and len(cameras) > 0:
        c2w = cameras.camtoworlds[0].double().cpu().numpy()
        up = up_direction(cameras.camtoworlds)
        if up is not None:
            server.scene.set_up_direction(tuple(float(v) for v in up))
        fwd = c2w[:3, 2]
        ic.position = tuple(float(v) for v in c2w[:3, 3])
        ic.look_at = tuple(float(v) for v in c2w[:3, 3] + fwd * max(float(np.dot(center - c2w[:3, 3], fwd)), 1e-2))
        ic.up = tuple(float(v) for v in -c2w[:3, 1])
        ic.fov = focal_to_fov(float(cameras.fy[0]), float(cameras.height[0]))
    elif len(means):
        radius = float(np.percentile(np.linalg.norm(means - center, axis=-1), 90)) or 1.0
        ic.look_at = tuple(float(v) for v in center)
        ic.position = tuple(float(v) for v in center + radius * np.array([2.0, -2.0, 1.2]))


def build_html(renderer, path: Path | str, *, cameras=None, background=None, crop: Optional[Box] = None) -> Path:
    """Write one self-contained HTML file showing `renderer` (one with `browser_splats`) to `path`.
    `cameras` (optional) gives the start view and the up direction; `background` is RGB
    in [0, 1]; `crop` hides Gaussians outside a box (normalized frame). Returns the path."""
    import viser

    path = Path(path)
    # A throwaway server on an OS-chosen loopback port: serialization needs one; its
    # banner goes nowhere.
    with contextlib.redirect_stdout(io.StringIO()):
        server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    try:
        add_static_scene(server, renderer, cameras=cameras, background=background, crop=crop)
        html = server.get_scene_serializer().as_html()
    finally:
        server.stop()
    atomic_write_bytes(path, html.encode("utf-8"))
    return path


__all__ = ["build_html", "add_static_scene", "solid_background"]
