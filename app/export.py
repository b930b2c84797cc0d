"""`splatlab export RUN --format FORMAT --output PATH [format options]`.

RUN is a run folder, a checkpoint or a 3DGS PLY (`runs.load_target`). Every format writes
the dataset's ORIGINAL coordinates. `--format` picks a module from `exporters.EXPORTERS`;
`splatlab export --format mesh --help` lists that format's own options.
"""

from __future__ import annotations

import sys
import warnings

from .errors import UserError


def _format_from_argv(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--format" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--format="):
            return a.split("=", 1)[1]
    return None


def _usage() -> str:
    from .exporters import EXPORTERS, get

    lines = ["usage: splatlab export RUN --format FORMAT --output PATH [--crop-min X Y Z --crop-max X Y Z] [options]",
             "", "RUN: a run folder, a checkpoint (.pt) or a 3DGS .ply. Output is in the dataset's original coordinates.",
             "", "formats:"]
    for name in EXPORTERS:
        lines.append(f"  {name:<15} {get(name).HELP}")
    lines += ["", "`splatlab export --format FORMAT --help` lists that format's options."]
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    import tyro

    from .exporters import EXPORTERS, get

    fmt = _format_from_argv(argv)
    if fmt is None:
        if any(a in ("-h", "--help") for a in argv):
            print(_usage())
            return 0
        raise UserError(f"choose a format with --format ({', '.join(EXPORTERS)})")
    if fmt not in EXPORTERS:
        raise UserError(f"unknown export format {fmt!r}; choose one of: {', '.join(EXPORTERS)}")
    module = get(fmt)
    opts = tyro.cli(module.Options, args=argv, prog=f"splatlab export --format {fmt}",
                    description=module.Options.__doc__)
    opts.format = fmt

    from .runs import load_target

    target = load_target(opts.run)
    supported = type(target.renderer).exports
    if fmt not in supported:
        raise UserError(f"a {target.method} model cannot be exported as {fmt}; {target.method} "
                        f"supports: {', '.join(supported) or 'no export formats'}", opts.run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        message = module.export(target, opts)
    for w in caught:  # e.g. NaN/Inf Gaussians dropped: one line each
        print(f"warning: {w.message}", file=sys.stderr)
    print(message)
    return 0
