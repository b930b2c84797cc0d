"""The CLI's own behaviour: fast help (no torch), help text without internal notation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from splatlab.app.cli import COMMANDS
from splatlab.renderers import RENDERERS

# Runs a command's --help in a fresh interpreter, then reports whether torch was imported.
_PROBE = """
import contextlib, io, sys
import splatlab.app.cli as cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        rc = cli.main(sys.argv[1:])
    except SystemExit as e:
        rc = e.code
sys.stderr.write(out.getvalue())
print(rc, 'torch' in sys.modules)
"""


@pytest.mark.parametrize("argv", [[name, "--help"] for name in COMMANDS] + [["train", "--method", "nerf", "--help"],
                                                                          ["export", "--format", "ply", "--help"]])
def test_help_imports_no_torch(argv):
    r = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rc, torch_loaded = r.stdout.split()
    assert rc in ("0", "None"), r.stderr
    assert torch_loaded == "False", f"splatlab {' '.join(argv)} imported torch"
    assert "usage" in r.stderr.lower()


def _train_help(*argv: str) -> str:
    r = subprocess.run([sys.executable, "-m", "splatlab.app.cli", "train", *argv, "--help"], capture_output=True,
                       text=True, timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_train_help_has_no_internal_notation_and_true_defaults():
    from splatlab.app.config import presets_for

    out = _train_help("--preset", "fast")
    assert "{None}" not in out and "(default: None)" not in out and "STR]" not in out
    assert "the defaults shown are those of preset fast" in out
    assert f"(default: {presets_for('splat')['fast'][1].steps})" in out.split("--steps INT")[1].splitlines()[0]
    assert "--method {" + ",".join(RENDERERS) + "}" in out


def test_runs_latest_link_is_swapped_and_never_replaces_a_real_folder(tmp_path):
    import os

    from splatlab.app import runs

    a, b = tmp_path / "runs" / "demo-1", tmp_path / "runs" / "demo-2"
    a.mkdir(parents=True), b.mkdir()
    link = runs.update_latest(a)
    assert link == tmp_path / "runs" / "latest" and link.resolve() == a.resolve()
    assert runs.update_latest(b).resolve() == b.resolve()
    assert os.readlink(link) == "demo-2"  # relative: the runs folder can move
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["demo-1", "demo-2", "latest"]  # no temp left
    assert runs.update_latest(tmp_path / "elsewhere" / "x") is None  # not under runs/
    link.unlink()
    link.mkdir()  # a user's own folder named latest
    assert runs.update_latest(a) is None and link.is_dir() and not link.is_symlink()


def test_several_paths_take_the_newest_run_with_a_note(tmp_path, capsys):
    import os

    from splatlab.app import runs

    old, new = tmp_path / "demo-1", tmp_path / "demo-2"
    for i, d in enumerate((new, old)):  # created out of order: the choice is by time, not name
        d.mkdir()
        (d / "config.json").write_text("{}")
        os.utime(d / "config.json", (1000 + 100 * (1 - i), 1000 + 100 * (1 - i)))
    assert runs.newest_of([str(old), str(new)]) == str(new)
    assert "using the newest run" in capsys.readouterr().err
    assert runs.newest_of([str(old)]) == str(old) and capsys.readouterr().err == ""


def test_debug_prints_the_traceback_and_keeps_exit_code_2(tmp_path):
    missing = str(tmp_path / "nothing-here")
    plain = subprocess.run([sys.executable, "-m", "splatlab.app.cli", "info", missing], capture_output=True,
                           text=True, timeout=120)
    debug = subprocess.run([sys.executable, "-m", "splatlab.app.cli", "--debug", "info", missing],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "nothing-here" in debug.stderr


def test_read_only_images_load_without_a_torch_warning():
    import warnings

    import numpy as np

    from splatlab.app.data import _load_images

    class Images:
        def __getitem__(self, i):
            a = np.full((4, 4, 3), i, np.uint8)
            a.setflags(write=False)  # as a cached image can be
            return a

    class Scene:
        images, train_idx = Images(), [0, 3]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _load_images(Scene(), False, "cpu")
    assert [int(t[0, 0, 0]) for t in out] == [0, 3]


@pytest.mark.slow
def test_same_seed_same_cpu_run_is_bit_identical(tmp_path):
    """Two short CPU runs of the same command (separate processes, default thread count)
    write byte-identical splat.ply files."""
    plys = []
    for name in ("a", "b"):
        out = tmp_path / name
        r = subprocess.run([sys.executable, "-m", "splatlab.app.cli", "train", "demo", "--preset", "cpu",
                            "--steps", "30", "--device", "cpu", "--output", str(out), "--no-save-renders"],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        plys.append((out / "splat.ply").read_bytes())
    assert plys[0] == plys[1]
