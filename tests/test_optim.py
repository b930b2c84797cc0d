"""rasterizer/optim.py: selective Adam (its torch twin against a float64 loop, gsplat's
CUDA kernel against the twin), the per-group factory and the visibility hand-off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splatlab.rasterizer.optim import SelectiveAdam, hand_visibility, make_adam, selective_adam_torch

SHAPES = [(9, 3), (9, 1, 3), (9,)]  # means/scales, sh0, opacities


def _reference(p, grads, masks, lr, b1, b2, eps):
    """Row by row in float64: Adam without bias correction, rows not visible untouched."""
    p, m, v = p.astype(np.float64).copy(), np.zeros_like(p, np.float64), np.zeros_like(p, np.float64)
    for g, vis in zip(grads, masks):
        for i in np.flatnonzero(vis):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            p[i] = p[i] - lr * m[i] / (np.sqrt(v[i]) + eps)
    return p, m, v


@pytest.mark.parametrize("shape", SHAPES)
def test_selective_adam_twin_matches_reference(shape):
    gen = torch.Generator().manual_seed(3)
    p0 = torch.randn(shape, generator=gen)
    grads = [torch.randn(shape, generator=gen) for _ in range(3)]
    masks = [torch.rand(shape[0], generator=gen) > 0.5 for _ in range(3)]
    masks[0][0], masks[1][0], masks[2][0] = False, False, False  # row 0 is never seen
    masks[0][1] = True
    param = torch.nn.Parameter(p0.clone())
    opt = SelectiveAdam([{"params": [param], "lr": 0.01, "name": "x"}], lr=0.01, eps=1e-15)
    for g, vis in zip(grads, masks):
        param.grad = g.clone()
        opt.visibility = vis
        opt.step()
        assert opt.visibility is None  # consumed: the next step needs the next render's mask
    want_p, want_m, want_v = _reference(p0.numpy(), [g.numpy() for g in grads],
                                        [m.numpy() for m in masks], 0.01, 0.9, 0.999, 1e-15)
    st = opt.state[param]
    np.testing.assert_allclose(param.detach().numpy(), want_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st["exp_avg"].numpy(), want_m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(st["exp_avg_sq"].numpy(), want_v, rtol=1e-5, atol=1e-9)
    assert torch.equal(param.detach()[0], p0[0]) and not st["exp_avg"][0].any()


def test_selective_adam_refuses_a_missing_or_wrong_mask():
    param = torch.nn.Parameter(torch.zeros(4, 3))
    opt = SelectiveAdam([param], lr=0.1)
    param.grad = torch.ones(4, 3)
    with pytest.raises(RuntimeError, match="visibility"):
        opt.step()
    opt.visibility = torch.ones(5, dtype=torch.bool)
    with pytest.raises(ValueError, match="rows"):
        opt.step()


def test_make_adam_falls_back_to_adam_off_cuda():
    p = torch.nn.Parameter(torch.zeros(4, 3))
    opt = make_adam([p], 1e-3, 1e-15, name="means", selective=True)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["name"] == "means"
    assert opt.param_groups[0]["eps"] == 1e-15 and opt.param_groups[0]["lr"] == 1e-3


def test_hand_visibility_sets_selective_optimizers_only():
    a = SelectiveAdam([torch.nn.Parameter(torch.zeros(3, 3))], lr=0.1)
    b = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3, 3))], lr=0.1)
    visible = torch.tensor([[True, False, False], [False, False, True]])  # C=2 cameras, N=3
    hand_visibility({"means": a, "shN": b}, visible)
    assert a.visibility.tolist() == [True, False, True]
    assert not hasattr(b, "visibility")


def test_gsplat_strategy_ops_edit_selective_adam():
    """gsplat's densification ops (here: remove) rewrite a SelectiveAdam's parameters and
    moments like any Adam's, so the next masked step lines up."""
    from gsplat.strategy.ops import remove

    params = torch.nn.ParameterDict({"means": torch.nn.Parameter(torch.randn(5, 3))})
    opts = {"means": SelectiveAdam([{"params": [params["means"]], "name": "means"}], lr=0.1)}
    params["means"].grad = torch.ones(5, 3)
    opts["means"].visibility = torch.ones(5, dtype=torch.bool)
    opts["means"].step()
    remove(params, opts, {}, torch.tensor([True, False, False, True, False]))
    p = params["means"]
    assert p.shape == (3, 3) and opts["means"].state[p]["exp_avg"].shape == (3, 3)
    p.grad = torch.ones(3, 3)
    opts["means"].visibility = torch.tensor([True, False, True])
    opts["means"].step()


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(10_000, 3), (10_000, 15, 3), (10_000,)])
def test_selective_adam_cuda_kernel_matches_twin(shape):
    gen = torch.Generator().manual_seed(5)
    p0 = torch.randn(shape, generator=gen)
    cpu = torch.nn.Parameter(p0.clone())
    gpu = torch.nn.Parameter(p0.clone().cuda())
    opt_cpu = SelectiveAdam([cpu], lr=0.01)
    opt_gpu = SelectiveAdam([gpu], lr=0.01)
    for _ in range(3):
        g, vis = torch.randn(shape, generator=gen), torch.rand(shape[0], generator=gen) > 0.3
        cpu.grad, gpu.grad = g.clone(), g.cuda()
        opt_cpu.visibility, opt_gpu.visibility = vis, vis.cuda()
        opt_cpu.step()
        opt_gpu.step()
    torch.testing.assert_close(gpu.detach().cpu(), cpu.detach(), rtol=1e-5, atol=1e-6)
    for k in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(opt_gpu.state[gpu][k].cpu(), opt_cpu.state[cpu][k], rtol=1e-5, atol=1e-7)
    assert type(make_adam([gpu], 1e-3, 1e-15, selective=True)) is SelectiveAdam


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_splat_renderer_hands_the_step_visibility_to_selective_adam(device):
    """With `selective_adam`, the splat renderer's before_backward gives every selective
    optimizer the Gaussians on screen in this step's render; a step then leaves the
    off-screen ones (parameters and moments) exactly as they were. CPU: the torch twin;
    CUDA: gsplat's kernel, built by `make_adam` as the loop would."""
    import dataclasses

    from splatlab.app.data import ImageSampler
    from splatlab.renderers.splat import SplatConfig, SplatModel, SplatRenderer
    from splatlab.scenes import load_scene

    scene = load_scene(None, downscale=8)
    cfg = dataclasses.replace(SplatConfig(), selective_adam=True, sh_degree=0)
    dev = torch.device(device)
    # Gaussians in a box far larger than the scene: many are off screen in any one view.
    half = 5 * scene.extent * torch.ones(3)
    model = SplatModel.random(400, -half, half, sh_degree=0, generator=torch.Generator().manual_seed(0))
    r = SplatRenderer(SplatModel.from_state(model.state(), dev))
    r.setup_training(cfg, scene)
    opts = {g.name: (make_adam(g.params, g.lr, g.eps, name=g.name, selective=True) if dev.type == "cuda" else
                     SelectiveAdam([{"params": g.params, "lr": g.lr, "name": g.name}], lr=g.lr, eps=g.eps))
            for g in r.param_groups(cfg)}
    assert all(isinstance(o, SelectiveAdam) for o in opts.values())
    batch = ImageSampler(scene, dev, seed=0).next(0)
    out = r.train_render(batch, 0)
    r.before_backward(0, out, opts)
    vis = (out.extras["info"]["radii"] > 0).all(-1).any(0)
    assert 0 < int(vis.sum()) < vis.numel()  # both kinds present, or the test proves nothing
    before = {k: p.detach().clone() for k, p in r.model.splats.items()}
    (out.rgb - batch.gt).abs().mean().backward()
    for opt in opts.values():
        assert torch.equal(opt.visibility, vis)
        opt.step()
    for k, p in r.model.splats.items():
        assert torch.equal(p.detach()[~vis], before[k][~vis]), k
    assert not torch.equal(r.model.splats["means"].detach()[vis], before["means"][vis])


