"""Count the aten ops of each training step outside the rasterizer, on any device (a CPU
is enough): what the host dispatches per step besides gsplat's rasterization, i.e. the
optimizer, the strategy, the loss, the activations, the sampler and the loop.

    python benchmarks/step_ops.py                               # demo, fast preset, CPU
    python benchmarks/step_ops.py --data demo --preset cpu --steps 30 --by-place
    python benchmarks/step_ops.py -- --strategy default         # any TrainConfig field after --

The loop is the real one (`splatlab.app.train.train`). A step's window runs from one
`ModelUpdated` event to the next, so it holds that step's render, loss, backward,
optimizer and strategy updates, plus the log/checkpoint of the previous step when there
was one. Black boxes are left out: what they dispatch forward (within the call) and
backward (the autograd nodes built within the call, found by walking the graph from
their outputs back to their inputs); each call counts as one "stand-in". They are the
rasterizer (the reference on CPU stands in for gsplat; gsplat itself on CUDA) and the
CPU twins of what is one GPU kernel on CUDA: the fused L1+SSIM loss
(`ssim.photometric_loss_torch`) and gsplat's MCMC relocation and covariance kernels.

Per step it reports: `ops` (every aten op), `launches` (ops that are not views, not
allocations and not scalar reads: roughly one kernel each on a GPU), `syncs` (ops that
read a device value back to the host: `.item()`, `.tolist()`, `nonzero`, boolean
indexing, ...).
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import split_extra  # noqa: E402

# Ops that make the host wait for a device value (or allocate by one).
SYNC_OPS = {"_local_scalar_dense", "nonzero", "nonzero_static", "masked_select", "is_nonzero",
            "equal", "unique", "_unique2", "unique_consecutive", "unique_dim", "repeat_interleave",
            "item"}
# Ops that launch no kernel: allocation and metadata.
FREE_OPS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh",
            "set_", "resize_", "_has_compatible_shallow_copy_type", "is_same_size", "_to_copy_meta",
            "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "size", "stride", "dim",
            "_nested_tensor_size"}


def _tensors(out) -> list:
    """The tensors in a black box's result (a tensor, a tuple, or a dataclass of them)."""
    import dataclasses

    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if dataclasses.is_dataclass(out):
        return [t for f in dataclasses.fields(out) for t in _tensors(getattr(out, f.name))]
    return []


def op_name(func) -> str:
    return func._schema.name.split("::")[-1]


@dataclass
class StepCount:
    step: int
    ops: int = 0
    launches: int = 0
    syncs: int = 0
    by_op: collections.Counter = field(default_factory=collections.Counter)
    by_place: collections.Counter = field(default_factory=collections.Counter)
    sync_places: list = field(default_factory=list)
    stand_ins: collections.Counter = field(default_factory=collections.Counter)


_HERE = str(Path(__file__).resolve())
_REPO = str(Path(__file__).resolve().parents[1]) + os.sep


def _place(node) -> str:
    """Where an op comes from: the backward node running it, else the innermost frame of
    splatlab, gsplat or torch.optim (file:function)."""
    if node is not None:
        return f"backward {node.name()}"
    f = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename
        if fn != _HERE and (fn.startswith(_REPO) or "/splatlab/" in fn or "/gsplat/" in fn or "/torch/optim/" in fn):
            parts = Path(fn).parts
            key = "/".join(parts[-2:])
            return f"{key}:{f.f_code.co_name}"
        f = f.f_back
    return "other"


class OpCounter:
    """A TorchDispatchMode (built lazily: torch imports on use) that counts ops per step
    window, skipping the rasterizer's forward and backward."""

    def __init__(self, by_place: bool = False):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counter._see(func)
                return func(*args, **(kwargs or {}))

        self.mode = _Mode()
        self.by_place = by_place
        self.inside_box = 0
        self.box_nodes: list = []  # kept alive so their ids stay unique
        self.box_ids: set[int] = set()
        self.current: Optional[StepCount] = None
        self.steps: list[StepCount] = []
        self.active = False

    # ---- black boxes: the rasterizer and the CPU twins of single GPU kernels ----------
    def wrap(self, mod, name: str):
        """Patch `mod.name` so that what it dispatches, forward and backward (the autograd
        nodes it builds), is not counted; each call counts as one stand-in. Returns an
        undo function."""
        import torch

        orig = getattr(mod, name)

        def wrapped(*a, **kw):
            self.inside_box += 1
            try:
                out = orig(*a, **kw)
            finally:
                self.inside_box -= 1
            if self.current is not None:
                self.current.stand_ins[name] += 1
                inputs = [t for t in (*a, *kw.values()) if isinstance(t, torch.Tensor)]
                self._mark_graph(_tensors(out), inputs)
            return out

        setattr(mod, name, wrapped)
        return lambda: setattr(mod, name, orig)

    def wrap_black_boxes(self):
        """The rasterizer (reference on CPU, gsplat on CUDA), and the torch twins that stand
        in on CPU for one GPU kernel each: the fused photometric loss, the hash encoding
        (the NeRF's Triton kernel) and gsplat's MCMC relocation and covariance kernels. Returns an undo function."""
        from splatlab.rasterizer import gsplat_backend, hashgrid, reference, ssim
        from splatlab.renderers.splat import relocation

        undo = [self.wrap(reference, "rasterize"), self.wrap(gsplat_backend, "rasterize"),
                self.wrap(ssim, "photometric_loss_torch"), self.wrap(hashgrid, "hash_encode_torch"),
                self.wrap(relocation, "compute_relocation"), self.wrap(relocation, "quat_scale_to_covar")]

        def restore():
            for u in reversed(undo):
                u()

        return restore

    def _mark_graph(self, outs, inputs) -> None:
        stop = {id(t.grad_fn) for t in inputs if t.grad_fn is not None}
        todo = [t.grad_fn for t in outs if t.grad_fn is not None]
        while todo:
            n = todo.pop()
            if n is None or id(n) in self.box_ids or id(n) in stop or n.name().endswith("AccumulateGrad"):
                continue
            self.box_ids.add(id(n))
            self.box_nodes.append(n)
            todo.extend(nf for nf, _ in n.next_functions)

    # ---- counting ------------------------------------------------------------------
    def _see(self, func) -> None:
        import torch

        c = self.current
        if c is None or self.inside_box:
            return
        node = torch._C._current_autograd_node()
        if node is not None and id(node) in self.box_ids:
            return
        name = op_name(func)
        c.ops += 1
        c.by_op[name] += 1
        sync = name in SYNC_OPS
        if sync:
            c.syncs += 1
            c.sync_places.append(f"{name} at {_place(node)}")
        elif not (func.is_view or name in FREE_OPS):
            c.launches += 1
        if self.by_place:
            c.by_place[_place(node)] += 1

    def start_step(self, step: int) -> None:
        if self.current is not None:
            self.steps.append(self.current)
        self.box_nodes.clear()
        self.box_ids.clear()
        self.current = StepCount(step)
        if not self.active:
            self.mode.__enter__()
            self.active = True

    def stop(self) -> None:
        if self.current is not None:
            self.steps.append(self.current)
            self.current = None
        if self.active:
            self.mode.__exit__(None, None, None)
            self.active = False
        self.box_nodes.clear()
        self.box_ids.clear()


