"""The viser app: per-client server-side rendering, or splats sent to the browser.

One render worker thread per connected client. The worker always renders the client's
*current* camera, so camera messages that arrive while it renders are coalesced (the
latest camera wins; stale ones are never rendered). While the camera moves it renders
at a scale chosen from the measured render time (`AdaptiveResolution`) and a low JPEG
quality; once the camera has been still for ~0.3 s it renders full resolution at high
quality, once. A live feed re-renders when a new version is published (throttled).
A loading page reports other cameras before the viewer's initial one; those frames are
rendered from the initial camera (`before_initial`).
Errors on one client (it disconnected mid-frame, sent a degenerate camera) are logged
once and skipped; the server keeps running.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import logging
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from splatlab.scenes.files import atomic_write_bytes
from splatlab.scenes.geometry import Box, focal_to_fov, focus_point, rotmat_to_quat, up_direction

from . import security
from .browser import add_splats, initial_view, set_initial_camera
from .live import LiveFeed
from .render import OUTPUTS, AdaptiveResolution, RenderSettings, ViewCamera, frame_size, render_frame
from .splats import browser_splats, can_crop, centers, crop_renderer, stats_line

log = logging.getLogger("splatlab.viewer")

MOVING_JPEG_QUALITY = 55
STILL_JPEG_QUALITY = 92
LIVE_RERENDER_S = 1.0  # at most this often per client when only the live model changed (training pays for each)
MAX_FPS = 30.0  # frames per client per second, whatever the camera message rate
HOLD_S = 10.0  # a new page's frames come from the initial camera at most this long (before_initial)
# Renders in flight across clients: bounds the renderer's scratch memory, not just the
# client count. On CPU one render already uses every core, so a second only adds memory.
CONCURRENT_RENDERS = {"cpu": 1, "cuda": 2}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Once:
    """Log each distinct problem once (a client sending NaN cameras at 60 Hz must not
    flood the terminal)."""

    def __init__(self):
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str, msg: str) -> None:
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        log.warning(msg)


def before_initial(position, look_at, start_position) -> bool:
    """Whether a page's camera is one it reports before it has applied the viewer's initial
    camera (seconds before, on a busy machine). Seen so far: viser's start camera ((3, 3,
    3), fov 75 deg) and react-three-fiber's default ((0, 0, 5) in three.js axes), maybe
    turned by the scene's up direction, at viser's fov or already the initial one. All look
    at the origin, where a page's camera looks later only if the user puts it there; an
    initial camera looking at the origin is told apart by its position."""
    look_at = np.asarray(look_at, np.float64)
    start = np.asarray(start_position, np.float64)
    near_start = np.linalg.norm(np.asarray(position, np.float64) - start) <= 1e-4 * max(1.0, np.linalg.norm(start))
    return bool(np.abs(look_at).max() <= 1e-9 and not near_start)


class _ClientSession:
    def __init__(self, viewer: "ViewerServer", client):
        self.viewer = viewer
        self.client = client
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.last_move = time.monotonic()
        self.policy = AdaptiveResolution(target_fps=viewer.target_fps)
        self._last_key: Any = None
        self._last_full_key: Any = None
        self._last_sent = 0.0
        self._last_moving = False  # the last frame sent was a moving one
        self._moved_since: Optional[float] = None  # first camera change not rendered yet
        self.frames_sent = 0
        # While the page reports a camera from before the initial one (`before_initial`),
        # its frames are rendered from the initial view, where it is going; for HOLD_S at
        # most, so that a page sent elsewhere (a URL camera at the origin) is not stuck.
        self._held_until = time.monotonic() + HOLD_S if viewer.start_pose is not None else 0.0
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"viewer-client-{client.client_id}")
        client.camera.on_update(self._on_camera)
        self.thread.start()

    def _on_camera(self, _camera) -> None:
        now = time.monotonic()
        self.last_move = now
        if self._moved_since is None:
            self._moved_since = now
        self.wake.set()

    def _frame_due(self) -> bool:
        """At most MAX_FPS frames: too early -> sleep out the rest and come back (the
        camera read then is the newest)."""
        wait = self._last_sent + 1.0 / MAX_FPS - time.monotonic()
        if wait <= 0:
            return True
        self.stopped.wait(wait)
        self.wake.set()
        return False

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()

    def _camera(self) -> Optional[ViewCamera]:
        cam = self.client.camera
        for _ in range(3):
            # viser swaps in each camera message's state whole: fields read across a swap
            # would mix two poses (say the start camera's rotation at the initial position).
            t = cam.update_timestamp
            wxyz, position, fov, look_at = cam.wxyz, cam.position, cam.fov, cam.look_at
            if cam.update_timestamp == t:
                break
        else:
            return None
        if self._held_until:
            start = self.viewer.start_pose
            if time.monotonic() < self._held_until and before_initial(position, look_at, start[1]):
                wxyz, position, fov = start
            else:
                self._held_until = 0.0
                log.debug("client %s: rendering its own camera", self.client.client_id)
        try:
            return ViewCamera.from_viser(wxyz, position, fov, cam.image_width, cam.image_height)
        except (ValueError, ZeroDivisionError, AssertionError) as e:
            self.viewer._once(f"cam{self.client.client_id}",
                              f"client {self.client.client_id}: skipping degenerate camera ({e})")
            return None

    def _loop(self) -> None:
        while not self.stopped.is_set():
            self.wake.wait(timeout=0.05)
            self.wake.clear()
            if self.stopped.is_set():
                break
            try:
                self._step()
            except Exception as e:  # noqa: BLE001 - one bad frame must not kill the worker
                if self.stopped.is_set():
                    break
                self.viewer._once(f"err{self.client.client_id}:{type(e).__name__}",
                                  f"client {self.client.client_id}: frame skipped ({type(e).__name__}: {e})")
                time.sleep(0.1)

    def _step(self) -> None:
        viewer = self.viewer
        cam = self._camera()
        if cam is None:
            return
        model, version = viewer.current_model()
        if model is None:
            return
        settings = viewer.settings
        key = (cam.c2w.tobytes(), cam.fov_y, cam.aspect, settings, version)
        if key == self._last_full_key:
            return
        now = time.monotonic()
        still = self.policy.is_still(self.last_move, now)
        if self._last_key is not None and key[:-1] == self._last_key[:-1] and version != self._last_key[-1]:
            # Only the live model changed: keep re-renders cheap for a training run.
            if now - self._last_sent < LIVE_RERENDER_S:
                return
        canvas_long = max(int(self.client.camera.image_width), int(self.client.camera.image_height))
        max_res = max(16, min(int(settings.max_res), canvas_long))
        full_w, full_h = frame_size(cam.aspect, max_res, 1.0)
        if still:
            scale, quality = 1.0, STILL_JPEG_QUALITY
        else:
            if key == self._last_key:
                return  # this exact low-res frame is already on screen; wait for "still"
            scale, quality = self.policy.moving_scale(full_w * full_h), MOVING_JPEG_QUALITY
        w, h = frame_size(cam.aspect, max_res, scale)
        if not self._frame_due():
            return
        moved, self._moved_since = self._moved_since, None
        with viewer.render_slots, viewer.rendering():
            # Between two moving frames, the time from sending one to starting the next
            # on a camera that had already moved is per-frame cost too (this loop, a
            # render slot, the GIL that viser's sending thread holds).
            gap = None
            if self._last_moving and scale < 1.0 and moved is not None:
                gap = time.monotonic() - max(self._last_sent, moved)
            t0 = time.perf_counter()
            img = render_frame(model, cam, w, h, settings)
            dt = time.perf_counter() - t0
        if self.stopped.is_set():
            return
        t1 = time.perf_counter()
        self.client.scene.set_background_image(img, format="jpeg", jpeg_quality=quality)  # encodes here
        encode = time.perf_counter() - t1
        # The frame budget holds everything this worker spends on a frame: the JPEG
        # encode grows with the pixels too, and is a real share of a fast render's time.
        self.policy.observe(dt + encode, w * h, overhead=gap)
        self._last_sent = time.monotonic()
        self._last_moving = scale < 1.0
        self._last_key = key
        if scale >= 1.0:
            self._last_full_key = key
        self.frames_sent += 1
        viewer._record_frame(dt, (w, h))
        log.debug("frame client=%s %dx%d q=%d render=%.3fs %s jpeg=%.3fs at=%.3f,%.3f,%.3f", self.client.client_id,
                  w, h, quality, dt, "full" if scale >= 1.0 else "moving", encode, *cam.c2w[:3, 3])


class ViewerServer:
    """See `splatlab.viewer.serve`."""

    # Frames/s the moving-camera resolution aims at (sent frames, render + encode + the
    # measured overhead between them): issue 10 asks >= 15 delivered while moving.
    target_fps = 20.0

    def __init__(
        self,
        renderer=None,
        *,
        feed: Optional[LiveFeed] = None,
        cameras=None,
        points: Optional[tuple[np.ndarray, Optional[np.ndarray]]] = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        client_splats: bool = False,
        crop_path: Optional[Path] = None,
        background: Optional[tuple[float, float, float]] = None,
        normalization=None,
        verbose: bool = False,
        allow_origins: tuple[str, ...] = (),
        max_clients: int = security.MAX_CLIENTS,
        max_res: Optional[int] = None,
    ):
        if renderer is None and feed is None:
            raise ValueError("serve() needs a renderer or a live feed")
        import viser

        self.renderer, self.feed = renderer, feed
        self.cameras = cameras
        self.client_splats = client_splats
        self.crop_path = None if crop_path is None else Path(crop_path)
        self.normalization = normalization
        self._once = _Once()
        self._lock = threading.Lock()
        self._sessions: dict[int, _ClientSession] = {}
        self._model_cache: tuple[Any, Any] = (None, None)  # ((version, crop), renderer)
        self._frame_times: collections.deque = collections.deque(maxlen=240)
        self._last_render_s = 0.0
        self._last_size = (0, 0)
        self._stopped = threading.Event()
        self._inputs: dict[str, Any] = {}  # viser GUI id -> our input handle, for message checks

        on_gpu = self._source_device().type == "cuda"
        self.render_slots = threading.BoundedSemaphore(CONCURRENT_RENDERS["cuda" if on_gpu else "cpu"])
        self._in_flight = 0
        self.settings = RenderSettings(
            max_res=(1024 if on_gpu else 512) if max_res is None
            else int(min(max(max_res, security.RES_MIN), security.RES_MAX)),
            sh_degree=self._max_sh_degree() or 0,
            background=tuple(background) if background is not None else (0.0, 0.0, 0.0),
        )
        self.crop = Box(enabled=False)
        self.crop = self._load_crop()

        # viser moves on to the next port itself when one is taken; we report the bound one.
        self.guard = security.HandshakeGuard(
            security.HandshakePolicy(host, allow_origins, max_clients), self._gui_value_check)
        self.server = security.start_guarded_viser(host, port, self.guard, verbose=verbose)
        self.host = host
        self.port = int(self.server.get_port())
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
        self.url = f"http://{shown}:{self.port}"
        self.loopback_only = is_loopback(host)

        self._setup_scene(points)
        self._setup_gui()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)
        self._stats_thread = threading.Thread(target=self._stats_loop, daemon=True, name="viewer-stats")
        self._stats_thread.start()
        if client_splats:
            self._splat_version: Any = object()
            self._send_splats()

    # ---- model source -------------------------------------------------------------
    def _source(self):
        """The renderer as given, or the newest live snapshot (None before any)."""
        if self.renderer is not None:
            return self.renderer
        latest = self.feed.latest()
        return latest[0] if latest else None

    def _source_device(self) -> torch.device:
        source = self._source()
        return source.device if source is not None else torch.device("cpu")

    def _max_sh_degree(self) -> Optional[int]:
        """The SH slider's range, for renderers that have SH colours (else None)."""
        degree = getattr(self._source(), "sh_degree", None)
        return None if degree is None else int(degree)

    def current_model(self):
        """(renderer with the crop applied, version) or (None, None)."""
        if self.renderer is not None:
            base, version = self.renderer, 0
        else:
            latest = self.feed.latest()
            if latest is None:
                return None, None
            base, _, version = latest
        crop = self.crop if self.crop.enabled else None
        cache_key = (version, crop)
        with self._lock:
            key, cached = self._model_cache
            if key == cache_key:
                return cached, version
        model = crop_renderer(base, crop)
        with self._lock:
            self._model_cache = (cache_key, model)
        return model, version

    # ---- scene ---------------------------------------------------------------------
    def _setup_scene(self, points) -> None:
        scene = self.server.scene
        self.frustums = []
        self.point_cloud = None
        self._start_c2w: Optional[np.ndarray] = None
        # The initial camera: wxyz, position, vertical fov.
        self.start_pose: Optional[tuple[np.ndarray, np.ndarray, float]] = None
        extent = 1.0
        if self.cameras is not None and len(self.cameras) > 0:
            c2w = self.cameras.camtoworlds.double().cpu().numpy()
            centers = c2w[:, :3, 3]
            extent = float(np.linalg.norm(centers - centers.mean(0), axis=-1).max()) or 1.0
            up = up_direction(c2w)
            if up is not None:
                scene.set_up_direction(tuple(float(v) for v in up))
            for i in range(len(self.cameras)):
                H, W = float(self.cameras.height[i]), float(self.cameras.width[i])
                fov = focal_to_fov(float(self.cameras.fy[i]), H)
                handle = scene.add_camera_frustum(
                    f"/cameras/{i:04d}", fov=fov, aspect=W / H, scale=0.06 * extent,
                    wxyz=rotmat_to_quat(c2w[i, :3, :3]), position=c2w[i, :3, 3],
                    color=(230, 120, 40), visible=False,
                )
                handle.on_click(self._make_jump(i, fov))
                self.frustums.append(handle)
            self._start_c2w = c2w[0]
            fov = focal_to_fov(float(self.cameras.fy[0]), float(self.cameras.height[0]))
            set_initial_camera(self.server.initial_camera, initial_view(c2w[0], fov, self._scene_center()))
            self.start_pose = (rotmat_to_quat(c2w[0, :3, :3]), c2w[0, :3, 3].copy(), fov)
        if points is not None and points[0] is not None and len(points[0]) > 0:
            pts = np.asarray(points[0], dtype=np.float32)
            cols = points[1] if points[1] is not None else np.full((len(pts), 3), 200, np.uint8)
            self.point_cloud = scene.add_point_cloud(
                "/init_points", points=pts, colors=np.asarray(cols, np.uint8),
                point_size=0.004 * extent * 5, visible=False,
            )
        self.crop_box = scene.add_box("/crop_box", color=(255, 60, 60), dimensions=(1, 1, 1),
                                      wireframe=True, visible=False)
        self._update_crop_box()

    def _scene_center(self) -> np.ndarray:
        """The median primitive centre; for a method without primitives (a NeRF) the
        point the training cameras look at; else the origin."""
        model, _ = self.current_model()
        c = None if model is None else centers(model)
        if c is not None and len(c) > 0:
            return c.float().median(0).values.cpu().numpy().astype(np.float64)
        if self.cameras is not None and len(self.cameras) > 0:
            p = focus_point(self.cameras.camtoworlds.double().cpu().numpy())
            if np.isfinite(p).all():
                return p
        return np.zeros(3)

    def _make_jump(self, i: int, fov: float):
        def jump(event) -> None:
            c2w = self.cameras.camtoworlds[i].double().cpu().numpy()
            self.move_client_camera(event.client, c2w, fov)

        return jump

    def move_client_camera(self, client, c2w: np.ndarray, fov: float) -> None:
        """Put a client's camera at c2w (OpenCV axes) with vertical fov (radians)."""
        fwd = c2w[:3, 2]
        dist = max(float(np.dot(self._scene_center() - c2w[:3, 3], fwd)), 1e-2)
        with client.atomic():
            client.camera.fov = float(fov)
            client.camera.position = c2w[:3, 3]
            client.camera.wxyz = rotmat_to_quat(c2w[:3, :3])
            client.camera.look_at = c2w[:3, 3] + fwd * dist
            client.camera.up_direction = -c2w[:3, 1]

    # ---- GUI -----------------------------------------------------------------------
    def _setup_gui(self) -> None:
        gui = self.server.gui
        self.stats_md = gui.add_markdown("starting...")
        if self.feed is not None:
            # One button at a time: the one that applies.
            self._pause_btn = gui.add_button("Pause training", visible=not self.feed.is_paused())
            self._resume_btn = gui.add_button("Resume training", visible=self.feed.is_paused())
            self._pause_btn.on_click(lambda _: self._set_paused(True))
            self._resume_btn.on_click(lambda _: self._set_paused(False))
        if not self.client_splats:
            with gui.add_folder("Render"):
                out = gui.add_dropdown("Output", OUTPUTS, initial_value=self.settings.output)
                res = gui.add_slider("Max resolution", min=security.RES_MIN, max=security.RES_MAX, step=64,
                                     initial_value=self.settings.max_res)
                sh = gui.add_slider("SH degree", min=0, max=max(self.settings.sh_degree, 1), step=1,
                                    initial_value=self.settings.sh_degree,
                                    visible=self._max_sh_degree() is not None)
                bg = gui.add_rgb("Background", tuple(int(round(255 * c)) for c in self.settings.background))
                near = gui.add_number("Near", initial_value=self.settings.near, min=security.NEAR_MIN,
                                      max=security.FAR_MAX / 10, step=0.01)
                far = gui.add_number("Far", initial_value=self.settings.far, min=1e-3, max=security.FAR_MAX,
                                     step=1.0)
            sh_max = self.settings.sh_degree
            defaults = RenderSettings(max_res=self.settings.max_res, sh_degree=sh_max,
                                      background=self.settings.background)

            def update(_=None) -> None:
                import dataclasses

                v = security.clamp_render_settings(out.value, res.value, sh.value, bg.value, near.value, far.value,
                                                   outputs=OUTPUTS, sh_max=sh_max, defaults=defaults)
                # Put clamped values back so every client shows what is rendered (the
                # setter re-enters here once, with nothing left to change).
                bg_255 = tuple(int(round(255 * c)) for c in v["background"])
                for h, val in ((res, v["max_res"]), (sh, v["sh_degree"]), (near, v["near"]), (far, v["far"]),
                               (out, v["output"]), (bg, bg_255)):
                    if h.value != val:
                        h.value = val
                self.settings = dataclasses.replace(self.settings, **v)
                self._wake_all()

            for h in (out, res, sh, bg, near, far):
                h.on_update(update)
                self._inputs[security.gui_uuid(h)] = h
        with gui.add_folder("Scene"):
            if self.frustums:
                show_cams = gui.add_checkbox("Training cameras", initial_value=False,
                                             hint="Click a frustum to look through it.")
                self._inputs[security.gui_uuid(show_cams)] = show_cams

                @show_cams.on_update
                def _(_) -> None:
                    for f in self.frustums:
                        f.visible = bool(show_cams.value)

            if self.point_cloud is not None:
                show_pts = gui.add_checkbox("Initial points", initial_value=False)
                self._inputs[security.gui_uuid(show_pts)] = show_pts

                @show_pts.on_update
                def _(_) -> None:
                    self.point_cloud.visible = bool(show_pts.value)

        with gui.add_folder("Crop box", visible=can_crop(self._source())):
            enabled = gui.add_checkbox("Crop", initial_value=self.crop.enabled)
            lo = gui.add_vector3("Min", initial_value=self.crop.lo, step=0.01)
            hi = gui.add_vector3("Max", initial_value=self.crop.hi, step=0.01)
            save = gui.add_button("Save crop box", disabled=self.crop_path is None,
                                  hint=None if self.crop_path is None else f"Writes {self.crop_path}; "
                                  "exports use it.")
            self._crop_md = gui.add_markdown(self._crop_status())

            def crop_update(_=None) -> None:
                a, b = security.clamp_crop(lo.value, hi.value, self.crop.lo, self.crop.hi)
                if tuple(lo.value) != a:
                    lo.value = a
                if tuple(hi.value) != b:
                    hi.value = b
                self.set_crop(Box(a, b, bool(enabled.value)))

            for h in (enabled, lo, hi):
                h.on_update(crop_update)
            for h in (enabled, lo, hi, save):
                self._inputs[security.gui_uuid(h)] = h
            save.on_click(lambda _: self.save_crop())
        if self.feed is not None:
            for h in (self._pause_btn, self._resume_btn):
                self._inputs[security.gui_uuid(h)] = h

    def _gui_value_check(self, uuid: str, value) -> Optional[str]:
        """Reason to drop a client's GUI update (`security.MessageGuard` asks), or None.
        Ranges are clamped later, in the update callbacks; this only keeps viser's own
        type cast from failing."""
        h = self._inputs.get(uuid)
        if h is None:
            return "GUI update for an unknown input"
        cur = h.value
        if isinstance(cur, bool):
            ok = isinstance(value, bool)
        elif isinstance(cur, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(cur, str):
            ok = isinstance(value, str) and value in getattr(h, "options", (value,))
        elif isinstance(cur, tuple):
            ok = (isinstance(value, (list, tuple)) and len(value) == len(cur)
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value))
        else:
            ok = False
        return None if ok else "GUI update with a value of the wrong kind"

    def _set_paused(self, paused: bool) -> None:
        (self.feed.pause if paused else self.feed.resume)()
        self._sync_pause_buttons()

    def _sync_pause_buttons(self) -> None:
        paused = self.feed.is_paused()
        if self._pause_btn.visible == paused:
            self._pause_btn.visible = not paused
        if self._resume_btn.visible != paused:
            self._resume_btn.visible = paused

    def set_crop(self, crop: Box) -> None:
        """Show `crop` (not saved: see `save_crop`)."""
        self.crop = crop
        self._crop_dirty = True
        self._update_crop_box()
        self._update_crop_status()
        if self.client_splats:
            self._send_splats()
        self._wake_all()

    def _update_crop_box(self) -> None:
        lo, hi = np.asarray(self.crop.lo), np.asarray(self.crop.hi)
        self.crop_box.position = tuple((lo + hi) / 2)
        self.crop_box.scale = tuple(np.maximum(hi - lo, 1e-6))
        self.crop_box.visible = self.crop.enabled

    def _load_crop(self) -> Box:
        self._crop_dirty = False
        self._crop_saved: Optional[str] = None
        if self.crop_path is not None and self.crop_path.exists():
            try:
                crop = Box.from_json(json.loads(self.crop_path.read_text()))
                lo, hi = security.clamp_crop(crop.lo, crop.hi, (-1.0,) * 3, (1.0,) * 3)
                self._crop_saved = f"Loaded from {self.crop_path}"
                return Box(lo, hi, crop.enabled)
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
                self._once("crop", f"{self.crop_path}: ignoring unreadable crop box ({e})")
        model, _ = self.current_model()
        c = None if model is None else centers(model)
        if c is not None and len(c) > 0:
            # Default box: the 1st..99th percentile of the centres (a subsample keeps it cheap).
            m = c.float().cpu().numpy()[:: max(1, len(c) // 100000)]
            lo, hi = np.percentile(m, 1, axis=0), np.percentile(m, 99, axis=0)
            return Box(lo, hi, enabled=False)
        return Box(enabled=False)

    def _crop_status(self) -> str:
        if self.crop_path is None:
            text = "Cannot save: no run folder."
        elif self._crop_dirty:
            text = "Changed; not saved yet."
        elif self._crop_saved is not None:
            text = self._crop_saved
        else:
            text = "Not saved."
        return f"<small>{text}</small>"

    def _update_crop_status(self) -> None:
        md = getattr(self, "_crop_md", None)
        if md is not None:
            text = self._crop_status()
            if md.content != text:
                md.content = text

    def save_crop(self) -> bool:
        """Write the crop box to `crop_path` (atomically); True when the file now holds it."""
        if self.crop_path is None:
            return False
        try:
            text = json.dumps(self.crop.to_json(self.normalization), indent=2) + "\n"
            atomic_write_bytes(self.crop_path, text.encode())
        except OSError as e:
            self._crop_saved = f"Not saved: {e.strerror or e}"
            self._crop_dirty = False
            log.warning("%s: could not save the crop box (%s)", self.crop_path, e.strerror or e)
            self._update_crop_status()
            return False
        self._crop_dirty = False
        self._crop_saved = f"Saved to {self.crop_path}"
        log.info("saved the crop box to %s", self.crop_path)
        self._update_crop_status()
        return True

    # ---- clients -------------------------------------------------------------------
    def _on_connect(self, client) -> None:
        if self.client_splats:
            return
        session = _ClientSession(self, client)
        with self._lock:
            self._sessions[client.client_id] = session

    def _on_disconnect(self, client) -> None:
        with self._lock:
            session = self._sessions.pop(client.client_id, None)
        if session is not None:
            session.stop()

    def _wake_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for s in sessions:
            s.wake.set()

    @property
    def num_clients(self) -> int:
        return len(self.server.get_clients())

    @contextlib.contextmanager
    def rendering(self):
        """Counts renders in flight, for the Render readout."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def _record_frame(self, seconds: float, size: tuple[int, int]) -> None:
        with self._lock:
            self._frame_times.append(time.monotonic())
            self._last_render_s = seconds
            self._last_size = size

    def _send_splats(self) -> None:
        model, version = self.current_model()
        if model is None:
            return
        self._splat_version = version
        arrays = browser_splats(model)
        if arrays is None:
            return
        sent = add_splats(self.server.scene, "/splats", arrays, view_c2w=self._start_c2w)
        if sent.dropped:
            self._once("splatnan", f"viewer: {sent.dropped:,} Gaussians with non-finite values not sent to the browser")

    def _stats_loop(self) -> None:
        last_md = None
        while not self._stopped.wait(0.5):
            try:
                if self.client_splats and self.feed is not None:
                    v = self.feed.version
                    if v != self._splat_version and v > 0:
                        self._send_splats()
                if self.feed is not None:
                    self._sync_pause_buttons()
                md = self._stats_markdown()
                if md != last_md:
                    self.stats_md.content = md
                    last_md = md
            except Exception as e:  # noqa: BLE001
                self._once(f"stats{type(e).__name__}", f"viewer stats: {type(e).__name__}: {e}")

    def _stats_markdown(self) -> str:
        now = time.monotonic()
        with self._lock:
            times = list(self._frame_times)
            render_s, size, busy = self._last_render_s, self._last_size, self._in_flight > 0
        model, _ = self.current_model()
        lines = ["starting..." if model is None else stats_line(model)]
        if not self.client_splats:
            lines.append(render_readout(times, now, render_s, size, busy))
        if self.feed is not None:
            latest = self.feed.latest()
            stats = dict(latest[1]) if latest else {}
            stats.pop("num_gaussians", None)  # the first line shows the model's own count
            state = "**paused**" if self.feed.is_paused() else "training"
            lines.append(" · ".join(training_stats(stats) + [state]))
        return "  \n".join(lines)

    # ---- lifecycle -----------------------------------------------------------------
    def wait(self) -> None:
        """Serve until Ctrl-C (or `stop()` from another thread)."""
        try:
            while not self._stopped.wait(0.5):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        if self._stopped.is_set() and not self._sessions:
            return
        self._stopped.set()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            s.stop()
        self.server.stop()


def render_readout(times: list[float], now: float, render_s: float, size: tuple[int, int],
                   busy: bool = False) -> str:
    """The "Render" line from frame send times (monotonic s), the last render's seconds
    and size, and whether a render is in flight: the rate over the frames of the last
    5 s; "rendering" or "idle" when none came for 2 s (a still camera renders nothing,
    and a slow CPU frame takes longer than that, so a rate would read 0 for both)."""
    if not times:
        return "**Render** rendering the first frame" if busy else "**Render** waiting for a camera"
    last = f"last {1000 * render_s:.0f} ms at {size[0]}x{size[1]}"
    recent = [t for t in times if now - t <= 5.0]
    if now - times[-1] > 2.0:
        return f"**Render** {'rendering' if busy else 'idle'} · {last}"
    if len(recent) >= 2 and recent[-1] > recent[0]:
        fps = (len(recent) - 1) / (recent[-1] - recent[0])
    else:
        fps = 1.0 / max(render_s, 1e-3)
    return f"**Render** {fps:.1f} frames/s · {last}"


# Training stats the viewer knows how to show: (key, label, format).
_KNOWN_STATS = (
    ("step", "Step", "{:,.0f}"), ("loss", "Loss", "{:.4f}"), ("psnr", "PSNR", "{:.2f} dB"),
    ("steps_per_s", None, "{:,.1f} steps/s"),
)


def training_stats(stats: dict) -> list[str]:
    """A LiveFeed's stats -> short readable parts ("**PSNR** 24.40 dB", "120.3 steps/s");
    unknown keys as "name value" with at most 4 significant digits."""
    parts = []
    for key, label, fmt in _KNOWN_STATS:
        v = stats.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            parts.append((f"**{label}** " if label else "") + fmt.format(v))
    for key, v in stats.items():
        if any(key == k for k, _, _ in _KNOWN_STATS):
            continue
        name = key.replace("_", " ")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            parts.append(f"**{name}** {v}")
        elif isinstance(v, int):
            parts.append(f"**{name}** {v:,}")
        else:
            parts.append(f"**{name}** {v:.4g}")
    return parts


def warn_if_exposed(host: str, port: int, stream=sys.stderr) -> None:
    if not is_loopback(host):
        print(f"warning: the viewer listens on {host}:{port}, beyond this machine; anyone who can "
              "reach it can see the scene (use --host 127.0.0.1 to keep it local)", file=stream)


__all__ = ["ViewerServer", "is_loopback", "warn_if_exposed", "render_readout", "training_stats"]
