"""The live progress display: a rich bar on a terminal, plain throttled lines otherwise
(CI logs, pipes). It subscribes to training events; it never touches the model."""

from __future__ import annotations

import time
from typing import Any, Optional

from . import events as ev


def _fmt_seconds(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _fmt_stats(stats: dict) -> str:
    return ", ".join(f"{v:,} {k}" if isinstance(v, int) else f"{k} {v}" for k, v in stats.items())


class ProgressDisplay:
    def __init__(self, console=None, plain_interval_s: float = 5.0):
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False)
        self.live = self.console.is_terminal
        self.plain_interval_s = plain_interval_s
        self._progress = None
        self._task = None
        self._last_plain = 0.0
        self._start_step = 0
        self._t0 = time.monotonic()
        # (step, train_seconds) at this session's first StepDone: the ETA's rate counts only
        # this session's steps (train_seconds includes a resumed run's earlier sessions).
        self._first: Optional[tuple[int, float]] = None

    # one handler for every event type, so subscription is a single line
    def __call__(self, e: Any) -> None:
        handler = getattr(self, f"_on_{type(e).__name__}", None)
        if handler is not None:
            handler(e)

    def _on_TrainStarted(self, e: ev.TrainStarted) -> None:
        self._start_step = e.start_step
        self._t0 = time.monotonic()
        self._first = None
        verb = f"resuming at step {e.start_step:,}" if e.start_step else "training"
        self.console.print(
            f"[bold]{verb}[/] {e.method}" + (f"/{e.preset}" if e.preset else "") + f" on [bold]{e.scene}[/] "
            f"({e.num_train} train / {e.num_test} test views, {_fmt_stats(e.stats)}, {e.device})"
        )
        self.console.print(f"run folder: {e.run_dir}")
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("[bold blue]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), console=self.console, transient=False,
                refresh_per_second=4,
            )
            self._task = self._progress.add_task("train", total=e.total_steps, completed=e.start_step,
                                                 stats="starting...")
            self._progress.start()

    def _stats(self, e: ev.StepDone) -> str:
        if self._first is None:
            self._first = (e.step, e.train_seconds)
        done, seconds = e.step - self._first[0], e.train_seconds - self._first[1]
        # Until a second report, the window's own rate (never the whole run's, when resumed).
        rate = done / seconds if done > 0 and seconds > 0 else e.steps_per_sec
        eta = (e.total_steps - e.step) / rate if rate == rate and rate > 0 else float("nan")
        return (f"loss {e.loss:.4f}  PSNR {e.psnr:5.2f}  {_fmt_stats(e.stats)}  "
                f"{e.steps_per_sec:6.1f} steps/s  elapsed {_fmt_seconds(time.monotonic() - self._t0)}  "
                f"ETA {_fmt_seconds(eta)}")

    def _on_StepDone(self, e: ev.StepDone) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=e.step, stats=self._stats(e))
            if e.step >= e.total_steps:  # leave the final bar once, above the eval and "done" lines
                self.close()
            return
        now = time.monotonic()
        if now - self._last_plain >= self.plain_interval_s or e.step == e.total_steps:
            self._last_plain = now
            self.console.print(f"step {e.step:>7,}/{e.total_steps:,}  {self._stats(e)}")

    def _print(self, text: str) -> None:
        (self._progress.console if self._progress is not None else self.console).print(text)

    def _on_RefineDone(self, e: ev.RefineDone) -> None:
        pass  # the model's stats show on the bar; the log keeps every refine

    def _on_EvalDone(self, e: ev.EvalDone) -> None:
        lp = "unavailable" if e.lpips is None else f"{e.lpips:.4f}"
        self._print(f"eval @ {e.step:,}: PSNR {e.psnr:.3f}  SSIM {e.ssim:.4f}  LPIPS {lp}  ({e.num_views} views)")

    def _on_CheckpointSaved(self, e: ev.CheckpointSaved) -> None:
        if not self.live:
            self._print(f"checkpoint: {e.path}")

    def _on_Note(self, e: ev.Note) -> None:
        self._print(f"[yellow]warning:[/] {e.text}" if e.level == "warning" else e.text)

    def _on_TrainFinished(self, e: ev.TrainFinished) -> None:
        self.close()
        if e.message and e.reason != "diverged":  # the CLI prints that error itself
            self.console.print(e.message)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
