"""`LiveFeed`: the one object a training loop and the viewer share.

The trainer calls `publish(...)` (from its own thread, whenever it likes) and checks
`is_paused()` / `wait_while_paused()`; the viewer's render workers read `latest()`.
Nothing here blocks the trainer: `publish` only swaps a reference under a lock, so a
slow or absent browser never slows training down.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

from torch import Tensor

SPLAT_KEYS = ("means", "quats", "scales", "opacities", "sh")


class LiveFeed:
    """Thread-safe holder of the newest published splats, training stats and pause state.

    splats are *activated*, detached tensors on the training device: means N 3, quats N 4
    (wxyz), scales N 3 (not log), opacities N (in [0, 1]), sh N K 3. The viewer treats
    them as read-only and never copies them to the host unless a client needs them.
    stats is a flat dict of numbers; the viewer shows "step", "loss", "steps_per_s" (and
    "num_gaussians" if given) and any other keys as-is.
    """

    def __init__(self, min_interval_s: float = 0.1):
        self._lock = threading.Lock()
        self._latest: Optional[tuple[dict[str, Tensor], int, dict[str, Any], int]] = None
        self._version = 0
        self._last_publish = float("-inf")
        self._running = threading.Event()
        self._running.set()
        # `due()` lets a trainer skip building activated tensors more often than this.
        self.min_interval_s = float(min_interval_s)

    # ---- trainer side ---------------------------------------------------------------
    def publish(self, splats: dict[str, Tensor], sh_degree: int, stats: dict[str, Any]) -> None:
        """Make `splats` (activated, detached; see class doc) the newest version. O(1)."""
        missing = [k for k in SPLAT_KEYS if k not in splats]
        if missing:
            raise KeyError(f"LiveFeed.publish: splats lack {missing}")
        with self._lock:
            self._version += 1
            self._latest = (dict(splats), int(sh_degree), dict(stats), self._version)
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
    def latest(self) -> Optional[tuple[dict[str, Tensor], int, dict[str, Any], int]]:
        """(splats, sh_degree, stats, version) of the newest publish, or None before any."""
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


__all__ = ["LiveFeed", "SPLAT_KEYS"]
