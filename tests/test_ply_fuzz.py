"""Property-based fuzzing of `read_ply`: mutated PLY bytes (flipped, inserted, deleted
bytes; truncation; edited header numbers and words) load or raise PlyError, nothing else.

Bounded for CI (about 20 s); SPLATLAB_LONG=1 runs many more examples (issue 13)."""

from __future__ import annotations

import os
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splatlab.renderers.splat import SplatModel
from splatlab.renderers.splat.io import PlyError, read_ply, write_ply

LONG = os.environ.get("SPLATLAB_LONG") == "1"
MAX_EXAMPLES = 50000 if LONG else 1500


def _seeds(tmp) -> list[bytes]:
    from plyfile import PlyData

    out = []
    for degree, n in [(0, 4), (1, 3)]:
        m = SplatModel.random(n, torch.zeros(3), torch.ones(3), sh_degree=degree,
                              generator=torch.Generator().manual_seed(degree))
        write_ply(m, tmp / f"d{degree}.ply")
        out.append((tmp / f"d{degree}.ply").read_bytes())
    PlyData(PlyData.read(str(tmp / "d0.ply")).elements, text=True).write(str(tmp / "a.ply"))
    out.append((tmp / "a.ply").read_bytes())
    return out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return _seeds(tmp_path_factory.mktemp("seeds"))


HEADER_WORDS = [b"ply", b"format", b"ascii", b"binary_big_endian", b"element", b"vertex", b"face",
                b"property", b"list", b"uchar", b"float", b"double", b"int", b"comment",
                b"end_header", b"x", b"f_rest_0", b"opacity", b"\xff\xfe", b"\r", b"\n", b" ", b"\x00"]
NUMBERS = [b"0", b"-1", b"1", b"2", b"255", b"4294967296", b"1000000000000", b"99999999999999999999999", b"1e9", b"nan"]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.sampled_from(HEADER_WORDS)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just("number"), st.integers(0, 64), st.sampled_from(NUMBERS)),
    st.tuples(st.just("word"), st.integers(0, 256), st.sampled_from(HEADER_WORDS)),
)


def mutate(raw: bytes, ops) -> bytes:
    b = bytearray(raw)
    for op, where, arg in ops:
        head = max(1, raw.find(b"end_header") + 11)
        # Half the byte-level edits land in the header, where the parser's decisions are.
        i = where % (head if where % 2 else max(1, len(b)))
        if op == "flip" and b:
            b[i % len(b)] = arg
        elif op == "insert":
            b[i:i] = arg
        elif op == "delete":
            del b[i:i + arg]
        elif op == "truncate":
            del b[i:]
        elif op in ("number", "word"):
            spans = [m.span() for m in re.finditer(rb"\d+" if op == "number" else rb"[A-Za-z_0-9]+",
                                                   bytes(b[:head]))]
            if spans:
                s, e = spans[where % len(spans)]
                b[s:e] = arg
    return bytes(b)


@settings(max_examples=MAX_EXAMPLES, deadline=2000, derandomize=not LONG,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(which=st.integers(0, 2), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_ply_loads_or_raises_ply_error(tmp_path, seeds, which, ops):
    path = tmp_path / "m.ply"
    path.write_bytes(mutate(seeds[which], ops))
    try:
        model = read_ply(path)
    except PlyError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path))
        return
    assert model.num_gaussians >= 1 and model.sh_degree in (0, 1, 2, 3)
