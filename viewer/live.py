"""`LiveFeed`: the one object a training loop and the viewer share.

The trainer calls `publish(renderer, stats)` with a detached, render-ready snapshot
(`Renderer.live_copy()`, from its own thread, whenever it likes) and checks `is_paused()`
between steps; the viewer's render workers read `latest()` and render it as is.
Nothing here blocks the trainer: `publish` only swaps a reference under a lock, so a
slow or absent browser never slows training down.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional



class LiveFeed:
    """Thread-safe holder of the newest published renderer snapshot, training stats and
    pause state.

    The snapshot is a `Renderer` on the training device that training no longer writes
    to; the viewer treats it as read-only. stats is a flat dict; the viewer shows "step",
    "loss", "steps_per_s" and any other keys (the renderer's own stats) as-is.
    """

    def __init__(self, min_interval_s: float = 0.1):
        self._lock = threading.Lock()
        self._latest: Optional[tuple[Any, dict[str, Any], int]] = None
        self._version = 0
        self._last_publish = float("-inf")
        self._running = threading.Event()
        self._running.set()
        # `due()` lets a trainer skip taking snapshots more often than this.
        self.min_interval_s = float(min_interval_s)

    # ---- trainer side ---------------------------------------------------------------
    def publish(self, renderer: Any, stats: dict[str, Any]) -> None:
        """Make `renderer` (a detached snapshot, see class doc) the newest version. O(1)."""
        if not hasattr(renderer, "render"):
            raise TypeError(f"LiveFeed.publish: {type(renderer).__name__} is not a renderer")
        with self._lock:
            self._version += 1
            self._latest = (renderer, dict(stats), self._version)
            self._last_publish = time.monotonic()

    def due(self) -> bool:
        """True when at least `min_interval_s` passed since the last publish (a hint only)."""
        return time.monotonic() - self._last_publish >= self.min_interval_s

    def is_paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self, timeout: Optional[float] = None) -> bool:
        """Block while paused (at most `timeout` s). Returns True when running again."""
        return self._running.wait(timeout)

    # ---- viewer side ----------------------------------------------------------------
    def latest(self) -> Optional[tuple[Any, dict[str, Any], int]]:
        """(renderer, stats, version) of the newest publish, or None before any."""
        with self._lock:
            return self._latest

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()


__all__ = ["LiveFeed"]
