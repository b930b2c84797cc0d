"""scenes/files.py: the one atomic write (modes, no temp left behind) and the cache root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from splatlab.scenes import files
from splatlab.scenes.files import atomic_path, atomic_write_bytes, cache_root


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_mode_follows_the_umask(tmp_path, umask, mask, want):
    umask(mask)
    p = tmp_path / "sub" / "a.json"
    atomic_write_bytes(p, b"{}\n")
    assert p.read_bytes() == b"{}\n"
    assert mode(p) == want
    assert leftovers(p.parent, {"a.json"}) == []


@pytest.mark.parametrize("old_mode, mask", [(0o644, 0o077), (0o600, 0o022), (0o640, 0o002)])
def test_replacing_keeps_the_existing_mode(tmp_path, umask, old_mode, mask):
    p = tmp_path / "splat.ply"
    p.write_bytes(b"old")
    os.chmod(p, old_mode)
    umask(mask)
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    assert mode(p) == old_mode


def test_failure_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "metrics.json"
    p.write_bytes(b"old")
    for exc in (OSError(28, "No space left on device"), KeyboardInterrupt()):
        def boom(fd, exc=exc):
            raise exc

        monkeypatch.setattr(files.os, "fsync", boom)
        with pytest.raises(type(exc)):
            atomic_write_bytes(p, b"new")
        assert p.read_bytes() == b"old"
        assert leftovers(tmp_path, {"metrics.json"}) == []
    monkeypatch.undo()
    with pytest.raises(TypeError):
        atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old" and leftovers(tmp_path, {"metrics.json"}) == []


def test_streaming_variant_renames_on_success(tmp_path, umask):
    umask(0o022)
    out = tmp_path / "video.mp4"
    with atomic_path(out) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp.exists()
        assert not out.exists()
        tmp.write_bytes(b"frames")
    assert out.read_bytes() == b"frames" and mode(out) == 0o644
    assert leftovers(tmp_path, {"video.mp4"}) == []
    os.chmod(out, 0o640)
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"again")
    assert out.read_bytes() == b"again" and mode(out) == 0o640


def test_streaming_variant_cleans_up_on_error(tmp_path):
    out = tmp_path / "video.mp4"
    out.write_bytes(b"keep me")
    for exc in (RuntimeError("encoder failed"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with atomic_path(out) as tmp:
                tmp.write_bytes(b"half")
                raise exc
        assert out.read_bytes() == b"keep me"
        assert leftovers(tmp_path, {"video.mp4"}) == []


def test_streaming_directory(tmp_path, umask):
    umask(0o022)
    out = tmp_path / "frames"
    out.mkdir()
    (out / "frame_00000.png").write_bytes(b"old")
    with pytest.raises(ValueError):
        with atomic_path(out, directory=True) as tmp:
            (tmp / "frame_00000.png").write_bytes(b"half")
            raise ValueError("render failed")
    assert (out / "frame_00000.png").read_bytes() == b"old"
    assert leftovers(tmp_path, {"frames"}) == []
    with atomic_path(out, directory=True) as tmp:
        (tmp / "frame_00000.png").write_bytes(b"new")
    assert sorted(p.name for p in out.iterdir()) == ["frame_00000.png"]
    assert (out / "frame_00000.png").read_bytes() == b"new"
    assert mode(out) == 0o755  # not mkdtemp's 0700
    assert leftovers(tmp_path, {"frames"}) == []


def test_cache_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPLATLAB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "splatlab"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored: the spec wants absolute
    assert cache_root() == tmp_path / "home" / ".cache" / "splatlab"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "splatlab"
    monkeypatch.setenv("SPLATLAB_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_every_cache_user_shares_the_one_root(monkeypatch, tmp_path):
    """The image cache (scenes) and process's default output (capture) follow XDG alike."""
    from splatlab.scenes import common
    from splatlab.scenes.capture import process

    monkeypatch.delenv("SPLATLAB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert common.cache_root() == process.cache_root() == tmp_path / "xdg" / "splatlab"
    assert process.default_output(tmp_path / "photos", "abc").parent == tmp_path / "xdg" / "splatlab" / "processed"
