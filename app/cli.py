"""`splatlab COMMAND ...`: one module per command, each with `run(argv) -> int`.

Command modules import only light things at module level, so `splatlab --help` and
`splatlab info` start fast; torch, gsplat, viser and pycolmap load inside `run`.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

# name -> (module, one-line help). Adding a command is one line here and one module.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("splatlab.app.train", "Train a Gaussian splatting model on a scene (or the built-in demo)."),
    "eval": ("splatlab.app.eval", "Re-render a run's test views and recompute its metrics."),
    "view": ("splatlab.app.view", "Open a run, checkpoint or PLY in the browser viewer."),
    "export": ("splatlab.app.export", "Export a run: ply, splat, ply-compressed, spz, points, mesh, cameras, html."),
    "render": ("splatlab.app.render", "Render a camera-path video (orbit, interpolate or a JSON path)."),
    "process": ("splatlab.app.process", "Photos or a video -> posed COLMAP scene (structure-from-motion)."),
    "info": ("splatlab.app.info", "Describe a scene, run or PLY: format, splits, cameras, points."),
}


def _usage() -> str:
    lines = ["usage: splatlab [--debug] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `splatlab COMMAND --help` for a command's options.",
              "--debug shows full tracebacks instead of one-line errors."]
    return "\n".join(lines)


def _error(msg: str) -> None:
    # One line, to stderr; red when it is a terminal.
    if sys.stderr.isatty():
        msg = f"\x1b[31m{msg}\x1b[0m"
    print(msg, file=sys.stderr)


def main(argv: list[str]) -> int:
    debug = "--debug" in argv or os.environ.get("SPLATLAB_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if debug:
        os.environ["SPLATLAB_DEBUG"] = "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"splatlab {version('splatlab')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        _error(f"error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}")
        return 2

    from splatlab.scenes.errors import SceneError

    from .errors import UserError

    from .host import keep_freed_host_memory

    keep_freed_host_memory()
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.run(rest) or 0)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except (SceneError, UserError) as e:
        if debug:  # the traceback, but the same exit code: scripts test it
            traceback.print_exc()
        _error(f"error: {e}")
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        if debug:
            traceback.print_exc()
        _error(f"error: {e.filename}: {e.strerror}" if e.filename else f"error: {e}")
        return 2
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
        if debug:
            raise
        _error(f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)")
        return 1


def entrypoint() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    entrypoint()
