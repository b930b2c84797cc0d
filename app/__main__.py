"""`python -m splatlab.app COMMAND ...`: the `splatlab` command, for launchers that run a
module (`torchrun --nproc_per_node N -m splatlab.app train ...`)."""

from .cli import entrypoint

if __name__ == "__main__":
    entrypoint()
