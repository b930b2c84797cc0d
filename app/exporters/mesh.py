"""`--format mesh`: a coloured triangle mesh by TSDF fusion of rendered depth and colour.

Each training camera renders the model ("RGB+ED": colour and expected depth), pixels less
opaque than `--min-alpha` are left empty, and open3d's `ScalableTSDFVolume` fuses them.
Expected depth, not median: it is what the rasterizer computes, and its one weakness
(a blend of front and back surfaces at silhouettes) sits exactly on the low-alpha pixels
we drop; TSDF averaging over many views smooths what is left. Fusion runs in the
normalized frame (where the automatic voxel size is computed); the mesh is then mapped to
original coordinates, small disconnected pieces are removed, and the crop box applies.

Needs open3d 0.19.0 (`pip install "splatlab[mesh]"`): 0.20.0's ScalableTSDFVolume returns
an empty mesh. open3d needs the system library libusb-1.0 (Debian: libusb-1.0-0) to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from splatlab.scenes.files import atomic_path

from ..errors import UserError
from .common import ExportArgs, check_output, crop_box

HELP = "coloured triangle mesh by TSDF fusion of rendered depth (needs splatlab[mesh])"
SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb")


@dataclass
class Options(ExportArgs):
    """Triangle mesh with vertex colours, TSDF-fused from renders at the run's cameras
    (.ply/.obj/.off/.stl via open3d, .glb via trimesh). Original coordinates."""

    voxel_size: Optional[float] = None
    """TSDF voxel edge in original units (default: scene bounding-box diagonal / 512)."""
    sdf_trunc: Optional[float] = None
    """TSDF truncation distance in original units (default: 4 voxels)."""
    min_alpha: float = 0.5
    """Pixels rendered less opaque than this carry no depth."""
    min_component: float = 0.05
    """Drop connected pieces with fewer triangles than this fraction of the largest piece."""
    resolution_scale: float = 1.0
    """Render at this fraction (or multiple) of the cameras' resolution."""
    cameras: Literal["train", "all"] = "train"
    """Which of the run's cameras to fuse."""


def _open3d():
    try:
        import open3d as o3d
    except ImportError as e:
        raise UserError(f"mesh export needs open3d: install splatlab[mesh] ({e})") from None
    return o3d


def scene_bounds(model, min_opacity: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Robust box (1st..99th percentile) of the centres of opaque Gaussians, model frame."""
    import torch

    m = model.means.detach()
    keep = model.opacities.detach() >= min_opacity
    if int(keep.sum()) >= 10:
        m = m[keep]
    q = torch.quantile(m.double(), torch.tensor([0.01, 0.99], dtype=torch.float64), dim=0).numpy()
    return q[0], q[1]


def fuse_tsdf(model, cameras, *, voxel_size: float, sdf_trunc: float, min_alpha: float = 0.5,
              background=None, progress=None):
    """TSDF-fuse renders of `model` at `cameras` (same frame). Returns an open3d
    TriangleMesh with vertex colours, in that frame."""
    import torch

    o3d = _open3d()
    integ = o3d.pipelines.integration
    vol = integ.ScalableTSDFVolume(voxel_length=float(voxel_size), sdf_trunc=float(sdf_trunc),
                                   color_type=integ.TSDFVolumeColorType.RGB8)
    bg = None if background is None else torch.tensor([list(background)], dtype=torch.float32)
    viewmats = cameras.viewmats()
    Ks = cameras.Ks()
    for i in range(len(cameras)):
        w, h = int(cameras.width[i]), int(cameras.height[i])
        with torch.no_grad():
            out = model.render(viewmats[i : i + 1], Ks[i : i + 1], w, h, render_mode="RGB+ED",
                               backgrounds=bg)
        rgb = (out.rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        depth = out.depths[0, ..., 0].float().cpu().numpy().copy()
        alpha = out.alphas[0, ..., 0].float().cpu().numpy()
        depth[(alpha < min_alpha) | ~np.isfinite(depth) | (depth <= 0)] = 0.0
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(rgb)), o3d.geometry.Image(np.ascontiguousarray(depth)),
            depth_scale=1.0, depth_trunc=float(np.max(depth)) + 1.0, convert_rgb_to_intensity=False)
        intr = o3d.camera.PinholeCameraIntrinsic(w, h, float(cameras.fx[i]), float(cameras.fy[i]),
                                                 float(cameras.cx[i]), float(cameras.cy[i]))
        vol.integrate(rgbd, intr, viewmats[i].double().cpu().numpy())
        if progress is not None:
            progress()
    return vol.extract_triangle_mesh()


def remove_small_components(mesh, min_fraction: float):
    """Drop connected pieces with fewer than `min_fraction` of the largest piece's triangles."""
    if len(mesh.triangles) == 0 or min_fraction <= 0:
        return mesh
    clusters, counts, _ = mesh.cluster_connected_triangles()
    clusters, counts = np.asarray(clusters), np.asarray(counts)
    mesh.remove_triangles_by_mask(counts[clusters] < min_fraction * counts.max())
    mesh.remove_unreferenced_vertices()
    return mesh


def chamfer_distance(verts_a: np.ndarray, faces_a: np.ndarray, verts_b: np.ndarray,
                     faces_b: np.ndarray, samples: int = 200_000, seed: int = 0) -> float:
    """Symmetric Chamfer distance between two triangle meshes: the mean of the two mean
    nearest-neighbour distances between uniform surface samples."""
    o3d = _open3d()

    def cloud(v, f):
        m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(v, np.float64)),
                                      o3d.utility.Vector3iVector(np.asarray(f, np.int32)))
        o3d.utility.random.seed(seed)
        return m.sample_points_uniformly(number_of_points=samples)

    a, b = cloud(verts_a, faces_a), cloud(verts_b, faces_b)
    return 0.5 * (float(np.mean(a.compute_point_cloud_distance(b))) + float(np.mean(b.compute_point_cloud_distance(a))))


