"""`splatlab export --format mesh`: TSDF fusion of rendered depth, measured against the demo's
ground-truth mesh (Chamfer <= 1 % of its bounding-box diagonal). The model here is built
on the GT surface (flat Gaussians on sampled surface points), so the test is quick and
measures the fusion path; the figure for a trained demo run is in the export report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splatlab.app.cli import main
from splatlab.renderers.splat import SplatModel
from splatlab.scenes.types import Normalization

from test_export_support import demo_scene, random_rotation, write_run

o3d = pytest.importorskip("open3d", reason="mesh export needs open3d (pip install 'splatlab[mesh]')")


def surface_model(mesh, n: int, seed: int = 0) -> SplatModel:
    """Flat, opaque Gaussians on area-weighted samples of a triangle mesh, facing its normals."""
    from splatlab.scenes.geometry import rotmat_to_quat

    rng = np.random.default_rng(seed)
    v, f = mesh.vertices, mesh.faces
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=-1)
    tri = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    pts = (1 - s)[:, None] * a[tri] + (s * (1 - r2))[:, None] * b[tri] + (s * r2)[:, None] * c[tri]
    nrm = cross[tri] / np.linalg.norm(cross[tri], axis=-1, keepdims=True)
    t1 = np.cross(nrm, [0.0, 0.0, 1.0])
    t1[np.linalg.norm(t1, axis=-1) < 1e-6] = [1.0, 0.0, 0.0]
    t1 /= np.linalg.norm(t1, axis=-1, keepdims=True)
    t2 = np.cross(nrm, t1)
    quats = np.stack([rotmat_to_quat(np.stack([t1[i], t2[i], nrm[i]], 1)) for i in range(n)])
    spacing = np.sqrt(area.sum() / n)
    model = SplatModel.from_points(torch.as_tensor(pts).float(), torch.full((n, 3), 0.6), sh_degree=0,
                                   init_opacity=0.95)
    with torch.no_grad():
        model.splats["quats"].copy_(torch.as_tensor(quats).float())
        model.splats["scales"].copy_(torch.log(torch.tensor([0.4 * spacing, 0.4 * spacing, 0.02 * spacing])).expand(n, 3))
    return model


def test_mesh_export_matches_demo_ground_truth(tmp_path):
    from splatlab.app.exporters.mesh import chamfer_distance

    scene = demo_scene(width=64, height=48, num_views=24, num_points=100)
    gt = scene.mesh
    # a non-identity normalization: the export must come back to original coordinates
    norm = Normalization(scale=1.7, translation=np.array([0.2, -0.4, 0.1]), rotation=random_rotation(2))
    run = write_run(tmp_path / "run", surface_model(gt, 16_000), scene, normalization=norm)
    out = tmp_path / "mesh.ply"
    diag = float(np.linalg.norm(gt.vertices.max(0) - gt.vertices.min(0)))
    # voxel diag/256 (original units) keeps this CPU test quick; the default is diag/512
    assert main(["export", str(run), "--format", "mesh", "--output", str(out),
                 "--voxel-size", str(diag / 256 / norm.scale)]) == 0
    mesh = o3d.io.read_triangle_mesh(str(out))
    assert len(mesh.triangles) > 1000 and mesh.has_vertex_colors()
    verts = norm.apply_points(np.asarray(mesh.vertices))  # compare in the GT's (normalized) frame
    cd = chamfer_distance(verts, np.asarray(mesh.triangles), gt.vertices, gt.faces, samples=50_000)
    print(f"Chamfer {cd:.4f} = {100 * cd / diag:.2f} % of the GT bbox diagonal {diag:.3f}")
    assert cd <= 0.01 * diag


def test_mesh_bad_inputs(tmp_path, capsys):
    scene = demo_scene(width=32, height=24, num_views=4, num_points=200)
    model = SplatModel.from_points(torch.as_tensor(scene.points).float(), torch.rand(200, 3), sh_degree=0)
    run = write_run(tmp_path / "run", model, scene)
    assert main(["export", str(run), "--format", "mesh", "--output", str(tmp_path / "m.xyz")]) == 2
    assert "suffix must be" in capsys.readouterr().err
    from splatlab.renderers.splat.io import write_ply

    write_ply(model, tmp_path / "bare.ply")
    assert main(["export", str(tmp_path / "bare.ply"), "--format", "mesh", "--output", str(tmp_path / "m.ply")]) == 2
    assert "needs the run's cameras" in capsys.readouterr().err
    assert not (tmp_path / "m.ply").exists()


def test_missing_open3d_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_open3d(name, *a, **kw):
        if name == "open3d" or name.startswith("open3d."):
            raise ImportError("No module named 'open3d'")
        return real(name, *a, **kw)

    scene = demo_scene(width=32, height=24, num_views=4, num_points=100)
    run = write_run(tmp_path / "run", SplatModel.from_points(torch.as_tensor(scene.points).float(),
                                                             torch.rand(100, 3), sh_degree=0), scene)
    monkeypatch.setattr(builtins, "__import__", no_open3d)
    assert main(["export", str(run), "--format", "mesh", "--output", str(tmp_path / "m.ply")]) == 2
    err = capsys.readouterr().err
    assert "install splatlab[mesh]" in err and err.count("\n") == 1
