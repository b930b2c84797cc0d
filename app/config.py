"""The config router: method name -> its flat config class and named presets.

Each method's config (a `TrainConfig` subclass, renderers/<method>/config.py) and presets
live with the method; this module picks them by `--method` and parses the command line:
`splatlab train --preset NAME` picks a preset, any field given on the command line
overrides it (tyro parses on top of the preset; attribute docstrings are the CLI help).
The resolved config, with its `method` and the `preset` actually used, is saved to the
run folder as plain JSON of primitives and read back through this router.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional

from splatlab.renderers import RENDERERS, UnknownMethod, get_renderer
from splatlab.renderers.base import TrainConfig

from .errors import UserError

DEFAULT_METHOD = TrainConfig.method


def _renderer(method: str):
    try:
        return get_renderer(method)
    except UnknownMethod as e:
        raise UserError(str(e)) from None


def config_class(method: str = DEFAULT_METHOD) -> type[TrainConfig]:
    return _renderer(method).config_cls


def presets_for(method: str = DEFAULT_METHOD) -> dict[str, tuple[str, TrainConfig]]:
    return _renderer(method).presets


# The default method's presets (what `splatlab train --preset` lists without --method).
PRESETS = presets_for(DEFAULT_METHOD)


def preset(name: str, method: str = DEFAULT_METHOD) -> TrainConfig:
    """A copy of preset `name` of `method`, recording its own name."""
    presets = presets_for(method)
    if name not in presets:
        raise UserError(f"unknown preset {name!r} for {method}; choose one of: {', '.join(presets)}")
    return dataclasses.replace(presets[name][1], method=method, preset=name)


def presets_help(method: str = DEFAULT_METHOD) -> str:
    return "\n".join(f"  {name:<8} {doc}" for name, (doc, _) in presets_for(method).items())


def config_from_json(d: dict) -> TrainConfig:
    """A saved config.json -> the config of its method (old runs without `method` are splat)."""
    return config_class(d.get("method") or DEFAULT_METHOD).from_json(d)


def _flag(argv: list[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in argv)


def _cuda_wanted(argv: list[str]) -> bool:
    """Will this run be on CUDA (an explicit --device, else whether CUDA is available)?"""
    for i, a in enumerate(argv):
        if a.startswith("--device="):
            return a.split("=", 1)[1].startswith("cuda")
        if a == "--device" and i + 1 < len(argv):
            return argv[i + 1].startswith("cuda")
    import torch

    return torch.cuda.is_available()


def parse_train_args(argv: list[str]) -> tuple[TrainConfig, Optional[Path]]:
    """--method, --preset and --resume first; every other flag overrides a field of the
    preset (or of the resumed run's saved config)."""
    import argparse

    import tyro

    from . import runs

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--resume", default=None)
    pre.add_argument("--method", default=None)
    known, rest = pre.parse_known_args(argv)
    resume = None
    if known.resume is not None:
        resume = Path(known.resume)
        if not runs.is_run_dir(resume):
            raise UserError("not a splatlab run folder (no config.json) to resume", resume)
        if runs.latest_checkpoint(resume) is None:
            raise UserError("run folder has no checkpoint to resume from", resume / runs.CHECKPOINT_DIR)
        if _flag(argv, "--preset"):
            raise UserError("--resume continues with the run's saved config; drop --preset")
        base = config_from_json(runs._read_json(resume / "config.json"))
        if known.method is not None and known.method != base.method:
            raise UserError(f"--resume continues a {base.method} run; drop --method {known.method}")
        method = base.method
    else:
        method = known.method or DEFAULT_METHOD
        name = known.preset
        if name is None:
            # The 30k-step schedule would take hours on a CPU: pick the CPU preset there,
            # say so, and let --preset override.
            cpu = "cpu" in presets_for(method) and not _cuda_wanted(rest)
            name = "cpu" if cpu else "default"
            if cpu and not _flag(rest, "-h") and not _flag(rest, "--help"):
                print("no CUDA GPU: using --preset cpu (pass --preset to choose another)", file=sys.stderr)
        base = preset(name, method)
    description = (
        f"Train a scene representation (--method: {', '.join(RENDERERS)}; this help: {method}). "
        "Pick a preset with --preset NAME (default: default), then override any field below."
        f"\n\npresets:\n{presets_help(method)}"
        "\n\n--resume RUN continues a run folder from its newest checkpoint, with its saved config."
    )
    cfg = tyro.cli(type(base), default=base, args=rest, description=description, prog="splatlab train")
    return dataclasses.replace(cfg, method=method), resume


__all__ = ["DEFAULT_METHOD", "PRESETS", "TrainConfig", "config_class", "config_from_json",
           "parse_train_args", "preset", "presets_for", "presets_help"]