def _adams(seed: int):
    """Three parameter groups as the loop makes them (different lrs, one with weight decay)
    and a plain torch Adam made outside make_adam."""
    gen = torch.Generator().manual_seed(seed)
    params = {k: torch.nn.Parameter(torch.randn(*shape, generator=gen))
              for k, shape in {"means": (7, 3), "sh0": (7, 1, 3), "shN": (7, 3, 3), "poses": (4, 6)}.items()}
    opts = {"means": make_adam([params["means"]], 1e-2, 1e-15, name="means"),
            "sh0": make_adam([params["sh0"]], 3e-3, 1e-15, name="sh0"),
            "shN": make_adam([params["shN"]], 1e-4, 1e-15, name="shN"),
            "poses": torch.optim.Adam([params["poses"]], lr=2e-3, weight_decay=1e-3)}
    return params, opts


def test_step_all_matches_each_optimizers_own_step():
    """step_all steps the fused Adams itself after their first step: bit for bit what
    step() + zero_grad(set_to_none=True) on each gives, with learning rates changed between
    steps and a parameter that gets no gradient for a while (shN before its SH degree)."""
    from splatlab.rasterizer.optim import step_all

    assert all(o.param_groups[0]["fused"] for k, o in _adams(0)[1].items() if k != "poses")
    pa, oa = _adams(0)
    pb, ob = _adams(0)
    gen = torch.Generator().manual_seed(1)
    for it in range(5):
        grads = {k: torch.randn(p.shape, generator=gen) for k, p in pa.items()}
        for params, opts in ((pa, oa), (pb, ob)):
            for k, p in params.items():
                p.grad = None if (k == "shN" and it < 2) else grads[k].clone()
            for o in opts.values():
                o.param_groups[0]["lr"] *= 0.9
        if it > 0:  # from the second step on, step_all runs the kernels itself
            from splatlab.rasterizer.optim import _plain_fused_adam

            assert _plain_fused_adam(oa["means"]) and not _plain_fused_adam(oa["poses"])
        step_all(oa)
        for o in ob.values():
            o.step()
            o.zero_grad(set_to_none=True)
        for k in pa:
            assert pa[k].grad is None
            assert torch.equal(pa[k].detach(), pb[k].detach()), (it, k)
            sa, sb = oa[k].state.get(pa[k], {}), ob[k].state.get(pb[k], {})
            assert sa.keys() == sb.keys()
            for name in sa:
                assert torch.equal(sa[name], sb[name]), (it, k, name)
    assert float(oa["shN"].state[pa["shN"]]["step"]) == 3 and float(oa["means"].state[pa["means"]]["step"]) == 5


def test_step_all_is_what_moves_the_parameters():
    """The oracle above could pass with two no-op steps: the parameters do move, by Adam's
    first step (lr times the gradient's sign)."""
    from splatlab.rasterizer.optim import step_all

    params, opts = _adams(2)
    before = {k: p.detach().clone() for k, p in params.items()}
    for p in params.values():
        p.grad = torch.ones_like(p)
    step_all(opts)  # first step: torch's own (creates the state)
    for p in params.values():
        p.grad = torch.ones_like(p)
    step_all(opts)  # second step: the fused path
    lr = opts["means"].param_groups[0]["lr"]
    np.testing.assert_allclose((before["means"] - params["means"].detach()).numpy(), 2 * lr, rtol=1e-5)