def count_steps(train_argv: list[str], first: int, last: int, by_place: bool = False) -> list[StepCount]:
    """Train with `train_argv` (a `splatlab train` command line) and count the ops of the
    steps first+1 .. last (1-based step numbers as the loop reports them: the window
    that ends with ModelUpdated(k) is step k)."""
    from splatlab.app.events import EventBus, ModelUpdated
    from splatlab.app.train import parse_args, train

    counter = OpCounter(by_place=by_place)

    def on_model(e: ModelUpdated) -> None:
        if first <= e.step < last:
            counter.start_step(e.step + 1)
        elif e.step >= last:
            counter.stop()

    cfg, _ = parse_args(train_argv)
    bus = EventBus()
    bus.subscribe(on_model, ModelUpdated)
    restore = counter.wrap_black_boxes()
    try:
        train(cfg, bus=bus)
    finally:
        counter.stop()
        restore()
    return [s for s in counter.steps if first < s.step <= last]


def demo_argv(out: str, preset: str, steps: int, data: str = "demo", extra: Optional[list[str]] = None,
              log_every: int = 10) -> list[str]:
    return [data, "--preset", preset, "--output", out, "--steps", str(steps), "--device", "cpu",
            "--log-every", str(log_every), "--checkpoint-every", str(10 * steps), "--no-save-renders",
            *(extra or [])]


def main(argv: list[str]) -> int:
    argv, extra = split_extra(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="demo")
    p.add_argument("--preset", default="fast")
    p.add_argument("--start", type=int, default=5, help="uncounted steps first")
    p.add_argument("--steps", type=int, default=20, help="counted steps")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--downscale", type=int, default=4, help="image downscale (the op count does not depend on it)")
    p.add_argument("--by-place", action="store_true", help="ops per source place (slower)")
    p.add_argument("--rows", type=int, default=40)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    total = args.start + args.steps
    out = tempfile.mkdtemp(prefix="step_ops-")
    argv_t = demo_argv(out + "/run", args.preset, total, args.data,
                       ["--downscale", str(args.downscale), *extra], args.log_every)
    steps = count_steps(argv_t, args.start, total, by_place=args.by_place)
    plain = [s for s in steps if (s.step - 1) % args.log_every != 0]
    print(f"{len(steps)} steps counted ({args.data}, --preset {args.preset}); outside the rasterizer:")
    print(f"{'step':>6} {'ops':>6} {'launches':>9} {'syncs':>6}  stand-ins")
    for s in steps:
        note = "  (after a log step)" if s.step > 1 and (s.step - 1) % args.log_every == 0 else ""
        boxes = ", ".join(f"{k} x{v}" for k, v in sorted(s.stand_ins.items()))
        print(f"{s.step:>6} {s.ops:>6} {s.launches:>9} {s.syncs:>6}  {boxes}{note}")
    if plain:
        med = sorted(s.launches for s in plain)[len(plain) // 2]
        print(f"median launches per step (no log in the window): {med}; "
              f"median ops: {sorted(s.ops for s in plain)[len(plain) // 2]}")
    syncs = collections.Counter(p for s in steps for p in s.sync_places)
    if syncs:
        print("host reads:")
        for place, n in syncs.most_common():
            print(f"  {n:>4}  {place}")
    agg = collections.Counter()
    for s in plain:
        agg.update(s.by_op)
    print(f"ops per step by name (mean over {len(plain)} steps):")
    for name, n in agg.most_common(args.rows):
        print(f"  {n / max(len(plain), 1):7.1f}  {name}")
    if args.by_place:
        places = collections.Counter()
        for s in plain:
            places.update(s.by_place)
        print("ops per step by place:")
        for place, n in places.most_common(args.rows):
            print(f"  {n / max(len(plain), 1):7.1f}  {place}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
