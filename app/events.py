"""Typed training events and a tiny synchronous bus.

The training loop emits; the progress display, the JSONL log and the live viewer
subscribe. Handlers run inline, in subscription order, on the training thread, so a
handler must be cheap (the viewer adapter throttles itself) and never blocks (the
viewer's pause button is a flag the loop checks between steps).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class TrainStarted:
    run_dir: str
    scene: str
    method: str
    preset: Optional[str]
    device: str
    start_step: int  # > 0 when resuming
    total_steps: int
    num_train: int
    num_test: int
    stats: dict  # the renderer's stats(), e.g. {"Gaussians": 100000}


@dataclass(frozen=True)
class StepDone:
    """Emitted every `log_every` steps (the loop reads the GPU back only then), with
    averages over the steps since the last one."""

    step: int  # steps completed
    total_steps: int
    loss: float
    psnr: float  # train-view PSNR, averaged over the window
    stats: dict  # the renderer's stats(), e.g. {"Gaussians": 100000}
    lrs: dict  # learning rate of each parameter group at this step
    steps_per_sec: float
    train_seconds: float  # so far, excluding evaluation, checkpoints and pauses


@dataclass(frozen=True)
class RefineDone:
    """The model's structure changed (densified, pruned, relocated)."""

    step: int
    note: str  # the renderer's words, e.g. "12,000 -> 13,500 Gaussians"


@dataclass(frozen=True)
class EvalDone:
    step: int
    psnr: float
    ssim: float
    lpips: Optional[float]
    num_views: int


@dataclass(frozen=True)
class ModelUpdated:
    """A step changed the model; not logged. `renderer` is the live renderer: read it under
    torch.no_grad and keep only `renderer.live_copy()`."""

    step: int
    renderer: Any


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: str


@dataclass(frozen=True)
class TrainFinished:
    step: int
    run_dir: str
    train_seconds: float
    reason: str  # "done" | "interrupted" | "diverged"
    message: str = ""


@dataclass(frozen=True)
class Note:
    """A one-line message for the user (a warning, a choice the loop made)."""

    text: str
    level: str = "info"  # "info" | "warning"


# Events not written to log.jsonl (they carry live objects).
UNLOGGED = (ModelUpdated,)

Handler = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[Optional[type], list[Handler]] = defaultdict(list)

    def subscribe(self, handler: Handler, *event_types: type) -> None:
        """Call `handler(event)` for the given event types (all events when none given)."""
        for t in event_types or (None,):
            self._handlers[t].append(handler)

    def wants(self, event_type: type) -> bool:
        """Whether anyone listens (lets the loop skip building costly events)."""
        return bool(self._handlers.get(event_type) or self._handlers.get(None))

    def emit(self, event: Any) -> None:
        for h in self._handlers.get(type(event), ()):
            h(event)
        for h in self._handlers.get(None, ()):
            h(event)


def event_to_json(event: Any) -> dict:
    return {"event": type(event).__name__, **dataclasses.asdict(event)}


class JsonlLogger:
    """Appends every loggable event to `path` as one JSON object per line."""

    def __init__(self, path) -> None:
        import json
        import time

        self._json, self._time = json, time
        self._f = open(path, "a", buffering=1)

    def __call__(self, event: Any) -> None:
        if isinstance(event, UNLOGGED) or self._f.closed:
            return
        rec = {"time": round(self._time.time(), 3), **event_to_json(event)}
        self._f.write(self._json.dumps(rec) + "\n")

    def close(self) -> None:
        self._f.close()
