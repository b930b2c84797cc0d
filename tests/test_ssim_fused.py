"""The fused photometric loss kernel (rasterizer/ssim_triton.py) against its torch twin
(rasterizer/ssim.py): loss, train MSE and the gradient with respect to the render.

On CPU the kernel runs in triton's interpreter (TRITON_INTERPRET=1); the test skips,
saying so, when triton is not installed (it is not a splatlab dependency). The `cuda`
tests compile it for the GPU, at training image sizes."""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

from splatlab.app import losses
from splatlab.app.errors import UserError
from splatlab.rasterizer import ssim

KERNEL = "splatlab.rasterizer.ssim_triton"

# Without a GPU, triton kernels run in its interpreter. The variable is read when
# triton.language is first imported, which torch may do later in this session (its
# optimizers load dynamo), so it is set at collection, before any test runs.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _images(b, h, w, rgb_slice, dtype=torch.float32, device="cpu", seed=0):
    """A render (requires grad; optionally the RGB slice of an RGBA tensor, as the
    rasterizer returns it) and a nearby ground truth, both B H W 3."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, h, w, 3, generator=g, dtype=torch.float64)
    x = (gt + 0.15 * torch.randn(b, h, w, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    gt = gt.to(dtype=dtype, device=device)
    if rgb_slice:
        full = torch.cat([x, torch.rand(b, h, w, 1, generator=g, dtype=torch.float64)], -1)
        full = full.to(dtype=dtype, device=device).requires_grad_()
        return full, full[..., :3], gt
    x = x.to(dtype=dtype, device=device).requires_grad_()
    return x, x, gt


def _fused(render, gt, lam, rgb_loss="l1"):
    return ssim.photometric_loss(render, gt, lam, rgb_loss, backend="triton")


def _loss_and_grad(fn, leaf, render, gt, lam, rgb_loss):
    loss, mse = fn(render, gt, lam, rgb_loss)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), mse, grad


def _check_parity(fused, b, h, w, rgb_loss, rgb_slice, device):
    lam = 0.2
    leaf, render, gt = _images(b, h, w, rgb_slice, device=device)
    got = _loss_and_grad(fused, leaf, render, gt, lam, rgb_loss)
    want = _loss_and_grad(ssim.photometric_loss_torch, leaf, render, gt, lam, rgb_loss)
    # float64 twin: the answer both float32 paths approximate
    leaf64, render64, gt64 = _images(b, h, w, rgb_slice, dtype=torch.float64, device=device)
    exact = _loss_and_grad(ssim.photometric_loss_torch, leaf64, render64, gt64, lam, rgb_loss)
    assert got[0].dtype == torch.float32 and got[2].shape == leaf.shape
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-7)
    assert abs(float(got[0]) - float(exact[0])) < 1e-5
    scale = float(exact[2].abs().max())
    assert scale > 0
    torch.testing.assert_close(got[2], want[2], rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(got[2].double(), exact[2], rtol=0, atol=1e-4 * scale)
    if rgb_slice:  # nothing flows into the alpha channel
        assert float(got[2][..., 3].abs().max()) == 0.0


def _interpreting() -> bool:
    from triton.runtime.interpreter import InterpretedFunction
    import triton.language.standard as std

    return isinstance(std.sum, InterpretedFunction)


@pytest.fixture
def interpreted_kernel(monkeypatch):
    """The kernel module under triton's CPU interpreter, imported afresh (and dropped
    after, so a compiled import later in the session is unaffected)."""
    if not os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("CUDA is available: the kernel is tested compiled (the cuda tests)")
    if "triton" in sys.modules and not _interpreting():
        pytest.skip("triton was imported before TRITON_INTERPRET was set; run this file alone")
    pytest.importorskip("triton", reason="triton is not installed: the fused loss kernel is untested here")
    sys.modules.pop(KERNEL, None)
    yield importlib.import_module(KERNEL)
    sys.modules.pop(KERNEL, None)


# (B, H, W): one window only; odd sizes crossing the 8x32 tile edges; a batch of two.
# The interpreter runs every program's 121 window taps in Python: the larger are slow.
@pytest.mark.parametrize("shape,rgb_loss,rgb_slice", [
    ((1, 11, 11), "l1", False),
    pytest.param((1, 23, 37), "mse", True, marks=pytest.mark.slow),
    pytest.param((2, 17, 40), "l1", True, marks=pytest.mark.slow),
])
def test_fused_matches_twin_interpreted(interpreted_kernel, shape, rgb_loss, rgb_slice):
    _check_parity(_fused, *shape, rgb_loss, rgb_slice, "cpu")


def test_fused_rejects_what_it_cannot_do(interpreted_kernel):
    f = _fused
    x = torch.rand(1, 10, 20, 3)
    with pytest.raises(ValueError, match="smaller than"):
        f(x, x, 0.2)
    with pytest.raises(ValueError, match="float32"):
        f(x.double(), x.double(), 0.2)
    y = torch.rand(1, 12, 12, 3, requires_grad=True)
    with pytest.raises(ValueError, match="gt"):
        f(y.detach(), y, 0.2)


@pytest.mark.cuda
@pytest.mark.parametrize("shape,rgb_loss,rgb_slice", [
    ((1, 11, 11), "l1", False),
    ((1, 23, 37), "mse", True),
    ((2, 17, 40), "l1", True),
    ((1, 545, 979), "l1", True),  # odd, beer-like aspect
    ((1, 720, 1280), "l1", True),
    ((3, 64, 97), "mse", False),
])
def test_fused_matches_twin_cuda(shape, rgb_loss, rgb_slice):
    pytest.importorskip("triton", reason="triton is not installed on this GPU machine")
    _check_parity(_fused, *shape, rgb_loss, rgb_slice, "cuda")


@pytest.mark.cuda
def test_auto_takes_fused_kernel_on_cuda(monkeypatch):
    pytest.importorskip("triton", reason="triton is not installed on this GPU machine")
    leaf, render, gt = _images(1, 32, 48, True, device="cuda")
    assert ssim.fused_supported(render, gt, 0.2)
    loss, _ = losses.photometric_loss(render, gt, 0.2)
    assert "Fused" in type(loss.grad_fn).__name__
    monkeypatch.setenv(losses.LOSS_BACKEND_ENV, "torch")
    loss, _ = losses.photometric_loss(render, gt, 0.2)
    assert "Fused" not in type(loss.grad_fn).__name__


def test_cpu_loss_is_the_twin(monkeypatch):
    """On CPU tensors the loss is the torch twin, bit for bit (the CPU demo's numbers do
    not move), whatever `auto` finds installed; forcing triton there is a clear error."""
    monkeypatch.delenv(losses.LOSS_BACKEND_ENV, raising=False)
    leaf, render, gt = _images(1, 16, 19, True)
    got = _loss_and_grad(losses.photometric_loss, leaf, render, gt, 0.2, "l1")
    want = _loss_and_grad(ssim.photometric_loss_torch, leaf, render, gt, 0.2, "l1")
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert not ssim.fused_supported(render, gt, 0.2)
    monkeypatch.setenv(losses.LOSS_BACKEND_ENV, "triton")
    with pytest.raises(UserError, match="CUDA"):
        losses.photometric_loss(render, gt, 0.2)
    monkeypatch.setenv(losses.LOSS_BACKEND_ENV, "fast")
    with pytest.raises(UserError, match="auto, torch or triton"):
        losses.photometric_loss(render, gt, 0.2)


def test_warm_up_is_a_no_op_off_cuda(monkeypatch):
    monkeypatch.delenv(losses.LOSS_BACKEND_ENV, raising=False)
    assert ssim.warm_up(16, 24, "cpu") is False
    assert losses.warm_up({(24, 16), (32, 20)}, torch.device("cpu"), 0.2) == 0


@pytest.mark.cuda
def test_warm_up_compiles_for_each_size(monkeypatch):
    pytest.importorskip("triton", reason="triton is not installed on this GPU machine")
    monkeypatch.delenv(losses.LOSS_BACKEND_ENV, raising=False)
    assert losses.warm_up({(24, 16), (33, 21)}, torch.device("cuda"), 0.2, "mse") == 2
    monkeypatch.setenv(losses.LOSS_BACKEND_ENV, "torch")
    assert losses.warm_up({(24, 16)}, torch.device("cuda"), 0.2) == 0
