"""The live viewer's hookup to training: an event subscriber that publishes detached,
render-ready snapshots (`renderer.live_copy()`) to a `LiveFeed`, and the pause check the
loop makes between steps (the subscriber itself never blocks)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from splatlab.renderers.base import Renderer
    from splatlab.scenes.types import Scene


class LiveHookup:
    """Publishes at most every `interval_s` (a snapshot costs one copy of the model)."""

    def __init__(self, feed, interval_s: float = 0.2):
        self.feed, self.interval_s = feed, interval_s
        self._last = float("-inf")
        self.stats: dict[str, Any] = {}

    def __call__(self, e) -> None:
        from .events import ModelUpdated, StepDone

        if isinstance(e, StepDone):
            self.stats = {"step": e.step, "loss": e.loss, "psnr": e.psnr,
                          "steps_per_s": e.steps_per_sec}
        elif isinstance(e, ModelUpdated):
            self.publish(e.renderer, e.step)

    def publish(self, renderer: "Renderer", step: int, force: bool = False) -> None:
        import torch

        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        with torch.no_grad():
            snapshot = renderer.live_copy()
        self.feed.publish(snapshot, {**self.stats, "step": step})  # the viewer asks the renderer for its own stats

    def hold(self, renderer: "Renderer", step: int, stopwatch, stop) -> None:
        """Between steps: while the viewer's pause button is down, wait here (stopwatch
        stopped, the newest model shown); a stop signal ends the wait."""
        if not self.feed.is_paused():
            return
        self.publish(renderer, step, force=True)
        stopwatch.pause()
        while self.feed.is_paused() and not stop:
            self.feed.wait_while_paused(timeout=0.25)
        stopwatch.start()


def start_viewer(cfg, scene: "Scene", renderer: "Renderer", step: int, bus):
    """The live viewer on its own threads, its hookup subscribed to `bus` -> (server, hookup)."""
    from splatlab.viewer import LiveFeed, serve

    from .events import ModelUpdated, Note, StepDone

    feed = LiveFeed()
    hookup = LiveHookup(feed)
    # Publish before serving so the viewer sees the training device and the model's options.
    hookup.publish(renderer, step, force=True)
    pts = None if scene.points is None else (scene.points, scene.point_colors)
    server = serve(feed=feed, cameras=scene.cameras[scene.train_idx], points=pts,
                   port=cfg.viewer_port, background=scene.background,
                   normalization=scene.normalization, block=False)
    bus.subscribe(hookup, StepDone, ModelUpdated)
    bus.emit(Note(f"live viewer: {getattr(server, 'url', f'http://localhost:{cfg.viewer_port}')}"))
    return server, hookup


__all__ = ["LiveHookup", "start_viewer"]
