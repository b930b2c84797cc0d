"""A minimal headless viser client (for the tests and benchmarks/viewer_bench.py; not shipped): it sends camera
messages the way the browser does and counts the background frames it gets back.

Wire format (viser 1.1, infra/_infra.py): the browser sends one msgpack dict per message
({"type": "ViewerCameraMessage", ...}); the server sends batches as
[u64 inner length][u64 compressed length][zstd(msgpack {"messages": [...], ...})][binary
buffers], where array fields are placeholders pointing into the trailing buffers.
"""

from __future__ import annotations

import time
from typing import Optional

import msgspec.msgpack
import numpy as np
import zstandard


def camera_message(wxyz, position, fov: float, width: int, height: int,
                   look_at=None, up=(0.0, 0.0, 1.0)) -> bytes:
    wxyz = [float(v) for v in wxyz]
    position = [float(v) for v in position]
    if look_at is None:
        look_at = position  # only used by the browser's orbit controls
    return msgspec.msgpack.encode({
        "type": "ViewerCameraMessage", "wxyz": wxyz, "position": position, "fov": float(fov),
        "near": 0.01, "far": 1000.0, "image_height": int(height), "image_width": int(width),
        "look_at": [float(v) for v in look_at], "up_direction": [float(v) for v in up],
    })


def decode_batch(raw: bytes) -> list[dict]:
    inner_len = int.from_bytes(raw[0:8], "little")
    comp_len = int.from_bytes(raw[8:16], "little")
    inner = zstandard.ZstdDecompressor().decompress(raw[16 : 16 + comp_len], max_output_size=inner_len)
    return list(msgspec.msgpack.decode(inner).get("messages", ()))


class ViserTestClient:
    """Connects to ws://host:port with viser's subprotocol; `frames` counts background images.
    With `record_sizes`, `sizes` lists each frame's (W, H) and `last_image` holds the newest
    encoded frame."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, record_sizes: bool = False):
        import viser
        from websockets.sync.client import connect

        self.ws = connect(f"ws://{host}:{port}", subprotocols=[f"viser-v{viser.__version__}"],
                          open_timeout=timeout, max_size=None)
        self.frames = 0
        self.frame_times: list[float] = []
        self.record_sizes = record_sizes
        self.sizes: list[tuple[int, int]] = []
        self.last_image: Optional[bytes] = None

    def send_camera(self, wxyz, position, fov: float, width: int, height: int, **kw) -> None:
        self.ws.send(camera_message(wxyz, position, fov, width, height, **kw))

    def send_raw(self, payload: dict) -> None:
        self.ws.send(msgspec.msgpack.encode(payload))

    def pump(self, seconds: float) -> int:
        """Receive for `seconds`; returns background frames received in that time."""
        end, got = time.monotonic() + seconds, 0
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return got
            try:
                raw = self.ws.recv(timeout=left)
            except TimeoutError:
                return got
            if not isinstance(raw, bytes):
                continue
            for m in decode_batch(raw):
                # The connect-time replay holds an empty background (rgb_data None).
                if m.get("type") == "BackgroundImageMessage" and m.get("rgb_data") is not None:
                    got += 1
                    self.frames += 1
                    self.frame_times.append(time.monotonic())
                    if self.record_sizes:
                        import io

                        from PIL import Image

                        self.last_image = bytes(m["rgb_data"])
                        self.sizes.append(Image.open(io.BytesIO(self.last_image)).size)

    def wait_frame(self, timeout: float) -> Optional[float]:
        """Seconds until the next background frame, or None on timeout."""
        t0 = time.monotonic()
        end = t0 + timeout
        while time.monotonic() < end:
            if self.pump(min(0.1, end - time.monotonic())):
                return time.monotonic() - t0
        return None

    def close(self) -> None:
        self.ws.close()


def look_at_wxyz(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """wxyz of an OpenCV camera at `eye` looking at `target` (+z forward, -y up)."""
    from splatlab.scenes.geometry import rotmat_to_quat
    from splatlab.scenes.types import look_at

    return rotmat_to_quat(look_at(eye, target, up)[:3, :3])


__all__ = ["ViserTestClient", "camera_message", "decode_batch", "look_at_wxyz"]
