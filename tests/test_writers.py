"""Writers never lie or clobber (issue 13 items 4, 5, 9, 10): each case runs the real
command line in a subprocess and checks the exit code, the one clean line, and that nothing
was lost or written where it must not be."""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_export_support import demo_model, demo_scene, write_run

# Each case starts a fresh interpreter (torch import): seconds each, more on a loaded machine.
pytestmark = pytest.mark.slow

PRECIOUS = b"the user's own file, not written by splatlab\n"


@pytest.fixture(scope="module")
def dataset_run(tmp_path_factory):
    """A run whose scene.json says it was trained on DATASET (a folder with its own files)."""
    base = tmp_path_factory.mktemp("w")
    dataset = base / "dataset"
    dataset.mkdir()
    (dataset / "transforms.json").write_bytes(PRECIOUS)
    scene = demo_scene(width=32, height=24, num_views=8, num_points=300)
    run = write_run(base / "run", demo_model(scene, sh_degree=1),
                    dataclasses.replace(scene, root=dataset))
    return run, dataset


def splatlab(*args, fsize: int | None = None, umask: int | None = None, wait: bool = True, cwd=None):
    """Run `splatlab ARGS` in a fresh interpreter; `fsize` caps the size of every file it
    (and ffmpeg) writes, as a full disk would: writes past it fail with EFBIG."""
    def limits():
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not a kill
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if umask is not None:
            os.umask(umask)

    cmd = [sys.executable, "-m", "splatlab.app.cli", *map(str, args)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limits, cwd=cwd)
    if not wait:
        return p
    out, err = p.communicate(timeout=120)
    return p.returncode, out.decode(), err.decode()


