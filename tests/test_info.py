"""`splatlab info`: one JSON object, the acceptance figures, nothing written."""

from __future__ import annotations

import json

import pytest
from conftest import shared_dataset
from fixtures_scenes import tree_digest, write_colmap, write_image

from splatlab.app.cli import main


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLATLAB_CACHE", str(tmp_path / "cache"))


def info_json(path, capsys) -> dict:
    assert main(["info", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return json.loads(out)


def test_info_demo_json(capsys):
    d = info_json("demo", capsys)
    assert d["format"] == "demo" and (d["num_train"], d["num_test"]) == (56, 8)
    assert d["image_size"] == [160, 120] and d["num_points"] == 4000 and d["warnings"] == []


def test_info_colmap_fixture_table_and_json(tmp_path, capsys):
    write_colmap(tmp_path, n=9)
    before = tree_digest(tmp_path)
    d = info_json(tmp_path, capsys)
    assert d["format"] == "colmap" and (d["num_train"], d["num_test"]) == (7, 2)
    assert d["camera_model"] == "PINHOLE" and d["image_size"] == [40, 30] and d["num_points"] > 0
    assert main(["info", str(tmp_path)]) == 0
    assert "colmap" in capsys.readouterr().out
    assert tree_digest(tmp_path) == before and not (tmp_path / "cache").exists()


def test_info_bare_folder(tmp_path, capsys):
    for k in range(2):
        write_image(tmp_path / f"{k}.jpg", seed=k)
    d = info_json(tmp_path, capsys)
    assert d["format"] == "images" and d["num_images"] == 2 and "splatlab process" in d["hint"]


def test_info_shared_acceptance(capsys):
    fox = info_json(shared_dataset("fox"), capsys)
    assert fox["format"] == "nerfstudio" and fox["num_train"] + fox["num_test"] == 50
    assert fox["image_size"] == [1080, 1920] and len(fox["warnings"]) == 1 and "17" in fox["warnings"][0]
    lego = info_json(shared_dataset("lego"), capsys)
    assert lego["format"] == "blender" and (lego["num_train"], lego["num_test"]) == (100, 200)
    assert lego["image_size"] == [800, 800]
    beer = info_json(shared_dataset("beer"), capsys)
    assert beer["format"] == "colmap" and (beer["num_train"], beer["num_test"]) == (62, 9)
    assert beer["num_points"] == 4414 and beer["camera_model"] == "SIMPLE_RADIAL"
    sc = info_json(shared_dataset("sacre_coeur"), capsys)
    assert sc["format"] == "images" and sc["num_images"] == 10


def test_info_describes_a_ply_and_a_run(tmp_path, capsys):
    """`splatlab info` accepts a PLY or a run wherever it accepts a scene."""
    import json

    import numpy as np
    import torch

    from splatlab.app.cli import main
    from splatlab.renderers.splat import SplatModel
    from splatlab.renderers.splat.io import write_ply
    from splatlab.scenes.types import Normalization

    g = torch.Generator().manual_seed(0)
    model = SplatModel.from_points(torch.rand(50, 3, generator=g), torch.rand(50, 3, generator=g), sh_degree=2)
    norm = Normalization(scale=0.5, translation=np.array([1.0, -2.0, 0.5]))
    write_ply(model, tmp_path / "m.ply", normalization=norm)
    assert main(["info", str(tmp_path / "m.ply"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "ply" and info["num_gaussians"] == 50 and info["sh_degree"] == 2
    orig = norm.invert_points(model.means.detach().double().numpy())
    np.testing.assert_allclose(info["bounds_min"], orig.min(0), atol=1e-5)
    np.testing.assert_allclose(info["bounds_max"], orig.max(0), atol=1e-5)
