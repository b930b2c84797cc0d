"""The one way splatlab writes a file, and the one place its cache lives.

Every writer goes through `atomic_write_bytes` (bytes in memory) or `atomic_path` (a
temp path that a streaming writer such as ffmpeg fills). The file appears under its
real name only once it is complete and fsynced, so a crash, a full disk or Ctrl-C
never leaves a half-written file there, and no temp file is left behind either.

Modes: a new file gets what `open()` would give it (0666 less the umask; `mkstemp`'s
0600 is what these replace). Replacing an existing file keeps that file's mode.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Optional


def cache_root() -> Path:
    """`$SPLATLAB_CACHE`, else `$XDG_CACHE_HOME/splatlab`, else `~/.cache/splatlab`.
    A relative XDG_CACHE_HOME is ignored, as the XDG spec asks."""
    env = os.environ.get("SPLATLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / "splatlab"
    return Path.home() / ".cache" / "splatlab"


def _existing_mode(path: Path) -> Optional[int]:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _temp_name(path: Path, suffix: str) -> Path:
    # The target's own suffix at the end: ffmpeg and open3d pick the format from it.
    return path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp{suffix}"


def _create_temp(path: Path, suffix: str) -> tuple[int, Path]:
    """An empty new file beside `path`. os.open applies the umask (mkstemp would force
    0600), so a new file gets the mode any other program would give it."""
    while True:
        tmp = _temp_name(path, suffix)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not every file system lets a folder be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` through a temp file beside it: fsync, keep an existing
    file's mode (else the umask's), rename. On any error, Ctrl-C included, the temp file
    is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = _existing_mode(path)
    fd, tmp = _create_temp(path, "")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if keep is not None:
                os.fchmod(f.fileno(), keep)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path | str, *, directory: bool = False) -> Iterator[Path]:
    """A temp path beside `path` (same suffix) for a writer that streams to a file name;
    renamed over `path` when the block ends without error, removed when it raises.

    The temp file exists (empty) when the block starts. With `directory=True` it is an
    empty folder instead, and an existing folder at `path` is replaced whole: the caller
    must have checked that it may be."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        while True:
            tmp = _temp_name(path, "")
            try:
                os.mkdir(tmp, 0o777)  # the umask applies, as for any new folder
                break
            except FileExistsError:
                continue
    else:
        keep = _existing_mode(path)
        fd, tmp = _create_temp(path, path.suffix)
        os.close(fd)
    try:
        yield tmp
        if directory:
            old = None
            if path.is_dir() and not path.is_symlink():
                old = _temp_name(path, ".old")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            # The writer closed the file; fsync it by name before it takes the real one's place.
            wfd = os.open(tmp, os.O_RDONLY)
            try:
                if keep is not None:
                    os.fchmod(wfd, keep)
                os.fsync(wfd)
            finally:
                os.close(wfd)
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _unlink_quietly(tmp)
        raise


__all__ = ["atomic_path", "atomic_write_bytes", "cache_root"]
