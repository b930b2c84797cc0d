"""The procedural demo scene: deterministic, self-consistent geometry, sane split."""

from __future__ import annotations

import time

import numpy as np

from splatlab.scenes import demo, load_scene


def test_demo_loads_fast_and_deterministic():
    t = time.perf_counter()
    a = load_scene("demo")
    assert time.perf_counter() - t < 5.0
    b = load_scene(None)
    assert a.format == "demo" and b.format == "demo"
    assert len(a.cameras) == 64 and len(a.test_idx) == 8 and a.test_idx[:2] == [0, 8]
    assert sorted(a.train_idx + a.test_idx) == list(range(64))
    assert np.array_equal(a.points, b.points) and np.array_equal(a.point_colors, b.point_colors)
    assert a.background == demo.BACKGROUND
    np.testing.assert_array_equal(a.normalization.matrix(), np.eye(4))
    img = a.images[5]
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, b.images[5])
    assert img.std() > 20  # textured, not flat


def _sample_surface(mesh, n, seed=0):
    """Area-uniform samples on the mesh triangles."""
    rng = np.random.default_rng(seed)
    tri = mesh.vertices[mesh.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    f = rng.choice(len(tri), n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    flip = r1 + r2 > 1
    r1, r2 = np.where(flip, 1 - r1, r1), np.where(flip, 1 - r2, r2)
    t = tri[f]
    return t[:, 0] + r1[:, None] * (t[:, 1] - t[:, 0]) + r2[:, None] * (t[:, 2] - t[:, 0])


def _closest_on_mesh_dist(points, mesh):
    """Distance from points to the nearest of dense surface samples of the mesh."""
    import torch

    v = torch.from_numpy(_sample_surface(mesh, 30000))
    p = torch.from_numpy(np.asarray(points, dtype=np.float64))
    return torch.cat([torch.cdist(p[s : s + 1024], v).min(1).values for s in range(0, len(p), 1024)]).numpy()


def test_demo_mesh_matches_rendered_depth():
    s = load_scene("demo", downscale=4)
    rgb, z = demo.render_view(s.cameras, 3, ss=1)
    h, w = z.shape
    c2w = s.cameras.camtoworlds[3].double().numpy()
    K = s.cameras.Ks()[3].double().numpy()
    vv, uu = np.mgrid[0:h, 0:w] + 0.5
    hit = np.isfinite(z)
    assert 0.3 < hit.mean() < 1.0  # some background, mostly scene
    xc = np.stack([(uu - K[0, 2]) / K[0, 0] * z, (vv - K[1, 2]) / K[1, 1] * z, z], -1)[hit]
    xw = xc @ c2w[:3, :3].T + c2w[:3, 3]
    bbox = s.mesh.vertices.max(0) - s.mesh.vertices.min(0)
    d = _closest_on_mesh_dist(xw, s.mesh)
    assert d.max() < 0.01 * np.linalg.norm(bbox)
    # and the initial points lie on the mesh too
    assert _closest_on_mesh_dist(s.points[::4], s.mesh).max() < 0.01 * np.linalg.norm(bbox)
    # missed pixels carry the background colour exactly
    bg = np.asarray(demo.BACKGROUND)
    np.testing.assert_allclose(rgb[~hit], np.broadcast_to(bg, rgb[~hit].shape))


def test_demo_cameras_look_at_the_scene():
    s = load_scene("demo")
    c2w = s.cameras.camtoworlds.double().numpy()
    # OpenCV axes: z forward points at the look-at point, y points down (world z is up)
    to_target = demo.LOOK_AT[None] - c2w[:, :3, 3]
    to_target /= np.linalg.norm(to_target, axis=-1, keepdims=True)
    np.testing.assert_allclose((c2w[:, :3, 2] * to_target).sum(-1), 1.0, atol=1e-6)
    assert (c2w[:, 2, 1] < 0).all()
    R = c2w[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-6)


def test_look_at_convention():
    """look_at gives OpenCV camera-to-world: the target is straight ahead (+z), world up is
    image up (-y), the frame is a proper rotation; a view along `up` still works."""
    from splatlab.scenes.types import look_at

    rng = np.random.default_rng(0)
    eyes = rng.normal(size=(20, 3)) * 4
    targets = rng.normal(size=(20, 3))
    c2w = look_at(eyes, targets)
    for e, t, m in zip(eyes, targets, c2w):
        R, p = m[:3, :3], m[:3, 3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
        assert abs(np.linalg.det(R) - 1) < 1e-12 and np.allclose(p, e)
        cam = R.T @ (t - e)  # target in camera coordinates
        np.testing.assert_allclose(cam[:2], 0, atol=1e-9)
        assert cam[2] > 0
        up_cam = R.T @ np.array([0.0, 0.0, 1.0])
        assert up_cam[1] < 0  # world up points to image up (-y)
    m = look_at(np.array([0.0, 0.0, 5.0]), np.zeros(3))  # looking straight down the up axis
    assert np.isfinite(m).all() and abs(np.linalg.det(m[:3, :3]) - 1) < 1e-12
