"""Thin re-exports for code written before `scenes.geometry` and `scenes.files` existed:
the one atomic write and the quaternion helpers live there now (scenes is the lowest
layer, so renderers, viewer and app all reach them). New code imports them from scenes."""

from __future__ import annotations

from splatlab.scenes.files import atomic_write_bytes
from splatlab.scenes.geometry import box_corners, quat_to_rotmat, rotmat_to_quat

__all__ = ["atomic_write_bytes", "box_corners", "quat_to_rotmat", "rotmat_to_quat"]
