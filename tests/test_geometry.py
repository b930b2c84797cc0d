"""scenes/geometry.py against brute force in float64: quaternions (Rodrigues), the
covariance (and its rasterizer twin), fov/focal, the scene's up, the normalization on
points and camera poses, axis flips and the one box type."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatlab.scenes.geometry import (
    OPENCV_TO_OPENGL, OPENGL_TO_OPENCV, Box, Normalization, covariances, focal_to_fov, fov_to_focal,
    look_at, quat_multiply, quat_to_rotmat, rotmat_to_quat, up_direction,
)


def rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def random_rotations(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(n, 3))
    angles = rng.uniform(0, math.pi, n)
    angles[:4] = [0.0, math.pi, math.pi - 1e-7, 1e-9]  # the branches' edges
    return axes, angles, np.stack([rodrigues(a, t) for a, t in zip(axes, angles)])


def test_quat_to_rotmat_matches_rodrigues_numpy_and_torch():
    axes, angles, R = random_rotations(64)
    k = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    q = np.concatenate([np.cos(angles / 2)[:, None], np.sin(angles / 2)[:, None] * k], 1)
    scale = np.random.default_rng(1).uniform(0.1, 10, (64, 1))  # any norm
    np.testing.assert_allclose(quat_to_rotmat(q * scale), R, atol=1e-12)
    got = quat_to_rotmat(torch.as_tensor(q * scale))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), R, atol=1e-12)
    assert quat_to_rotmat(q.reshape(8, 8, 4)).shape == (8, 8, 3, 3)


def test_rotmat_to_quat_round_trip_batched_and_single():
    _, _, R = random_rotations(64, seed=2)
    q = rotmat_to_quat(R)
    assert q.shape == (64, 4)
    assert (q[:, 0] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quat_to_rotmat(q), R, atol=1e-6)  # the pi - 1e-7 case limits this
    np.testing.assert_allclose(quat_to_rotmat(rotmat_to_quat(R[10])), R[10], atol=1e-12)
    assert rotmat_to_quat(R[10]).shape == (4,)


def test_quat_multiply_composes_rotations():
    rng = np.random.default_rng(3)
    a, b = torch.as_tensor(rng.normal(size=(32, 4))), torch.as_tensor(rng.normal(size=(32, 4)))
    lhs = quat_to_rotmat(quat_multiply(a, b)).numpy()
    rhs = quat_to_rotmat(a).numpy() @ quat_to_rotmat(b).numpy()
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)


def test_covariances_brute_force_and_the_rasterizer_twin():
    from splatlab.rasterizer.reference import covariance_3d

    rng = np.random.default_rng(4)
    quats, scales = rng.normal(size=(40, 4)), rng.uniform(0.01, 2.0, (40, 3))
    want = np.stack([quat_to_rotmat(q) @ np.diag(s**2) @ quat_to_rotmat(q).T for q, s in zip(quats, scales)])
    np.testing.assert_allclose(covariances(quats, scales), want, rtol=1e-12, atol=1e-14)
    t = covariances(torch.as_tensor(quats), torch.as_tensor(scales))
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-12, atol=1e-14)
    # The kernel side keeps its own copy (rasterizer imports nothing of ours): same numbers.
    twin = covariance_3d(torch.as_tensor(quats), torch.as_tensor(scales))
    np.testing.assert_allclose(twin.numpy(), want, rtol=1e-10, atol=1e-12)


def test_fov_and_focal():
    assert fov_to_focal(math.pi / 2, 100) == pytest.approx(50.0, abs=1e-12)
    for fov in (0.1, 0.8, 2.5):
        assert focal_to_fov(fov_to_focal(fov, 480), 480) == pytest.approx(fov, abs=1e-12)
    assert focal_to_fov(50.0, 100) == pytest.approx(math.pi / 2)


def test_up_direction():
    eyes = np.array([[3.0, 0, 1], [0, 3.0, 1], [-3.0, 0, 1]])
    c2w = look_at(eyes, np.zeros(3), up=(0.0, 0.0, 1.0))
    up = up_direction(c2w)
    # Cameras tilted down at the centre: their mean up is in the +z half, tilted no more than they are.
    assert up[2] > 0.9 and np.linalg.norm(up) == pytest.approx(1.0)
    np.testing.assert_allclose(up_direction(torch.as_tensor(c2w).float()), up, atol=1e-6)
    rolled = c2w[:2].copy()
    rolled[1, :3, :3] = c2w[0, :3, :3] @ np.diag([-1.0, -1.0, 1.0])  # camera 0 turned upside down
    assert up_direction(rolled) is None
    assert up_direction(np.zeros((0, 4, 4))) is None


def test_opencv_opengl_flip():
    np.testing.assert_array_equal(OPENCV_TO_OPENGL @ OPENGL_TO_OPENCV, np.eye(4))
    c2w = look_at(np.array([0.0, -5.0, 0.0]), np.zeros(3))
    gl = c2w @ OPENCV_TO_OPENGL
    # OpenGL looks down its -z and has +y up: the same direction and the same world up.
    np.testing.assert_allclose(-gl[:3, 2], c2w[:3, 2])
    np.testing.assert_allclose(gl[:3, 1], -c2w[:3, 1])
    np.testing.assert_allclose(gl[:3, 1], [0, 0, 1], atol=1e-12)


def _norm(seed=5) -> Normalization:
    _, _, R = random_rotations(8, seed)
    return Normalization(scale=0.37, translation=np.array([0.3, -1.2, 2.0]), rotation=R[5])


def test_normalization_points_and_inverse():
    n = _norm()
    x = np.random.default_rng(6).normal(size=(20, 3)) * 10
    y = n.apply_points(x)
    np.testing.assert_allclose(y, (n.matrix() @ np.c_[x, np.ones(20)].T).T[:, :3], atol=1e-12)
    np.testing.assert_allclose(n.invert_points(y), x, atol=1e-10)
    np.testing.assert_allclose(n.inverse().apply_points(y), x, atol=1e-10)
    np.testing.assert_allclose(n.inverse().matrix() @ n.matrix(), np.eye(4), atol=1e-12)


def test_normalization_of_camera_poses_moves_what_they_see():
    """A point p in camera coordinates seen by c2w lands, after normalizing the pose, where
    the normalized world point is, at depth scaled by s (the axes stay orthonormal)."""
    n = _norm()
    rng = np.random.default_rng(7)
    _, _, R = random_rotations(6, seed=8)
    c2w = np.tile(np.eye(4), (6, 1, 1))
    c2w[:, :3, :3], c2w[:, :3, 3] = R, rng.normal(size=(6, 3)) * 4
    p = rng.normal(size=(6, 3))
    world = np.einsum("cij,cj->ci", c2w[:, :3, :3], p) + c2w[:, :3, 3]
    c2w_n = n.apply_c2w(c2w)
    seen = np.einsum("cij,cj->ci", c2w_n[:, :3, :3], n.scale * p) + c2w_n[:, :3, 3]
    np.testing.assert_allclose(seen, n.apply_points(world), atol=1e-10)
    np.testing.assert_allclose(np.einsum("cji,cjk->cik", c2w_n[:, :3, :3], c2w_n[:, :3, :3]),
                               np.tile(np.eye(3), (6, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(n.invert_c2w(c2w_n), c2w, atol=1e-10)
    assert not np.shares_memory(c2w_n, c2w)


def test_box_mask_corners_and_frames():
    box = Box((-0.5, 0.0, -1.0), (0.5, 2.0, 1.0))
    assert box.enabled and box == Box([-0.5, 0, -1], np.array([0.5, 2, 1.0])) and len({box, Box(box.lo, box.hi)}) == 1
    pts = torch.as_tensor(np.random.default_rng(9).uniform(-2, 3, (500, 3)))
    want = [all(box.lo[k] <= float(p[k]) <= box.hi[k] for k in range(3)) for p in pts]
    assert box.mask(pts).tolist() == want
    assert box.mask(pts.float()).tolist() == want
    corners = box.corners()
    assert corners.shape == (8, 3) and {tuple(c) for c in corners} == {
        (x, y, z) for x in (-0.5, 0.5) for y in (0.0, 2.0) for z in (-1.0, 1.0)}
    n = Normalization(scale=2.0, translation=np.array([1.0, 0.0, -1.0]))
    orig = n.invert_box(box)
    assert orig.lo == (-0.75, 0.0, 0.0) and orig.hi == (-0.25, 1.0, 1.0)  # (x - t) / s per corner
    assert n.apply_box(orig) == box
    assert Box.around(corners) == box
    with pytest.raises(ValueError):
        Box((0, 0), (1, 1, 1))