def _write_mesh(mesh, path: Path) -> None:
    """Atomic: a temp file with the same suffix beside `path`, then rename."""
    o3d = _open3d()
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".glb":
            try:
                import trimesh
            except ImportError:
                raise UserError("writing .glb needs trimesh (pip install trimesh); or use .ply/.obj", path) from None
            colors = (np.asarray(mesh.vertex_colors) * 255 + 0.5).clip(0, 255).astype(np.uint8)
            trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles),
                            vertex_colors=colors, process=False).export(str(tmp))
        else:
            mesh.compute_vertex_normals()
            if not o3d.io.write_triangle_mesh(str(tmp), mesh, write_vertex_colors=True):
                raise UserError("open3d could not write the mesh", path)


def export(target, opts: Options) -> str:
    from rich.progress import Progress

    check_output(opts.output, SUFFIXES)
    crop = crop_box(opts, target)
    o3d = _open3d()
    if target.scene_json is None:
        raise UserError("mesh export needs the run's cameras; this is a bare PLY or a "
                        "checkpoint outside a run folder", target.path)
    if not 0.0 <= opts.min_alpha < 1.0:
        raise UserError(f"--min-alpha must be in [0, 1), got {opts.min_alpha}")
    norm = target.normalization
    cams = target.cameras()
    if opts.cameras == "train" and target.scene_json.get("train_idx"):
        cams = cams[list(target.scene_json["train_idx"])]
    if opts.resolution_scale != 1.0:
        cams = cams.scaled(opts.resolution_scale)
    s = float(norm.scale)  # original units -> normalized units
    if opts.voxel_size is not None:
        voxel = opts.voxel_size * s
    else:
        lo, hi = scene_bounds(target.model)
        voxel = float(np.linalg.norm(hi - lo)) / 512.0
    if not voxel > 0:
        raise UserError(f"voxel size must be positive (got {voxel / s})")
    trunc = opts.sdf_trunc * s if opts.sdf_trunc is not None else 4.0 * voxel
    bg = target.scene_json.get("background")
    with Progress(transient=True) as bar:
        task = bar.add_task("TSDF fusion", total=len(cams))
        mesh = fuse_tsdf(target.model, cams, voxel_size=voxel, sdf_trunc=trunc, min_alpha=opts.min_alpha,
                         background=bg, progress=lambda: bar.advance(task))
    if len(mesh.triangles) == 0:
        raise UserError("TSDF fusion produced an empty mesh (is the model trained? try a lower --min-alpha)",
                        target.path)
    remove_small_components(mesh, opts.min_component)
    mesh.vertices = o3d.utility.Vector3dVector(norm.invert_points(np.asarray(mesh.vertices)))
    if crop is not None:
        box = o3d.geometry.AxisAlignedBoundingBox(np.asarray(crop.lo, np.float64), np.asarray(crop.hi, np.float64))
        mesh = mesh.crop(box)
        if len(mesh.triangles) == 0:
            raise UserError(f"crop box {list(crop.lo)}..{list(crop.hi)} contains none of the mesh")
    _write_mesh(mesh, opts.output)
    return (f"wrote a mesh of {len(mesh.vertices)} vertices, {len(mesh.triangles)} triangles "
            f"(voxel {voxel / s:.4g}) to {opts.output}")
