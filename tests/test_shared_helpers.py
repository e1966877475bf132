"""The helpers every package shares (pretrain/files, provenance, durations, grouping,
state_keys): their behaviour, and that they and metrics.json writing load no torch."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pretrain.common import files
from pretrain.common.durations import duration
from pretrain.common.provenance import git_sha
from pretrain.common.state_keys import describe_mismatch, load_strict
from pretrain.grouping import group_indices, same_shape

ROOT = Path(__file__).resolve().parent.parent


def test_shared_helpers_and_writing_metrics_import_no_torch(tmp_path):
    """A suite runner, a table tool or a metrics.json writer must not pay torch's import."""
    code = f"""
import sys
import pretrain.common.durations, pretrain.common.files, pretrain.common.pids, pretrain.grouping
import pretrain.common.provenance, pretrain.common.state_keys
from transfer.metrics import read_metrics, write_metrics
path = write_metrics({str(tmp_path / "metrics.json")!r}, task="classification", dataset="d",
                     protocol="p", config="c", backbone={{}}, metrics={{"top1": 1.0}},
                     wall_s=1.0, gpus=0, gpu_type="cpu")
assert read_metrics(path)["metrics"] == {{"top1": 1.0}}
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr


def test_atomic_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "deep" / "results.json"
    files.write_json(path, {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    files.write_text(path, "two")
    with files.atomic_open(tmp_path / "b.bin", "wb") as f:  # torch.save and pickle write so
        f.write(b"\x00\x01")
    assert path.read_text() == "two" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.bin", "deep", "results.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = files.write_text(tmp_path / "table.md", "old")
    with pytest.raises(files.OutputWriteError) as info:
        with files.atomic_open(path, "w") as f:
            f.write("half of the new")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC
    assert str(info.value).startswith(f"[Errno 28] cannot write {path}: the disk is full (")
    assert str(info.value).endswith("the previous table.md is unchanged and no temporary is left")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_a_writer_bug_is_not_reported_as_a_disk_problem(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with files.atomic_open(tmp_path / "x.json", "w") as f:
            f.write(str(1 / 0))
    assert list(tmp_path.iterdir()) == []


def test_temporaries_name_their_writer_so_a_dead_ones_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "checkpoint.pth"
    mine = files.temporary_name(path)
    assert mine.name.startswith(".checkpoint.pth.tmp-") and mine.name.endswith(f"-{os.getpid()}")
    stale = mine.with_name(mine.name.rsplit("-", 1)[0] + f"-{dead.pid}")
    stale.write_bytes(b"half")
    mine.write_bytes(b"being written")  # this process is alive: kept
    assert files.remove_stale_temporaries(path) == [stale]
    assert mine.exists() and not stale.exists()


def test_duration_reads_as_minutes_then_hours():
    assert [duration(s) for s in (0, 20.4, 75, 3599.4, 3599.6, 3725)] == [
        "0m00s", "0m20s", "1m15s", "59m59s", "1h00m", "1h02m"]


def test_git_sha_of_this_checkout_and_outside_one(tmp_path):
    sha = git_sha()
    assert sha == "unknown" or len(sha.removesuffix("+dirty")) == 40
    assert git_sha(tmp_path) == "unknown"


def test_grouping_keeps_first_appearance_order():
    assert group_indices(["a", "b", "a", "c", "b"]) == [[0, 2], [1, 4], [3]]
    views = [SimpleNamespace(shape=s) for s in
             [(8, 3, 96, 96), (8, 3, 64, 64), (8, 3, 96, 96), (4, 3, 64, 64)]]
    assert same_shape(views) == [[0, 2], [1, 3]]  # the batch dimension does not count


class _Module:
    arch = "toy"

    def __init__(self, **shapes):
        self.own = {k: SimpleNamespace(shape=s) for k, s in shapes.items()}
        self.loaded = None

    def state_dict(self):
        return self.own

    def load_state_dict(self, state, strict):
        self.loaded = (state, strict)


def test_state_key_checks_name_every_kind_of_mismatch():
    own = {"a": SimpleNamespace(shape=(2,)), "b": SimpleNamespace(shape=(3,))}
    state = {"b": SimpleNamespace(shape=(4,)), "c": SimpleNamespace(shape=(1,))}
    assert describe_mismatch(own, state, missing_as="not in the file") == [
        "not in the file: a", "unexpected keys: c", "shape mismatch: b (4,) vs (3,)"]
    keys = {f"k{i}": SimpleNamespace(shape=(1,)) for i in range(7)}
    assert describe_mismatch(keys, {}) == ["missing keys: k0, k1, k2, k3, k4 ... (7 in all)"]

    module = _Module(w=(2,))
    with pytest.raises(ValueError, match=r"^f.pth does not fit _Module toy: missing keys: w$"):
        load_strict(module, {}, "f.pth")
    good = {"w": SimpleNamespace(shape=(2,))}
    load_strict(module, good, "f.pth")
    assert module.loaded == (good, True)


def test_metrics_json_is_written_through_the_shared_writer(tmp_path):
    from transfer.metrics import write_metrics

    path = write_metrics(tmp_path / "m" / "metrics.json", task="classification", dataset="d",
                         protocol="p", config="c", backbone={}, metrics={}, wall_s=3600,
                         gpus=2, gpu_type="H100")
    record = json.loads(path.read_text())
    assert record["cost"]["gpu_hours"] == 2.0 and record["git_sha"] == git_sha()
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_the_helpers_know_the_repository_root():
    """provenance (git_sha) and slurm (the job's PYTHONPATH) name the repository, not the
    sub-package they live in: a job started outside the clone must import ``pretrain``."""
    import pretrain.common.provenance as provenance
    import pretrain.common.slurm as slurm
    for root in (provenance.ROOT, slurm.ROOT):
        assert (root / "pretrain" / "common" / "__init__.py").is_file()
        assert (root / "tools").is_dir()
