"""Hash encoding: the torch twin against a brute-force per-point float64 implementation,
the triton kernels against the twin (interpreter on CPU here, compiled on the device)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from splatlab.rasterizer.hashgrid import (DEFAULT_VARIANT, VARIANT_ENV, VARIANTS, dense_levels, hash_encode,
                                          hash_encode_torch, level_resolutions, resolve_variant, triton_available)

PRIMES = (1, 2654435761, 805459861)  # Instant-NGP's, written out again: the test is independent


def brute_force(x: np.ndarray, table: np.ndarray, resolutions: list[int]) -> np.ndarray:
    """One point, one level, one corner at a time, in float64 and Python integers."""
    L, T, F = table.shape
    out = np.zeros((len(x), L * F))
    for n, p in enumerate(x):
        for l, r in enumerate(resolutions):
            pos = [min(max(float(v), 0.0), 1.0) * r for v in p]
            base = [min(int(math.floor(v)), r - 1) for v in pos]
            frac = [v - b for v, b in zip(pos, base)]
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        c = (base[0] + dx, base[1] + dy, base[2] + dz)
                        if (r + 1) ** 3 <= T:
                            idx = c[0] + c[1] * (r + 1) + c[2] * (r + 1) ** 2
                        else:
                            idx = ((c[0] * PRIMES[0]) ^ (c[1] * PRIMES[1]) ^ (c[2] * PRIMES[2])) % T
                        w = ((frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1])
                             * (frac[2] if dz else 1 - frac[2]))
                        out[n, l * F : (l + 1) * F] += w * table[l, idx]
    return out


def _case(seed: int, n: int = 200, levels: int = 5, log2_t: int = 9, features: int = 2, max_res: int = 300):
    g = torch.Generator().manual_seed(seed)
    res = level_resolutions(levels, 3, max_res)
    table = torch.randn(levels, 2**log2_t, features, generator=g, dtype=torch.float64)
    x = torch.rand(n, 3, generator=g, dtype=torch.float64)
    x[0] = 1.0  # the far corner of the cube
    x[1] = 0.0
    x[2] = torch.tensor([1.2, -0.1, 0.5])  # outside: clamped onto the grid
    return x, table, res


def test_levels_mix_dense_and_hashed():
    res = level_resolutions(5, 3, 300)
    assert res[0] == 3 and res[-1] == 300 and res == sorted(res)
    dense = dense_levels(res, 2**9)
    assert dense[0] and not dense[-1]  # both code paths are exercised by the cases below


@pytest.mark.parametrize("seed", [0, 1])
def test_torch_twin_matches_brute_force_float64(seed):
    x, table, res = _case(seed)
    ours = hash_encode_torch(x, table, res).numpy()
    np.testing.assert_allclose(ours, brute_force(x.numpy(), table.numpy(), res), rtol=0, atol=1e-12)


def test_torch_twin_features_and_large_coordinates():
    # 4 features and a resolution whose vertex coordinates times the primes overflow 32 bits.
    x, table, res = _case(3, n=60, levels=3, log2_t=10, features=4, max_res=70_000)
    ours = hash_encode_torch(x, table, res).numpy()
    np.testing.assert_allclose(ours, brute_force(x.numpy(), table.numpy(), res), rtol=0, atol=1e-12)


def test_torch_twin_gradcheck():
    x, table, res = _case(4, n=12, levels=3, log2_t=6, max_res=20)
    table.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: hash_encode_torch(x, t, res), (table,))
    # Points strictly inside cells: the encoding is also differentiable in the positions.
    xi = (torch.rand(8, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: hash_encode_torch(p, table.detach(), res), (xi,))


def test_auto_backend_on_cpu_is_the_twin():
    x, table, res = _case(5, n=50)
    assert torch.equal(hash_encode(x.float(), table.float(), res), hash_encode_torch(x.float(), table.float(), res))


_INTERPRETER_CHECK = r"""
import sys
import torch
from splatlab.rasterizer.hashgrid import hash_encode_torch, hash_encode_triton, level_resolutions
torch.manual_seed(0)
# Dense and hashed levels (the first one small enough to be replicated), F = 2 (packed path)
# and, unless "f2" comes first, F = 4 (the [BLOCK, F] tile path, the same in every variant),
# a point count that is no multiple of any block.
cases = [(5, 9, 2, 300, 300), (3, 10, 4, 70000, 70)]
if sys.argv[1] == "f2":
    cases = cases[:1]
for variant in sys.argv[2:]:
    for levels, log2_t, F, max_res, n in cases:
        res = level_resolutions(levels, 3, max_res)
        table = torch.randn(levels, 2 ** log2_t, F, requires_grad=True)
        x = torch.rand(n, 3)
        x[0], x[1] = 1.0, 0.0
        x[2] = torch.tensor([1.2, -0.1, 0.5])
        a, b = hash_encode_torch(x, table, res), hash_encode_triton(x, table, res, variant)
        g = torch.randn_like(a)
        ga, = torch.autograd.grad(a, table, g)
        gb, = torch.autograd.grad(b, table, g)
        assert torch.allclose(a, b, atol=1e-5), (variant, F, (a - b).abs().max())
        assert torch.allclose(ga, gb, atol=1e-4), (variant, F, (ga - gb).abs().max())
