"""Export formats: the explicit registry, format name -> module.

Each module defines `HELP` (one line), `SUFFIXES`, `Options` (a dataclass subclassing `common.ExportArgs`; its docstring
and attribute docstrings are that format's `--help`) and `export(target, opts) -> str`
(writes `opts.output` atomically, returns a one-line summary). Modules are imported only
when chosen, so heavy imports (open3d) stay lazy. Adding a format is one module and one line.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXPORTERS: dict[str, str] = {
    "ply": "splatlab.app.exporters.ply",
    "splat": "splatlab.app.exporters.splat",
    "ply-compressed": "splatlab.app.exporters.ply_compressed",
    "spz": "splatlab.app.exporters.spz",
    "points": "splatlab.app.exporters.points",
    "mesh": "splatlab.app.exporters.mesh",
    "cameras": "splatlab.app.exporters.cameras",
    "html": "splatlab.app.exporters.html",  # the viewer engineer's standalone HTML viewer
}


def get(name: str) -> ModuleType:
    return importlib.import_module(EXPORTERS[name])


__all__ = ["EXPORTERS", "get"]
