"""Marching-cubes meshes of a density field (the NeRF mesh export's core), on an analytic
field whose surface is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("open3d", reason="mesh export needs open3d: pip install splatlab[mesh]")
pytest.importorskip("mcubes", reason="NeRF mesh export needs PyMCubes: pip install splatlab[mesh]")

from splatlab.app.exporters.mesh import chamfer_distance, default_density_threshold, marching_cubes_mesh  # noqa: E402


class Ball:
    """A soft ball of radius 0.6 at c: density 100 inside, 0 outside (threshold crosses at r);
    colour red seen from +x, blue from elsewhere (to check the view direction)."""

    c = np.array([0.1, -0.2, 0.3])

    def mesh_box(self):
        return self.c - 1.0, self.c + 1.0

    def density_at(self, x):
        r = (x.double() - torch.from_numpy(self.c)).norm(dim=-1)
        return (100.0 * torch.sigmoid((0.6 - r) * 200.0)).float()

    def color_at(self, x, normals):
        red = (-normals[:, 0] < -0.5).float()  # looking along -x: the +x side
        return torch.stack([red, torch.zeros_like(red), 1 - red], -1)


def sphere(radius: float, center: np.ndarray, n: int = 80):
    import open3d as o3d

    m = o3d.geometry.TriangleMesh.create_sphere(radius, resolution=n)
    return np.asarray(m.vertices) + center, np.asarray(m.triangles)


def test_marching_cubes_recovers_a_ball():
    ball = Ball()
    mesh = marching_cubes_mesh(ball, resolution=64, threshold=50.0)
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    assert len(f) > 1000
    r = np.linalg.norm(v - ball.c, axis=-1)
    assert abs(r.mean() - 0.6) < 0.01 and r.std() < 0.01
    gv, gf = sphere(0.6, ball.c)
    cd = chamfer_distance(v, f, gv, gf, samples=20_000)
    assert cd < 0.005 * 2 * np.sqrt(3)  # 0.5% of the box diagonal
    colors = np.asarray(mesh.vertex_colors)
    nx = (v - ball.c)[:, 0] / r  # the true outward normal's x
    assert colors[nx > 0.6, 0].mean() > 0.95 and colors[nx < 0.4, 2].mean() > 0.95


def test_default_threshold_scales_with_the_scene():
    a = default_density_threshold(np.zeros(3), np.ones(3))
    b = default_density_threshold(np.zeros(3), 10 * np.ones(3))
    assert a == pytest.approx(10 * b)
    # Half opaque over 2% of the diagonal.
    assert 1 - np.exp(-a * 0.02 * np.sqrt(3)) == pytest.approx(0.5)
