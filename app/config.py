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

from splatlab.renderers import RENDERERS, UnknownMethod, method_config
from splatlab.renderers.train_config import TrainConfig

from .errors import UserError

DEFAULT_METHOD = TrainConfig.method


def _method_config(method: str):
    # Config modules import no torch: `train --help` and config.json reads stay light.
    try:
        return method_config(method)
    except UnknownMethod as e:
        raise UserError(str(e)) from None


def config_class(method: str = DEFAULT_METHOD) -> type[TrainConfig]:
    return _method_config(method)[0]


def presets_for(method: str = DEFAULT_METHOD) -> dict[str, tuple[str, TrainConfig]]:
    return _method_config(method)[1]


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
    if _flag(argv, "-h") or _flag(argv, "--help"):
        return _cuda_likely()
    import torch

    return torch.cuda.is_available()


def _cuda_likely() -> bool:
    """Whether torch would find CUDA, guessed without importing torch (2 s), for `--help`:
    a CUDA build of torch (torch/version.py names a CUDA version) and an NVIDIA driver."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except OSError:
        return False
    build = re.search(r"^cuda\b.*=\s*['\"]", text, re.M) is not None
    return build and (Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists())


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
            why = "no CUDA GPU" if cpu else "a CUDA GPU"
            if cpu and not _flag(rest, "-h") and not _flag(rest, "--help"):
                print("no CUDA GPU: using --preset cpu (pass --preset to choose another)", file=sys.stderr)
        else:
            why = "--preset"
        base = preset(name, method)
    else_preset = f"preset {base.preset} ({why})" if resume is None else f"the config of {resume}"
    description = (
        f"Train a scene representation (--method: {', '.join(RENDERERS)}; this help: {method}). "
        "Pick a preset with --preset NAME (default: cpu without a CUDA GPU, else default), then override "
        f"any field below; the defaults shown are those of {else_preset}."
        f"\n\npresets:\n{presets_help(method)}"
        "\n\n--resume RUN continues a run folder from its newest checkpoint, with its saved config."
    )
    cfg = tyro.cli(type(base), default=base, args=rest, description=description, prog="splatlab train")
    return dataclasses.replace(cfg, method=method), resume


__all__ = ["DEFAULT_METHOD", "PRESETS", "TrainConfig", "config_class", "config_from_json",
           "parse_train_args", "preset", "presets_for", "presets_help"]