def one_line(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_full_disk_video_fails_cleanly_and_keeps_the_old_file(dataset_run, tmp_path):
    """Item 4, a real failure: RLIMIT_FSIZE makes the kernel refuse ffmpeg's writes (EFBIG),
    as a full disk refuses them with ENOSPC. The command fails with one line, and the
    existing video (replaced only on success, --overwrite given) is untouched."""
    pytest.importorskip("imageio_ffmpeg", reason="MP4 needs imageio-ffmpeg (splatlab[video])")
    run, _ = dataset_run
    out = tmp_path / "orbit.mp4"
    out.write_bytes(PRECIOUS)
    rc, stdout, err = splatlab("render", run, "--output", out, "--frames", "30", "--overwrite",
                               fsize=4096)
    assert rc == 2 and "wrote" not in stdout
    one_line(err, str(out), "cannot write the video", "File too large")
    assert out.read_bytes() == PRECIOUS and leftovers(tmp_path) == []
    # the same limit on PNG frames and on an export
    rc, _, err = splatlab("render", run, "--output", tmp_path / "frames", "--frames", "3", fsize=1024)
    assert rc == 2
    one_line(err, "cannot write the frames", "File too large")
    assert not (tmp_path / "frames").exists() and leftovers(tmp_path) == []
    (tmp_path / "m.ply").write_bytes(PRECIOUS)
    rc, _, err = splatlab("export", run, "--format", "ply", "--output", tmp_path / "m.ply", "--overwrite",
                          fsize=4096)
    assert rc == 2
    one_line(err, "cannot write", "File too large")
    assert (tmp_path / "m.ply").read_bytes() == PRECIOUS and leftovers(tmp_path) == []


def test_never_write_into_the_dataset(dataset_run, tmp_path):
    """Item 5: the run's dataset folder is refused as an output, --overwrite or not."""
    run, dataset = dataset_run
    for extra in ([], ["--overwrite"]):
        rc, _, err = splatlab("export", run, "--format", "cameras", "--output", dataset / "transforms.json", *extra)
        assert rc == 2
        one_line(err, "inside the dataset folder")
    rc, _, err = splatlab("render", run, "--output", dataset / "sub" / "o.mp4", "--frames", "2")
    assert rc == 2
    one_line(err, "inside the dataset folder")
    # reached through a symlinked folder: the same refusal
    (tmp_path / "link").symlink_to(dataset)
    rc, _, err = splatlab("export", run, "--format", "ply", "--output", tmp_path / "link" / "x.ply")
    assert rc == 2
    one_line(err, "inside the dataset folder")
    assert (dataset / "transforms.json").read_bytes() == PRECIOUS
    assert sorted(p.name for p in dataset.iterdir()) == ["transforms.json"]


def test_replacing_a_file_needs_overwrite(dataset_run, tmp_path):
    """Item 5: an existing --output is replaced only with --overwrite."""
    run, _ = dataset_run
    t = tmp_path / "transforms.json"
    t.write_bytes(PRECIOUS)
    rc, _, err = splatlab("export", run, "--format", "cameras", "--output", t)
    assert rc == 2
    one_line(err, str(t), "already exists; pass --overwrite")
    assert t.read_bytes() == PRECIOUS
    rc, stdout, _ = splatlab("export", run, "--format", "cameras", "--output", t, "--overwrite")
    assert rc == 0 and "wrote 8 cameras" in stdout and t.read_bytes() != PRECIOUS
    v = tmp_path / "v.mp4"
    v.write_bytes(PRECIOUS)
    rc, _, err = splatlab("render", run, "--output", v, "--frames", "2")
    assert rc == 2
    one_line(err, "already exists; pass --overwrite")
    assert v.read_bytes() == PRECIOUS


def test_bad_sizes_and_outputs_one_line(dataset_run, tmp_path):
    """Item 9: an unbounded frame size and outputs of the wrong kind."""
    run, _ = dataset_run
    (tmp_path / "afile").write_bytes(PRECIOUS)
    (tmp_path / "afolder").mkdir()
    cases = [
        (["render", run, "--width", 20000, "--height", 20000, "--output", tmp_path / "big.mp4"], "too large"),
        (["render", run, "--width", 8000, "--height", 8000, "--output", tmp_path / "big.mp4"], "too large"),
        (["render", run, "--frames", "1", "--output", tmp_path / "afile"], "not a folder"),
        (["export", run, "--format", "ply", "--output", tmp_path / "afolder"], "output is a folder"),
        (["export", run, "--format", "ply", "--output", tmp_path / "afile" / "x.ply"], "cannot write here"),
    ]
    from test_ply import _inria_ply

    _, raw = _inria_ply(tmp_path)
    (tmp_path / "ok.ply").unlink()
    for name, edit in [("dup.ply", b"property float y\nproperty float y\n"), ("bare.ply", b"property float y\nproperty\n")]:
        (tmp_path / name).write_bytes(raw.replace(b"property float y\n", edit, 1))
        cases.append((["export", tmp_path / name, "--format", "spz", "--output", tmp_path / "x.spz"], "corrupt PLY header"))
        cases.append((["info", tmp_path / name], "corrupt PLY header"))
    (tmp_path / "vid.mp4").mkdir()
    cases.append((["render", run, "--output", tmp_path / "vid.mp4", "--frames", "1"], "output is a folder"))
    for args, msg in cases:
        rc, _, err = splatlab(*args)
        assert rc == 2, (args, err)
        one_line(err, msg)
    assert (tmp_path / "afile").read_bytes() == PRECIOUS and leftovers(tmp_path) == []
    assert not (tmp_path / "x.spz").exists() and not (tmp_path / "big.mp4").exists()


def test_sigterm_during_render_leaves_nothing(dataset_run, tmp_path):
    """Item 10: SIGTERM while frames are being encoded: exit 143, one line, no temp file."""
    pytest.importorskip("imageio_ffmpeg", reason="MP4 needs imageio-ffmpeg (splatlab[video])")
    run, _ = dataset_run
    out = tmp_path / "long.mp4"
    p = splatlab("render", run, "--output", out, "--frames", "5000", wait=False)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".long.r.*.mp4")) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob(".long.r.*.mp4")), "the render never started writing"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143
    assert err.decode().strip().splitlines()[-1] == "error: terminated (SIGTERM); nothing was written"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_render_outputs_respect_the_umask(dataset_run, tmp_path, umask):
    """Item 10: the video and the PNG frames get the modes the user's umask allows."""
    pytest.importorskip("imageio_ffmpeg", reason="MP4 needs imageio-ffmpeg (splatlab[video])")
    run, _ = dataset_run
    rc, _, err = splatlab("render", run, "--output", tmp_path / "a.mp4", "--frames", "2", umask=umask)
    assert rc == 0, err
    assert (tmp_path / "a.mp4").stat().st_mode & 0o777 == 0o666 & ~umask
    rc, _, err = splatlab("render", run, "--output", tmp_path / "f", "--frames", "1", umask=umask)
    assert rc == 0, err
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "f" / "frame_00000.png").stat().st_mode & 0o777 == 0o666 & ~umask
