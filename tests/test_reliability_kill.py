"""Kill -9 probes (docs/reliability.md, "Kill -9"): tools/probe_kill_resume.py with a few
kills, and the fast checks of what a kill can leave behind (a torn log line, a partial
checkpoint temporary, a failed write)."""
import errno
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain.checkpoint import atomic_save
from pretrain.common.files import remove_stale_temporaries
from pretrain.run_logging import RunLogger, read_jsonl

ROOT = Path(__file__).resolve().parent.parent


def load_probe():
    spec = importlib.util.spec_from_file_location("probe_kill_resume",
                                                  ROOT / "tools/probe_kill_resume.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "tools"))
    spec.loader.exec_module(module)
    return module


def test_a_log_line_torn_by_a_kill_does_not_block_the_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3)]
    path.write_text("\n".join(records) + "\n" + '{"step": 4, "lo')  # killed mid-write
    logger = RunLogger(tmp_path, enabled=False)
    logger.enabled, logger.path = True, path  # no TensorBoard writer needed here
    logger.truncate_after(2)
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    assert not list(tmp_path.glob(".metrics.jsonl.tmp*"))


def test_a_failed_checkpoint_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = atomic_save({"step": 1}, tmp_path / "checkpoint.pth")
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="cannot write .*checkpoint.pth: the disk is full"):
        atomic_save({"step": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".checkpoint.pth.tmp-{dead.pid}"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".checkpoint.pth.tmp-{os.getppid()}"  # a running process: kept
    live.write_bytes(b"being written")
    assert remove_stale_temporaries(tmp_path / "checkpoint.pth") == [stale]
    atomic_save({"step": 1}, tmp_path / "checkpoint.pth")
    assert not stale.exists() and live.exists()


def test_probe_compares_everything_it_claims(tmp_path):
    probe = load_probe()
    diffs: list[str] = []
    a = {"model": {"w": torch.ones(2)}, "step": 3, "rng": [{"torch": torch.zeros(1)}]}
    b = {"model": {"w": torch.tensor([1.0, 1.5])}, "step": 4, "rng": [{"torch": torch.zeros(1)}]}
    probe.tensors_equal(a, b, "ckpt", diffs)
    assert sorted(diffs) == ["ckpt.model.w", "ckpt.step"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_pretrain_killed_twice_at_random_moments_resumes_identically(tmp_path):
    """Two kills (one while a checkpoint is being written), each followed by the same
    command: weights, optimiser, scaler, RNG, step, export and logs equal the reference."""
    trials = load_probe().probe("pretrain", 2, tmp_path, seed=3)
    assert all(t["identical"] for t in trials), trials
    assert any(t["temporary_file_at_kill"] for t in trials), trials
    assert not any(t["finished_first"] for t in trials), trials


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.mmseg
def test_seg_train_killed_once_resumes_to_the_same_metrics(tmp_path):
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    trials = load_probe().probe("seg_train", 1, tmp_path, seed=0)
    assert all(t["identical"] for t in trials), trials
