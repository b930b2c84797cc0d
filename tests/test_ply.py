"""PLY write/read (renderers/splat/io.py): exact INRIA layout, round trips through renders,
the frame change back to original coordinates (incl. SH rotation), foreign writers, bad files."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from splatlab.app.runs import load_target
from splatlab.renderers.splat import SplatModel
from splatlab.renderers.splat.io import PlyError, read_ply, sh_rotation_matrices, write_ply
from splatlab.scenes.types import Normalization

from test_export_support import (cameras_to_original, demo_model, demo_scene, random_rotation,
                                 render, write_run)


@pytest.fixture(scope="module")
def scene():
    return demo_scene(width=64, height=48, num_views=16, num_points=1500)


@pytest.fixture(scope="module")
def model(scene):
    return demo_model(scene)


def _spec_header(degree: int, n: int) -> str:
    # Built from the INRIA spec by hand, not from the writer's helpers.
    rest = {0: 0, 1: 9, 2: 24, 3: 45}[degree]
    props = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    props += ["f_rest_%d" % i for i in range(rest)]
    props += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return ("ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % n
            + "".join("property float %s\n" % p for p in props) + "end_header\n")


@pytest.mark.parametrize("degree", [0, 3])
def test_exact_inria_header_and_body(tmp_path, degree):
    g = torch.Generator().manual_seed(1)
    m = SplatModel.random(7, torch.zeros(3), torch.ones(3), sh_degree=degree, generator=g)
    with torch.no_grad():
        m.splats["shN"].copy_(torch.randn(m.splats["shN"].shape, generator=g))
    path = tmp_path / "m.ply"
    assert write_ply(m, path) == 7
    raw = path.read_bytes()
    header = _spec_header(degree, 7).encode()
    assert raw[: len(header)] == header
    nprop = 17 + {0: 0, 3: 45}[degree]
    body = np.frombuffer(raw[len(header):], dtype="<f4").reshape(7, nprop)
    s = m.splats
    np.testing.assert_array_equal(body[:, 0:3], s["means"].detach().numpy())
    np.testing.assert_array_equal(body[:, 3:6], 0.0)  # normals
    np.testing.assert_array_equal(body[:, 6:9], s["sh0"].detach().numpy()[:, 0])
    if degree == 3:
        # channel-major: f_rest_{c*15 + k} = shN[k, c]
        shN = s["shN"].detach().numpy()
        for c in range(3):
            np.testing.assert_array_equal(body[:, 9 + 15 * c: 9 + 15 * (c + 1)], shN[:, :, c])
    o = 9 + (45 if degree == 3 else 0)
    np.testing.assert_array_equal(body[:, o], s["opacities"].detach().numpy())  # logit
    np.testing.assert_array_equal(body[:, o + 1: o + 4], s["scales"].detach().numpy())  # log
    np.testing.assert_array_equal(body[:, o + 4: o + 8], s["quats"].detach().numpy())  # wxyz


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_read_infers_degree_and_restores_params(tmp_path, degree):
    g = torch.Generator().manual_seed(degree)
    m = SplatModel.random(20, torch.zeros(3), torch.ones(3), sh_degree=degree, generator=g)
    with torch.no_grad():
        m.splats["shN"].copy_(torch.randn(m.splats["shN"].shape, generator=g))
    write_ply(m, tmp_path / "m.ply")
    back = read_ply(tmp_path / "m.ply")
    assert back.sh_degree == degree
    for k, v in m.splats.items():
        torch.testing.assert_close(back.splats[k], v.detach(), rtol=0, atol=0)


def test_round_trip_renders_identically(tmp_path, scene, model):
    """export ply -> import -> render the test cameras == rendering the run itself."""
    run = write_run(tmp_path / "run", model, scene)
    loaded = load_target(run)
    write_ply(loaded.model, tmp_path / "out.ply", loaded.normalization)
    imported = load_target(tmp_path / "out.ply").model
    cams = scene.cameras[scene.test_idx]
    ref = render(loaded.model, cams, scene.background)
    got = render(imported, cams, scene.background)
    assert ref.std() > 0.05  # something is actually on screen
    assert (got - ref).abs().max() <= 1e-4


def test_original_frame_with_rotation_renders_identically(tmp_path, scene, model):
    """Non-identity normalization (rotation, scale, shift): the exported model rendered with
    the cameras mapped to original coordinates equals the model rendered in the normalized
    frame. Random degree-3 SH makes this the proof of the SH rotation."""
    norm = Normalization(scale=2.5, translation=np.array([0.3, -1.2, 0.7]), rotation=random_rotation(3))
    run = write_run(tmp_path / "run", model, scene, normalization=norm)
    loaded = load_target(run)
    write_ply(loaded.model, tmp_path / "orig.ply", loaded.normalization)
    imported = read_ply(tmp_path / "orig.ply")
    # the file really is in original coordinates
    np.testing.assert_allclose(imported.means.detach().numpy(),
                               norm.invert_points(model.means.detach().numpy()), atol=1e-5)
    cams = scene.cameras[scene.test_idx]
    ref = render(model, cams, scene.background)
    got = render(imported, cameras_to_original(cams, norm), scene.background)
    assert (got - ref).abs().max() <= 1e-4
    # and without rotating the SH the renders would differ visibly
    unrotated = read_ply(tmp_path / "orig.ply")
    with torch.no_grad():
        unrotated.splats["shN"].copy_(model.splats["shN"])
    bad = render(unrotated, cameras_to_original(cams, norm), scene.background)
    assert (bad - ref).abs().max() > 1e-2


def test_sh_rotation_matches_brute_force():
    from splatlab.rasterizer.sh import sh_bases

    R = random_rotation(5)
    d = torch.nn.functional.normalize(torch.randn(100, 3, dtype=torch.float64), dim=-1)
    Y, YR = sh_bases(3, d), sh_bases(3, d @ torch.as_tensor(R).T)
    for l, M in enumerate(sh_rotation_matrices(R, 3), start=1):
        sl = slice(l * l, (l + 1) ** 2)
        torch.testing.assert_close(Y[:, sl] @ M, YR[:, sl], atol=1e-10, rtol=0)
        torch.testing.assert_close(M @ M.T, torch.eye(2 * l + 1, dtype=M.dtype), atol=1e-10, rtol=0)


def test_foreign_gsplat_ply_imports_and_renders(tmp_path, scene, model):
    from gsplat.exporter import export_splats

    s = {k: v.detach() for k, v in model.splats.items()}
    export_splats(s["means"], s["scales"], s["quats"], s["opacities"], s["sh0"], s["shN"],
                  format="ply", save_to=str(tmp_path / "gsplat.ply"))
    imported = read_ply(tmp_path / "gsplat.ply")
    assert imported.sh_degree == 3 and imported.num_gaussians == model.num_gaussians
    cams = scene.cameras[scene.test_idx[:2]]
    assert (render(imported, cams) - render(model, cams)).abs().max() <= 1e-4


def test_nan_rows_dropped_with_warning(tmp_path):
    m = SplatModel.random(10, torch.zeros(3), torch.ones(3), sh_degree=1)
    with torch.no_grad():
        m.splats["means"][2, 0] = float("nan")
        m.splats["shN"][5, 1, 2] = float("inf")
    with pytest.warns(RuntimeWarning, match="dropped 2 of 10"):
        assert write_ply(m, tmp_path / "m.ply") == 8
    assert read_ply(tmp_path / "m.ply").num_gaussians == 8


def test_crop_and_empty_crop(tmp_path):
    from splatlab.renderers.splat.io import Crop

    m = SplatModel.random(200, torch.zeros(3), torch.ones(3), sh_degree=0)
    n = write_ply(m, tmp_path / "c.ply", crop=Crop(np.zeros(3), np.full(3, 0.5)))
    inside = ((m.means >= 0) & (m.means <= 0.5)).all(-1).sum()
    assert n == int(inside) > 0
    with pytest.raises(PlyError, match="contains none"):
        write_ply(m, tmp_path / "e.ply", crop=Crop(np.full(3, 5.0), np.full(3, 6.0)))
    assert not (tmp_path / "e.ply").exists()


def _points_ply(path):
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
                     b"property float y\nproperty float z\nend_header\n" + struct.pack("<3f", 1, 2, 3))


def test_bad_files_give_one_line_errors(tmp_path):
    (tmp_path / "junk.ply").write_bytes(b"\x00\x01garbage")
    with pytest.raises(PlyError, match="not a PLY"):
        read_ply(tmp_path / "junk.ply")
    _points_ply(tmp_path / "pts.ply")
    with pytest.raises(PlyError, match="not a 3D Gaussian splatting PLY"):
        read_ply(tmp_path / "pts.ply")
    m = SplatModel.random(50, torch.zeros(3), torch.ones(3), sh_degree=2)
    write_ply(m, tmp_path / "ok.ply")
    raw = (tmp_path / "ok.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(raw[:-100])
    with pytest.raises(PlyError, match="truncated"):
        read_ply(tmp_path / "cut.ply")
    (tmp_path / "odd.ply").write_bytes(raw.replace(b"property float f_rest_23\n", b""))
    with pytest.raises(PlyError, match="23 f_rest"):
        read_ply(tmp_path / "odd.ply")
    for e in [PlyError(tmp_path / "x.ply", "p")]:
        assert "\n" not in str(e)


def _inria_ply(tmp_path, name="ok.ply", degree=1, n=30):
    m = SplatModel.random(n, torch.zeros(3), torch.ones(3), sh_degree=degree,
                          generator=torch.Generator().manual_seed(3))
    write_ply(m, tmp_path / name)
    return m, (tmp_path / name).read_bytes()


def test_header_comments_with_end_header_or_non_ascii_load(tmp_path):
    """Comments are free text: `end_header` inside one does not end the header, and
    non-ASCII (UTF-8 or Latin-1 credits, paths) is ignored rather than refused."""
    m, raw = _inria_ply(tmp_path)
    fmt = b"format binary_little_endian 1.0\n"
    comments = [b"comment written by a tool that prints end_header in its banner\n",
                "comment scanned by Zoë in Zürich, 東京\n".encode("utf-8"),
                b"comment latin-1 \xe9t\xe9\n", "obj_info caméra\n".encode("utf-8")]
    for i, c in enumerate(comments):
        p = tmp_path / f"c{i}.ply"
        p.write_bytes(raw.replace(fmt, fmt + c, 1))
        back = read_ply(p)
        for k, v in m.splats.items():
            torch.testing.assert_close(back.splats[k], v.detach(), rtol=0, atol=0)
    # CRLF headers (written on Windows) read the same
    head, body = raw.split(b"end_header\n", 1)
    (tmp_path / "crlf.ply").write_bytes(head.replace(b"\n", b"\r\n") + b"end_header\r\n" + body)
    torch.testing.assert_close(read_ply(tmp_path / "crlf.ply").means, m.means.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("edit, msg", [
    ((b"property float y\n", b"property float y\nproperty float y\n"), "same name"),
    ((b"property float y\n", b"property float y\nproperty\n"), "bad 'property' line"),
    ((b"property float y\n", b"property float16 y\n"), "corrupt PLY header"),
    ((b"element vertex 30\n", b"element vertex\n"), "corrupt PLY header"),
    ((b"format binary_little_endian 1.0\n", b"format binary_middle_endian 1.0\n"), "corrupt PLY header"),
    ((b"property float y\n", "property float \xff\n".encode("latin-1")), "non-ASCII"),
    ((b"end_header\n", b"end_headers\n"), "no end_header"),
    ((b"property float rot_3\n", b"property list uchar float rot_3\n"), "list property"),
])
def test_corrupt_headers_one_clean_line_via_cli(tmp_path, capsys, edit, msg):
    from splatlab.app.cli import main

    _, raw = _inria_ply(tmp_path)
    bad = tmp_path / "bad.ply"
    bad.write_bytes(raw.replace(*edit, 1))
    with pytest.raises(PlyError, match=msg):
        read_ply(bad)
    assert main(["export", str(bad), "--format", "ply", "--output", str(tmp_path / "out.ply")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: ") and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.ply").exists()


def test_huge_claimed_vertex_count_is_refused_without_allocating(tmp_path):
    """A header claiming 10^12 vertices (10 TB of rows) over a few bytes of data: refused
    from the file size before plyfile reads a row; the peak allocation stays small."""
    import tracemalloc

    _, raw = _inria_ply(tmp_path)
    huge = tmp_path / "huge.ply"
    huge.write_bytes(raw.replace(b"element vertex 30\n", b"element vertex 1000000000000\n"))
    tracemalloc.start()
    try:
        with pytest.raises(PlyError, match="truncated"):
            read_ply(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    # the same for an ASCII body and for an element before the vertices
    (tmp_path / "a.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1000000000000\n"
                                     b"property float x\nend_header\n1\n")
    with pytest.raises(PlyError, match="truncated"):
        read_ply(tmp_path / "a.ply")
    (tmp_path / "b.ply").write_bytes(raw.replace(b"element vertex 30\n",
                                                 b"element extra 1000000000000\nproperty double q\n"
                                                 b"element vertex 30\n"))
    with pytest.raises(PlyError, match="truncated"):
        read_ply(tmp_path / "b.ply")


def test_ascii_and_big_endian_plys_read(tmp_path):
    """Foreign writers: plyfile reads ASCII and big-endian bodies the same as ours."""
    from plyfile import PlyData

    m, raw = _inria_ply(tmp_path, degree=0, n=5)
    ply = PlyData.read(str(tmp_path / "ok.ply"))
    for name, kw in [("ascii.ply", {"text": True}), ("be.ply", {"byte_order": ">"})]:
        PlyData(ply.elements, **kw).write(str(tmp_path / name))
        back = read_ply(tmp_path / name)
        torch.testing.assert_close(back.splats["quats"], m.splats["quats"].detach(), rtol=1e-6, atol=1e-6)
