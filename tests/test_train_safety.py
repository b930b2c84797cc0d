"""Training and run folders under hostile or careless command lines (issue 13, items 1, 3,
5, 8, 10): each test runs `splatlab` as a subprocess, because the command line, the exit
code and the one clean line are the point, and checks nothing was lost or run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_scenes import tree_digest, write_colmap

TINY = ["--preset", "cpu", "--steps", "10", "--downscale", "4", "--init-max-points", "300",
        "--no-save-renders", "--log-every", "5", "--checkpoint-every", "5"]


def splatlab(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splatlab.app.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line of a failed command (no traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One real 10-step run with checkpoints at 5 and 10."""
    cwd = tmp_path_factory.mktemp("safety")
    proc = splatlab("train", *TINY, "--output", "run", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    run = cwd / "run"
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["step_0000005.pt", "step_0000010.pt"]
    return run


class Payload:
    """Unpickling calls os.mkdir(path): proof a checkpoint ran code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_info_refuses_a_checkpoint_that_would_run_code(tmp_path):
    evil, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save({"version": 1, "step": 0, "model": Payload(marker)}, evil)
    line = one_error_line(splatlab("info", evil, cwd=tmp_path))
    assert str(evil) in line and "refused" in line
    assert not marker.exists()
    # The payload is live: an unsafe unpickler would have run it.
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Payload(live)))
    assert live.is_dir()


@pytest.mark.slow  # two short training runs (~45 s on a shared 2-core CPU)
def test_output_holding_a_run_is_refused_and_overwrite_replaces_only_the_run(demo_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    (run / "notes.txt").write_text("mine")
    before = tree_digest(run)
    line = one_error_line(splatlab("train", *TINY, "--output", run, cwd=tmp_path))
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert tree_digest(run) == before  # nothing written, nothing pruned

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.txt").write_text("keep")
    line = one_error_line(splatlab("train", *TINY, "--output", foreign, "--overwrite", cwd=tmp_path))
    assert "splatlab did not create" in line and str(foreign) in line
    assert [p.name for p in foreign.iterdir()] == ["a.txt"]

    old_log = (run / "log.jsonl").read_text()
    proc = splatlab("train", *TINY, "--steps", "6", "--output", run, "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (run / "notes.txt").read_text() == "mine"  # not ours: kept
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["step_0000005.pt", "step_0000006.pt"]
    log = (run / "log.jsonl").read_text()
    assert old_log not in log and log.count('"TrainStarted"') == 1  # one run, not two mixed
    assert json.loads((run / "metrics.json").read_text())["steps"] == 6


def test_output_inside_the_dataset_is_refused(tmp_path):
    data = tmp_path / "scene"
    write_colmap(data, n=9)
    before = tree_digest(data)
    for out in (data, data / "run"):
        # --downscale 1: the fixture's images are too small to train on at TINY's downscale.
        line = one_error_line(splatlab("train", data, *TINY, "--downscale", "1", "--output", out, cwd=tmp_path))
        assert "inside the source dataset" in line
    assert tree_digest(data) == before


@pytest.mark.parametrize("flags,why", [
    (["--lr-scales", "1e6", "--lr-opacities", "1e6", "--lr-means", "1e6"], ""),
    (["--prune-opa", "1.1", "--refine-start", "1", "--refine-every", "3"], "no parameters left"),
])
def test_divergence_ends_with_one_clean_line(tmp_path, flags, why):
    line = one_error_line(splatlab("train", *TINY, "--output", "run", *flags, cwd=tmp_path))
    assert "training diverged" in line and why in line


@pytest.mark.slow  # a short run, then a resume
def test_corrupt_newest_checkpoint_falls_back_to_the_newest_good_one(demo_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    newest = run / "checkpoints" / "step_0000010.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk

    proc = splatlab("info", run, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["step"] == 5
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "step_0000010.pt" in warnings[0] and "step_0000005.pt" in warnings[0]

    proc = splatlab("train", "--resume", run, "--steps", "7", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "step_0000010.pt is unreadable" in proc.stderr
    starts = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["start_step"] for e in starts if e["event"] == "TrainStarted"] == [0, 5]
    assert json.loads((run / "metrics.json").read_text())["steps"] == 7
