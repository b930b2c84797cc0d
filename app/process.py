"""`splatlab process INPUT`: a folder of photos or a video -> a posed COLMAP scene.

The command only parses its options and reports; the work (staging the images, SfM,
frame extraction, the cache and the output folder's ownership) is input work and lives
in `splatlab.scenes.capture.process`, whose docstring describes the output layout.
"""

from __future__ import annotations


def run(argv: list[str]) -> int:
    import tyro
    from rich.console import Console

    from splatlab.scenes.capture.process import ProcessArgs, process

    args = tyro.cli(ProcessArgs, args=argv, prog="splatlab process",
                    description="Photos or a video -> posed COLMAP scene (structure-from-motion with pycolmap).",
                    config=(tyro.conf.PositionalRequiredArgs,))
    result = process(args)
    # The path on stdout, alone, so scripts can capture it.
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"COLMAP dataset: [bold]{result.output}[/]  "
                                                                f"(train it: splatlab train {result.output})")
    print(result.output)
    return 0
