"""Training data: the device, the scene, and the samplers that turn it into `Batch`es.

Shared by train, eval and view (it imports nothing of the loop). Images sit on the
device as uint8; a sampler's `next(step)` never waits for the GPU: every index tensor
it needs is built once, and per-step randomness is drawn on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from splatlab.renderers.base import Batch, BatchKind
    from splatlab.scenes.types import Cameras, Scene


def resolve_device(name: str) -> "torch.device":
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here (use --device cpu)")
    return dev


def load_data(cfg) -> "Scene":
    """DATA -> Scene: `demo`/None is the built-in scene; a known scene format loads
    directly; a bare photo folder or a video is posed first by `splatlab process`."""
    from splatlab.scenes import SceneError, find_format, load_scene

    from splatlab.scenes.capture.video import is_video

    how = dict(format=getattr(cfg, "format", None), images=getattr(cfg, "images", None),
               colmap_path=getattr(cfg, "colmap_path", None))
    from splatlab.scenes import demo

    if cfg.data is None or demo.sniff(cfg.data):  # `demo` or a variant such as `demo:zoom`
        return load_scene(cfg.data, downscale=cfg.downscale, test_every=cfg.test_every)
    path = Path(cfg.data)
    if not path.exists():
        raise UserError("no such scene folder, photo folder or video", path)
    try:
        needs_poses = how["format"] in (None, "images") and find_format(path).NAME == "images"  # a bare photo folder
    except SceneError:
        if not is_video(path):
            raise
        needs_poses = True
    if needs_poses:
        from splatlab.scenes.capture.process import posed_dataset

        path = Path(posed_dataset(path))
    return load_scene(path, downscale=cfg.downscale, test_every=cfg.test_every, **how)


def cameras_on(cams: "Cameras", device) -> "Cameras":
    """Float tensors on `device`, image sizes left on the host (reading them never syncs)."""
    import dataclasses

    import torch

    return dataclasses.replace(cams, **{
        f.name: getattr(cams, f.name).to(device) for f in dataclasses.fields(cams)
        if isinstance(getattr(cams, f.name), torch.Tensor) and getattr(cams, f.name).is_floating_point()
    })


def _load_images(scene: "Scene", with_alpha: bool, device) -> list:
    import torch

    import numpy as np

    # A cached image can be a read-only array: torch.from_numpy warns ("not writable") on
    # those, so copy exactly those (np.require copies only when the array is read-only).
    return [torch.from_numpy(np.require(scene.images.load_rgba(i) if with_alpha else scene.images[i],
                                        requirements="W")).to(device)
            for i in scene.train_idx]


def _over(gt: "torch.Tensor", bg: "torch.Tensor") -> "torch.Tensor":
    """RGBA (... 4) composited over per-item backgrounds (broadcastable ... 3)."""
    return gt[..., :3] * gt[..., 3:] + bg * (1 - gt[..., 3:])


def _area(img: "torch.Tensor", size: tuple[int, int]) -> "torch.Tensor":
    """B H W C resized to `size` (h, w) by area averaging."""
    import torch.nn.functional as F

    return F.interpolate(img.permute(0, 3, 1, 2), size=size, mode="area").permute(0, 2, 3, 1).contiguous()


def use_masks(scene: "Scene", masks: Optional[bool]) -> bool:
    """--masks/--no-masks against what the scene has (None: use them when it has them)."""
    if masks and not scene.images.has_masks:
        raise UserError("--masks: the scene has no masks (nerfstudio `mask_path`, or a masks/ "
                        "folder beside images/)", scene.root)
    return scene.images.has_masks if masks is None else bool(masks)


class ImageSampler:
    """One training view per step: shuffled epochs as a pure function of (seed, epoch), so
    a resumed run needs no saved sampler state. With `random_background` (alpha scenes
    only) each step's image is composited on a random colour. With `masks` each batch
    carries its image's mask (1 where the loss counts); a view whose mask keeps every pixel
    carries none. Of `world_size` processes, rank r takes the (step * world_size + r)-th
    view of the same shuffled sequence: each step is a batch of world_size different views.
    With `coarse_to_fine` N > 0 the first N steps see their views at reduced resolution
    (`scale_at`): images area-averaged, intrinsics scaled to match (Cameras.scaled)."""

    def __init__(self, scene: "Scene", device, seed: int, random_background: bool = False,
                 masks: bool = False, rank: int = 0, world_size: int = 1, coarse_to_fine: int = 0):
        import torch

        if coarse_to_fine < 0:
            raise UserError(f"--coarse-to-fine must be 0 (off) or a number of steps, got {coarse_to_fine}")
        self.coarse_to_fine = int(coarse_to_fine)
        self._scaled: dict = {}  # (view, factor) -> its Cameras at that factor (one object: renderers cache by it)
        self.device, self.seed, self.n = device, seed, len(scene.train_idx)
        self.rank, self.world_size = rank, world_size
        if world_size > 1:
            sizes = {(int(w), int(h)) for w, h in zip(scene.cameras.width[scene.train_idx],
                                                      scene.cameras.height[scene.train_idx])}
            if len(sizes) > 1:
                raise UserError(f"several processes need training images of one size (the ranks render "
                                f"each step's views together); this scene has {len(sizes)} sizes", scene.root)
        self.random_bg = random_background and scene.images.alpha(scene.train_idx[0]) is not None
        self.images = _load_images(scene, self.random_bg, device)
        self.masks: list = [None] * self.n
        if masks:
            for k, i in enumerate(scene.train_idx):
                m = scene.images.mask(i)
                if m is not None and not (m > 0).all():
                    self.masks[k] = torch.from_numpy(m > 0).to(device)[None, ..., None]
        cams = cameras_on(scene.cameras[scene.train_idx], device)
        self.cameras = [cams[i] for i in range(self.n)]
        self.image_idx = [torch.tensor([i], device=device) for i in range(self.n)]
        self.background = (None if scene.background is None
                           else torch.tensor([scene.background], dtype=torch.float32, device=device))
        self._order: list[int] = []
        self._epoch = -1

    def scale_at(self, step: int, height: int, width: int) -> int:
        """The downscale factor of `step`: 4 for the first half of the coarse-to-fine steps,
        2 for the second half, then 1; never so coarse that the short side drops below 32
        pixels (SSIM's 11-pixel window needs room)."""
        n = self.coarse_to_fine
        f = 1 if step >= n else (4 if step < n // 2 else 2)
        while f > 1 and min(height, width) // f < 32:
            f //= 2
        return f

    def order(self, epoch: int) -> list[int]:
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def next(self, step: int) -> "Batch":
        import torch

        from splatlab.renderers.base import Batch

        epoch, pos = divmod(step * self.world_size + self.rank, self.n)
        if epoch != self._epoch:
            self._order, self._epoch = self.order(epoch), epoch
        i = self._order[pos]
        gt = self.images[i].unsqueeze(0).div(255.0)  # 1 H W 3|4 float: one kernel from uint8
        bg = self.background
        if self.random_bg:
            bg = torch.rand(1, 3, device=self.device)
            gt = _over(gt, bg[:, None, None, :])
        cams, mask = self.cameras[i], self.masks[i]
        f = self.scale_at(step, gt.shape[1], gt.shape[2])
        if f > 1:
            cams = self._scaled.get((i, f))
            if cams is None:
                cams = self._scaled[(i, f)] = self.cameras[i].scaled(1.0 / f)
            size = (int(cams.height[0]), int(cams.width[0]))
            gt = _area(gt, size)
            if mask is not None:  # a pixel counts where all it averages counted
                mask = _area(mask.float(), size) > 0.999
        return Batch("image", cams, gt, self.image_idx[i], background=bg, mask=mask)


class RaySampler:
    """R random pixels across all training images per step (uniform over pixels), gathered
    from the uint8 images on the device. `pixels` are pixel centres (x + 0.5, y + 0.5)."""

    def __init__(self, scene: "Scene", device, rays_per_batch: int, random_background: bool = False):
        import torch

        if rays_per_batch < 1:
            raise UserError(f"--rays-per-batch must be positive, got {rays_per_batch}")
        self.device, self.R = device, int(rays_per_batch)
        self.random_bg = random_background and scene.images.alpha(scene.train_idx[0]) is not None
        imgs = _load_images(scene, self.random_bg, device)
        self.pixels = torch.cat([im.reshape(-1, im.shape[-1]) for im in imgs])  # P 3|4 uint8
        sizes = [im.shape[0] * im.shape[1] for im in imgs]
        self.offsets = torch.tensor([0] + sizes[:-1], device=device).cumsum(0)  # first pixel of each
        self.widths = torch.tensor([im.shape[1] for im in imgs], device=device)
        self.total = sum(sizes)
        self.cameras = cameras_on(scene.cameras[scene.train_idx], device)
        self.background = (None if scene.background is None
                           else torch.tensor([scene.background], dtype=torch.float32, device=device))

    def resize(self, rays: int) -> None:
        """Draw `rays` rays from the next step on (a renderer's `rays_wanted`)."""
        if rays < 1:
            raise ValueError(f"a ray batch needs at least one ray, got {rays}")
        self.R = int(rays)

    def next(self, step: int) -> "Batch":
        import torch

        from splatlab.renderers.base import Batch

        flat = torch.randint(0, self.total, (self.R,), device=self.device)
        img = torch.searchsorted(self.offsets, flat, right=True) - 1
        local = flat - self.offsets[img]
        w = self.widths[img]
        xy = torch.stack([local % w, local // w], -1).float() + 0.5
        gt = self.pixels[flat].float() / 255.0  # R 3|4
        bg = None if self.background is None else self.background.expand(self.R, 3)
        if self.random_bg:
            bg = torch.rand(self.R, 3, device=self.device)
            gt = _over(gt, bg)
        return Batch("rays", self.cameras, gt, img, pixels=xy, background=bg)


def make_sampler(kind: "BatchKind", scene: "Scene", device, *, seed: int,
                 random_background: bool = False, rays_per_batch: Optional[int] = None,
                 masks: Optional[bool] = None, rank: int = 0, world_size: int = 1, coarse_to_fine: int = 0):
    """The sampler for a renderer's `batch_kind`. `masks`: --masks/--no-masks (None: use
    the scene's masks where it has them; image batches only for now). `rank`, `world_size`:
    this process's share of each step's views, of several processes. `coarse_to_fine`:
    steps at reduced resolution (image batches)."""
    if kind == "image":
        return ImageSampler(scene, device, seed, random_background, use_masks(scene, masks),
                            rank, world_size, coarse_to_fine)
    if kind == "rays":
        return RaySampler(scene, device, rays_per_batch or 4096, random_background)
    raise ValueError(f"unknown batch kind {kind!r}")


__all__ = ["ImageSampler", "RaySampler", "cameras_on", "load_data", "make_sampler", "resolve_device"]
