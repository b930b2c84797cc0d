"""MP4/MOV/MKV/WebM writing through the ffmpeg binary that imageio-ffmpeg ships.

imageio's writer never looks at ffmpeg's exit status, so a full disk ("No space left on
device") used to pass as success. Here ffmpeg runs as our own child: its stderr is kept,
its exit status and the file system's answer (fsync) are checked, and only then does the
finished file replace the real name. ffmpeg itself creates the temporary file, so its mode
follows the umask like any file the user's tools create.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserError


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise UserError("video output needs imageio-ffmpeg: pip install 'splatlab[video]'") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


class VideoWriter:
    """`with VideoWriter(out, W, H, fps) as w: w.write(frame)` writes H.264 into a temporary
    file beside `out` and renames it over `out` only when ffmpeg and the disk both succeeded;
    on any failure or interruption the temporary file is removed and `out` is untouched."""

    def __init__(self, out: Path, width: int, height: int, fps: float):
        self.out = Path(out)
        self.size = (int(width), int(height))
        self.fps = float(fps)
        self.tmp = self.out.parent / f".{self.out.stem}.r.{secrets.token_hex(4)}{self.out.suffix}"
        self.proc = None
        self.log = None

    def __enter__(self) -> "VideoWriter":
        w, h = self.size
        # CRF 10 and yuv420p: what imageio's quality=8 gave, playable everywhere.
        cmd = [_ffmpeg_exe(), "-nostdin", "-v", "error", "-n",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{self.fps:g}", "-i", "-",
               "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "10", str(self.tmp)]
        self.log = tempfile.TemporaryFile()
        # restore_signals=False: ffmpeg keeps our signal dispositions, so a file-size limit
        # (SIGXFSZ ignored) fails its write with EFBIG, reported like ENOSPC, not a kill.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log,
                                     restore_signals=False)
        return self

    def write(self, frame: np.ndarray) -> None:
        """One uint8 H W 3 frame."""
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        except (BrokenPipeError, OSError):
            # ffmpeg has exited (disk full, bad size, ...): its own message says why.
            self._fail()

    def _ffmpeg_message(self) -> str:
        self.log.seek(0)
        lines = [ln.strip() for ln in self.log.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else "no message"

    def _fail(self):
        self.proc.stdin.close() if not self.proc.stdin.closed else None
        code = self.proc.wait()
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"stopped with status {code}"
        raise UserError(f"cannot write the video: ffmpeg {how} ({self._ffmpeg_message()})", self.out)

    def _finish(self) -> None:
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        if self.proc.wait() != 0:
            self._fail()
        try:
            # Anything the kernel has not yet written (a full disk on NFS) fails here.
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if os.path.getsize(self.tmp) == 0:
                raise OSError("ffmpeg wrote an empty file")
            os.replace(self.tmp, self.out)
        except OSError as e:
            raise UserError(f"cannot write the video ({e.strerror or e})", self.out) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
            if os.path.lexists(self.tmp):
                os.unlink(self.tmp)


__all__ = ["VideoWriter"]
