"""3DGS-MCMC on CPU: the torch twins of gsplat's relocation and covariance kernels
(renderers/splat/relocation.py) against brute force written from the paper, gsplat's MCMC
steps run on CPU through them (renderers/splat/strategies.py), and a short CPU MCMC training
run. CUDA parity with gsplat's kernels is marked `cuda`."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from splatlab.renderers.splat.relocation import compute_relocation, quat_scale_to_covar

N_MAX = 51  # gsplat's MCMCStrategy binomial table size


def binom_table(n_max: int = N_MAX, dtype=torch.float32) -> torch.Tensor:
    t = torch.zeros(n_max, n_max, dtype=dtype)
    for n in range(n_max):
        for k in range(n + 1):
            t[n, k] = math.comb(n, k)
    return t


def relocation_brute_force(o: float, s: list[float], n: int) -> tuple[float, list[float]]:
    """Kheradmand et al. 2024, eq. (9), in Python floats: N copies of opacity o' with
    1 - (1 - o')^N = o, and scales rescaled so the copies' summed contribution matches."""
    o_new = 1.0 - (1.0 - o) ** (1.0 / n)
    denom = 0.0
    for i in range(1, n + 1):
        for k in range(i):
            denom += math.comb(i - 1, k) * (-1) ** k / math.sqrt(k + 1) * o_new ** (k + 1)
    return o_new, [o / denom * x for x in s]


def random_inputs(n: int, seed: int, dtype=torch.float32, n_hi: int = N_MAX + 5):
    g = torch.Generator().manual_seed(seed)
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.99 + 0.005
    scales = torch.exp(torch.randn(n, 3, generator=g, dtype=dtype))
    ratios = torch.randint(1, n_hi, (n,), generator=g)  # above n_max: clamped like gsplat
    return opacities, scales, ratios


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-6)])
def test_relocation_matches_paper_brute_force(dtype, rtol):
    # The twin evaluates in float64 and rounds, so float32 results are float32-exact.
    opacities, scales, ratios = random_inputs(300, seed=0, dtype=dtype)
    new_o, new_s = compute_relocation(opacities, scales, ratios, binom_table(dtype=dtype))
    assert new_o.dtype == dtype and new_s.shape == (300, 3)
    for i in range(300):
        n = min(int(ratios[i]), N_MAX)
        o_ref, s_ref = relocation_brute_force(float(opacities[i]), scales[i].tolist(), n)
        assert math.isclose(float(new_o[i]), o_ref, rel_tol=rtol, abs_tol=1e-7), (i, n)
        for a, b in zip(new_s[i].tolist(), s_ref):
            assert math.isclose(a, b, rel_tol=rtol), (i, n, a, b)


def test_relocation_properties():
    opacities, scales, ratios = random_inputs(64, seed=1, dtype=torch.float64, n_hi=20)
    new_o, new_s = compute_relocation(opacities, scales, ratios, binom_table(dtype=torch.float64))
    # n copies composite back to the original opacity; one copy is the Gaussian itself
    torch.testing.assert_close(1 - (1 - new_o) ** ratios.double(), opacities)
    one = torch.ones_like(ratios)
    o1, s1 = compute_relocation(opacities, scales, one, binom_table(dtype=torch.float64))
    torch.testing.assert_close(o1, opacities)
    torch.testing.assert_close(s1, scales)
    # ratios are clamped to [1, n_max] (as gsplat's wrapper does) without being modified
    r = torch.tensor([0, 200])
    o2, _ = compute_relocation(opacities[:2], scales[:2], r, binom_table(dtype=torch.float64))
    torch.testing.assert_close(o2, 1 - (1 - opacities[:2]) ** torch.tensor([1.0, 1 / N_MAX], dtype=torch.float64))
    assert r.tolist() == [0, 200]
    e_o, e_s = compute_relocation(opacities[:0], scales[:0], ratios[:0], binom_table())
    assert e_o.shape == (0,) and e_s.shape == (0, 3)


def _quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def test_covariance_is_r_s_st_rt():
    g = torch.Generator().manual_seed(2)
    quats = torch.randn(50, 4, generator=g, dtype=torch.float64) * 3  # not unit
    scales = torch.exp(torch.randn(50, 3, generator=g, dtype=torch.float64))
    # R's columns are the basis vectors rotated by q: q e_j q*, with q normalised
    q = quats / quats.norm(dim=-1, keepdim=True)
    conj = q * torch.tensor([1.0, -1, -1, -1], dtype=torch.float64)
    cols = []
    for j in range(3):
        e = torch.zeros(50, 4, dtype=torch.float64)
        e[:, j + 1] = 1
        cols.append(_quat_mul(_quat_mul(q, e), conj)[:, 1:])
    R = torch.stack(cols, dim=-1)
    S = torch.diag_embed(scales)
    expected = R @ S @ S.transpose(-1, -2) @ R.transpose(-1, -2)
    torch.testing.assert_close(quat_scale_to_covar(quats, scales), expected)
    c32 = quat_scale_to_covar(quats.float(), scales.float())
    torch.testing.assert_close(c32, expected.float(), rtol=1e-5, atol=1e-5)


def test_twins_are_scoped_and_cpu_only():
    import gsplat.strategy.ops as ops

    from splatlab.renderers.splat.strategies import torch_twins

    before = (ops.compute_relocation, ops.quat_scale_to_covar_preci)
    with torch_twins():
        assert ops.compute_relocation is not before[0]
        o, s, r = random_inputs(8, seed=3)
        got = ops.compute_relocation(opacities=o, scales=s, ratios=r, binoms=binom_table())
        want = compute_relocation(o, s, r, binom_table())
        torch.testing.assert_close(got, want)
        q = torch.randn(8, 4)
        cov, prec = ops.quat_scale_to_covar_preci(q, s, compute_covar=True, compute_preci=False,
                                                  triu=False)
        assert prec is None
        torch.testing.assert_close(cov, quat_scale_to_covar(q, s))
    assert (ops.compute_relocation, ops.quat_scale_to_covar_preci) == before
    with pytest.raises(ZeroDivisionError):
        with torch_twins():
            raise ZeroDivisionError
    assert (ops.compute_relocation, ops.quat_scale_to_covar_preci) == before


def _splats(n: int, seed: int, dead: int):
    g = torch.Generator().manual_seed(seed)
    logit_o = torch.full((n,), 0.5)
    logit_o[:dead] = -10.0  # opacity 4.5e-5: dead under min_opacity 0.005
    params = torch.nn.ParameterDict({
        "means": torch.randn(n, 3, generator=g), "scales": torch.randn(n, 3, generator=g) - 2,
        "quats": torch.randn(n, 4, generator=g), "opacities": logit_o,
        "sh0": torch.randn(n, 1, 3, generator=g),
    })
    opts = {k: torch.optim.Adam([{"params": [p], "lr": 1e-3, "name": k}]) for k, p in params.items()}
    return params, opts


def test_gsplat_mcmc_step_runs_on_cpu():
    """One refinement step of gsplat's MCMCStrategy on CPU: dead Gaussians are relocated
    onto live ones, 5% are added, positions get noise; the Adam state follows."""
    from splatlab.renderers.splat import strategy as strat

    torch.manual_seed(0)
    params, opts = _splats(200, seed=4, dead=30)
    loss = sum(p.square().sum() for p in params.values())
    loss.backward()
    for o in opts.values():
        o.step()
    strategy = strat.make_strategy(
        "mcmc", refine_start=0, refine_stop=1000, refine_every=10, reset_every=0,
        grow_grad2d=0.0, grow_scale3d=0.0, prune_opa=0.005, prune_scale3d=0.0, absgrad=False,
        cap_max=1000, noise_lr=5e5,
    )
    strategy.check_sanity(params, opts)
    state = strat.initial_state(strategy, 1.0)
    means_before = params["means"].detach().clone()
    strat.post_backward(strategy, params, opts, state, 10, {}, lr_means=1e-4)
    assert params["means"].shape[0] == 210  # int(1.05 * 200)
    opac = torch.sigmoid(params["opacities"])
    assert (opac > 0.005).all()  # every dead one was relocated
    assert torch.isfinite(params["scales"]).all() and torch.isfinite(params["means"]).all()
    assert not torch.equal(params["means"][:200], means_before)  # noise was injected
    for k, p in params.items():
        assert opts[k].param_groups[0]["params"][0] is p
        assert opts[k].state[p]["exp_avg"].shape == p.shape


def test_cpu_mcmc_training_run(tmp_path):
    from splatlab.app.config import preset
    from splatlab.app.events import EventBus, RefineDone
    from splatlab.app.train import train
    from splatlab.renderers.splat.strategy import needs_cuda

    assert not needs_cuda("mcmc") and not needs_cuda("default")
    cfg = dataclasses.replace(
        preset("cpu"), output=str(tmp_path / "mcmc"), device="cpu", strategy="mcmc",
        steps=20, downscale=4, init_max_points=400, sh_degree=0, init_opacity=0.5,
        init_scale=0.1, opacity_reg=0.01, scale_reg=0.01, refine_start=4, refine_every=5,
        refine_stop=19, log_every=10, checkpoint_every=20, save_renders=False,
    )
    refines: list[RefineDone] = []
    bus = EventBus()
    bus.subscribe(refines.append, RefineDone)
    result = train(cfg, bus=bus)
    assert result.reason == "done" and result.step == 20
    # MCMC grows by 5% at steps 5, 10, 15 (gsplat refines when step > refine_start)
    assert [e.step for e in refines] == [6, 11, 16], refines
    counts = [[int(n.replace(",", "")) for n in re.findall(r"[\d,]+", e.note)] for e in refines]
    assert all(after == int(1.05 * before) for before, after in counts), refines
    assert result.metrics["num_gaussians"] == counts[-1][1]
    assert result.metrics["psnr"] is not None and math.isfinite(result.metrics["psnr"])


# ---- CUDA parity (run on the device: pytest -m cuda) -----------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("n_hi", [11, N_MAX + 5])
def test_relocation_twin_matches_gsplat_cuda(n_hi):
    """rtol 1e-5, plus the kernel's own float32 error: 1 - powf(1 - o, 1/n) cancels,
    leaving a few ulps of 1 (~1e-7) absolute in o', so ~1e-7/o' relative in o' and s'
    (see relocation.py; it only matters for faint Gaussians split many ways)."""
    from gsplat.relocation import compute_relocation as gsplat_relocation

    opacities, scales, ratios = random_inputs(20_000, seed=5, n_hi=n_hi)
    binoms = binom_table()
    want_o, want_s = gsplat_relocation(opacities.cuda(), scales.cuda(), ratios.clone().cuda(),
                                       binoms.cuda())
    want_o, want_s = want_o.cpu(), want_s.cpu()
    got_o, got_s = compute_relocation(opacities, scales, ratios, binoms)
    ulps = 4 * torch.finfo(torch.float32).eps / 2  # 4 ulps of values just below 1
    torch.testing.assert_close(got_o, want_o, rtol=1e-5, atol=ulps)
    tol = 1e-5 + ulps / want_o  # relative, per Gaussian
    rel = ((got_s - want_s).abs() / want_s.abs()).amax(dim=-1)
    assert (rel <= tol).all(), (rel / tol).max()
    ok = want_o >= 0.05  # where that error is < 1e-5: plain rtol 1e-5
    assert ok.sum() > 1000
    torch.testing.assert_close(got_s[ok], want_s[ok], rtol=1e-5, atol=0)


@pytest.mark.cuda
def test_covariance_twin_matches_gsplat_cuda():
    from gsplat import quat_scale_to_covar_preci

    g = torch.Generator().manual_seed(6)
    quats = torch.randn(20_000, 4, generator=g)
    scales = torch.rand(20_000, 3, generator=g) * 0.9 + 0.1
    want, _ = quat_scale_to_covar_preci(quats.cuda(), scales.cuda(), compute_covar=True,
                                        compute_preci=False, triu=False)
    torch.testing.assert_close(quat_scale_to_covar(quats, scales), want.cpu(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("step", [10, 11])  # a refine step and a noise-only step
def test_mcmc_step_matches_gsplats_own_on_cpu(step):
    """Our MCMC step (gsplat's relocation and growth, our fewer-kernel noise) against
    gsplat's `step_post_backward` run with the torch twins: same seed, same parameters and
    Adam state to float32 rounding; the noise is not negligible (it moves the means)."""
    from splatlab.renderers.splat.strategies import MCMCStrategy, mcmc_step_post_backward, torch_twins

    results = []
    for ours in (False, True):
        params, opts = _splats(300, seed=5, dead=40)
        with torch.no_grad():
            params["opacities"][:100] = -6.0  # transparent: these get the most noise
        for k, p in params.items():
            p.grad = torch.ones_like(p)
            opts[k].step()
        strategy = MCMCStrategy(cap_max=10_000, refine_start_iter=0, refine_every=10)
        state = strategy.initialize_state()
        means0 = params["means"].detach().clone()
        torch.manual_seed(0)
        if ours:
            mcmc_step_post_backward(strategy, params, opts, state, step, {}, lr=1e-3)
        else:
            with torch_twins():
                strategy.step_post_backward(params, opts, state, step, {}, lr=1e-3)
        results.append(({k: p.detach().clone() for k, p in params.items()},
                        {k: opts[k].state[p]["exp_avg"].clone() for k, p in params.items()}))
    (pa, ma), (pb, mb) = results
    assert pa["means"].shape[0] == (315 if step == 10 else 300)
    moved = (pa["means"][:300] - means0[:300]).norm(dim=-1)
    assert moved[:100].min() > 0 if step == 11 else moved.max() > 0
    for k in pa:
        torch.testing.assert_close(pb[k], pa[k], rtol=1e-5, atol=1e-6, msg=k)
        torch.testing.assert_close(mb[k], ma[k], rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.cuda
def test_mcmc_step_on_cuda_is_gsplats_own():
    """On CUDA tensors the step is gsplat's (same seed, same result to float32 rounding:
    the noise is ours, in fewer kernels)."""
    import gsplat.strategy.ops as ops

    from splatlab.renderers.splat.strategies import MCMCStrategy, mcmc_step_post_backward

    originals = (ops.compute_relocation, ops.quat_scale_to_covar_preci)
    results = []
    for wrapped in (False, True):
        params, opts = _splats(500, seed=7, dead=50)
        params = params.cuda()
        opts = {k: torch.optim.Adam([{"params": [p], "lr": 1e-3, "name": k}])
                for k, p in params.items()}
        strategy = MCMCStrategy(cap_max=10_000, refine_start_iter=0, refine_every=10)
        state = strategy.initialize_state()
        torch.manual_seed(0)
        if wrapped:
            mcmc_step_post_backward(strategy, params, opts, state, 10, {}, lr=1e-4)
        else:
            strategy.step_post_backward(params, opts, state, 10, {}, lr=1e-4)
        results.append({k: p.detach().cpu() for k, p in params.items()})
        assert (ops.compute_relocation, ops.quat_scale_to_covar_preci) == originals
    for k in results[0]:
        torch.testing.assert_close(results[1][k], results[0][k], rtol=1e-5, atol=1e-6, msg=k)


def _stats_info(n: int) -> dict:
    """What the default strategy's statistics read from a render: screen-space mean gradients
    (here small: nothing grows), radii, image size."""
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = torch.full((1, n, 2), 1e-9)
    return {"means2d": means2d, "radii": torch.ones(1, n, 2, dtype=torch.int32),
            "width": 64, "height": 48, "n_cameras": 1, "gaussian_ids": None}


def _default(**kw):
    from splatlab.renderers.splat import strategy as strat

    args = dict(refine_start=500, refine_stop=15_000, refine_every=7, reset_every=3000, grow_grad2d=1.0,
                grow_scale3d=0.01, prune_opa=0.005, prune_scale3d=1e3, absgrad=False, cap_max=0, noise_lr=0.0)
    return strat.make_strategy("default", **{**args, **kw})


def test_opacity_reset_where_gsplat_never_resets():
    """`--opacity-reset`: at a reset step every opacity above 2 x prune_opa is clamped to it and
    its Adam moments are zeroed; lower ones stay. gsplat 1.5.3's own DefaultStrategy leaves them
    (its reset condition is always false), and so does ours without the option."""
    from splatlab.renderers.splat.strategies import DefaultStrategy

    def run(strategy, step):
        torch.manual_seed(0)
        params, opts = _splats(50, seed=2, dead=0)
        params["opacities"].data = torch.linspace(-8.0, 4.0, 50)  # 3e-4 .. 0.98
        params["opacities"].sum().backward()
        for o in opts.values():
            o.step()
        before = params["opacities"].detach().clone()
        strategy.step_post_backward(params, opts, strategy.initialize_state(scene_scale=1.0), step,
                                    _stats_info(50))
        return before, params, opts

    cap = torch.logit(torch.tensor(0.01))
    before, params, opts = run(_default(reset_opacities=True), 3000)
    after = params["opacities"].detach()
    assert torch.equal(after, torch.minimum(before, cap))
    assert (before > cap).sum() > 20 and (before < cap).sum() > 5  # both kinds were there
    p = params["opacities"]
    assert opts["opacities"].param_groups[0]["params"][0] is p
    assert not opts["opacities"].state[p]["exp_avg"].any() and not opts["opacities"].state[p]["exp_avg_sq"].any()

    before, params, _ = run(_default(reset_opacities=True), 3001)  # not a reset step
    assert torch.equal(params["opacities"].detach(), before)
    before, params, _ = run(_default(), 3000)  # option off: as gsplat
    assert torch.equal(params["opacities"].detach(), before)
    upstream = DefaultStrategy(prune_opa=0.005, grow_grad2d=1.0, prune_scale3d=1e3, refine_start_iter=500,
                               refine_stop_iter=15_000, refine_every=7, reset_every=3000)
    before, params, _ = run(upstream, 3000)
    assert torch.equal(params["opacities"].detach(), before)  # gsplat 1.5.3: no reset


def test_opacity_reset_schedule():
    """Resets at every multiple of reset_every while refining (3DGS: 3000, 6000, 9000, 12000 of
    a 15k refinement) plus, with reset_at_start, refine_start (its white-background reset)."""
    s = _default(reset_opacities=True, reset_at_start=True)
    assert [k for k in range(30_001) if s.resets_at(k)] == [500, 3000, 6000, 9000, 12000]
    s = _default(reset_opacities=True)
    assert [k for k in range(30_001) if s.resets_at(k)] == [3000, 6000, 9000, 12000]
    assert not any(_default().resets_at(k) for k in range(30_001))
    assert not any(_default(reset_opacities=True, reset_every=0).resets_at(k) for k in range(30_001))