print("triton-interpreter-ok")
"""


def _run_interpreter(cases: str, variants: list[str]) -> None:
    """The triton kernels run on CPU tensors under TRITON_INTERPRET=1 (set before triton
    builds them, hence a subprocess). The inline-PTX vector atomics are compiled-only: here
    those variants take their two-atomic fallback."""
    if not triton_available():
        pytest.skip("triton is not installed: `pip install triton` to check the kernel on CPU")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK, cases, *variants], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "triton-interpreter-ok" in r.stdout, r.stderr[-3000:]


# The default, and paired 16-byte accesses with the coarse level's gradient replicated.
_FAST_VARIANTS = [DEFAULT_VARIANT, "v2-lpp4"]


def test_triton_kernel_matches_twin_in_interpreter():
    _run_interpreter("all", _FAST_VARIANTS)


@pytest.mark.slow
def test_every_triton_variant_matches_twin_in_interpreter():
    _run_interpreter("f2", [v for v in VARIANTS if v not in _FAST_VARIANTS] + ["pack/v2-lpp4-rep16"])


@pytest.mark.slow
def test_vector_variants_compile_for_hopper_without_a_gpu():
    """The inline PTX never runs in the interpreter: compile it for sm_90 here (triton ships
    ptxas), and check the instructions the variants are about."""
    if not triton_available():
        pytest.skip("triton is not installed: `pip install triton` to compile the kernels for sm_90 on CPU")
    if os.environ.get("TRITON_INTERPRET") == "1":
        # Another test file switched this process to triton's interpreter (kernels imported
        # since are interpreted, not compiled): compile in a fresh process instead.
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"{__file__}::test_vector_variants_compile_for_hopper_without_a_gpu"],
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and " passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
        return
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from splatlab.rasterizer import _hashgrid_triton as k

    def ptx(fn, sig, consts):
        src = ASTSource(fn=fn, signature={**sig, **{c: "constexpr" for c in consts}}, constexprs=consts)
        return triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"]

    common = dict(T=2**19, L=16, F=2, BLOCK=128, LPP=4, PACK=True, XPAIR=True, STREAM_EV="")
    fwd = ptx(k._fwd, {"x_ptr": "*fp32", "table_ptr": "*fp32", "res_ptr": "*i32", "dense_ptr": "*i32",
                       "out_ptr": "*fp32", "N": "i32"}, {**common, "ASM": True, "TAB_EV": ""})
    bwd = ptx(k._bwd, {"x_ptr": "*fp32", "grad_out_ptr": "*fp32", "res_ptr": "*i32", "dense_ptr": "*i32",
                       "grad_ptr": "*fp32", "N": "i32", "NREP": "i32"}, {**common, "V2": True, "REPS": 16, "S": 29792})
    assert "ld.global.v4.f32" in fwd and "st.global.b64" in fwd
    assert "red.global.add.v4.f32" in bwd and "red.global.add.v2.f32" in bwd and "atom." not in bwd


def test_variant_names_resolve(monkeypatch):
    monkeypatch.delenv(VARIANT_ENV, raising=False)
    assert resolve_variant() == (VARIANTS[DEFAULT_VARIANT],) * 2
    assert resolve_variant("pack/v2-lpp4") == (VARIANTS["pack"], VARIANTS["v2-lpp4"])
    monkeypatch.setenv(VARIANT_ENV, "baseline")
    assert resolve_variant() == (VARIANTS["baseline"],) * 2
    for bad in ("nope", "pack/nope", "pack/v2/v2-lpp4"):
        with pytest.raises(ValueError, match="unknown hash-grid kernel variant"):
            resolve_variant(bad)


_CUDA_CASES = [(v, 16, 19, 2) for v in VARIANTS] + [(DEFAULT_VARIANT, 8, 14, 4)]


@pytest.mark.cuda
@pytest.mark.parametrize("variant,levels,log2_t,features", _CUDA_CASES)
def test_triton_parity_cuda(variant, levels, log2_t, features):
    from splatlab.rasterizer.hashgrid import hash_encode_triton

    g = torch.Generator(device="cuda").manual_seed(0)
    res = level_resolutions(levels, 16, 2048)
    table = (torch.randn(levels, 2**log2_t, features, device="cuda", generator=g) * 0.1).requires_grad_(True)
    x = torch.rand(1 << 16, 3, device="cuda", generator=g)
    a, b = hash_encode_torch(x, table, res), hash_encode_triton(x, table, res, variant)
    # Both compute positions x * res in float32: at the finest level (res 2048) a position,
    # hence an interpolation weight, is only known to ~res * eps, so the two backends'
    # different operation order (FMA in the kernel) may differ by that much times the
    # table's values (first GPU run: 3.3e-5 at 0.1% of the outputs).
    atol = 4 * max(res) * torch.finfo(torch.float32).eps * float(table.detach().abs().max())
    torch.testing.assert_close(b, a, atol=atol, rtol=1e-5)
    go = torch.randn_like(a)
    ga, = torch.autograd.grad(a, table, go)
    gb, = torch.autograd.grad(b, table, go)
    # Atomic adds sum in another order than index_put's, and the weights carry the position
    # precision above: the same bound, on the incoming gradient (second H200 run: 2.8e-4
    # at 93 of 16.7M entries).
    atol = 4 * max(res) * torch.finfo(torch.float32).eps * float(go.abs().max())
    torch.testing.assert_close(gb, ga, atol=atol, rtol=1e-4)
