"""Global evaluation: the weighted k-NN vote computed by hand, top-k counting, and
tools/cls_eval.py end to end on a tiny ImageFolder (k-NN, linear probe, resume, bad root)."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.synthetic import CLASS_NAMES, render_scene
from transfer.evaluation import classification as cls
from transfer.evaluation import linear_probe
from conftest import THREADS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
TINY = ["--arch", "convnext_mini", "--backbone", "random:0", "--batch-size", "6",
        "--image-size", "32", "--resize", "32", "--workers", "0"]


def test_weighted_knn_vote_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[2.0, 0.0]])  # normalised inside: cosine 1, 0.8, 0.6, 0
    scores = cls.knn_classify(bank, labels, query, num_classes=2, k=3, temperature=0.5)
    expected = [math.exp(1 / 0.5) + math.exp(0.8 / 0.5), math.exp(0.6 / 0.5)]
    assert torch.allclose(scores, torch.tensor([expected]), rtol=1e-6)
    # one neighbour of the other class, closer than two of this one, cannot outvote them
    far = cls.knn_classify(bank, labels, torch.tensor([[0.0, 1.0]]), 2, k=2, temperature=0.5)
    assert far[0, 0] == 0 and far[0, 1] == pytest.approx(math.exp(2) + math.exp(1.6))


def test_topk_correct_and_percent():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    correct = cls.topk_correct(scores, torch.tensor([2, 0, 0]), ks=(1, 2))
    assert correct == {1: 1, 2: 2}
    assert cls.accuracy_percent(correct, 3) == {"top1": 33.333, "top2": 66.667}


def write_folder(root: Path, per_class: dict[str, int], size: int = 32) -> Path:
    """ROOT/imagenet/{train,val}/<class>/*.png: scenes of one object, foldered by its class."""
    rng = np.random.default_rng(0)
    from PIL import Image

    for split, n in per_class.items():
        counts = {c: 0 for c in range(3)}
        while min(counts.values()) < n:
            image, objects = render_scene(rng, size, size, 3, 1, 1)
            if not objects or counts[objects[0].class_id] >= n:
                continue
            c = objects[0].class_id
            folder = root / "imagenet" / split / CLASS_NAMES[c]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{counts[c]}.png")
            counts[c] += 1
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("cls"), {"train": 4, "val": 2})


def run_tool(*args):
    return subprocess.run([sys.executable, "tools/cls_eval.py", *map(str, args)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_knn_tool_writes_metrics(data_root, tmp_path):
    out = run_tool(*TINY, "--data-root", data_root, "--work-dir", tmp_path, "--protocol", "knn")
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert (record["task"], record["dataset"], record["protocol"]) == \
        ("classification", "imagenet", "knn")
    assert set(record["metrics"]) == {"top1", "top5"}
    assert 0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] == 100.0  # 3 classes
    assert record["backbone"]["source"] == "random:0" and record["backbone"]["sha256"]
    assert record["settings"]["k"] == 20 and record["settings"]["crop"] == 32
    assert record["reference_settings"]["crop"] == 224
    assert record["num_train"] == 12 and record["num_val"] == 6


@pytest.mark.multiprocess
@pytest.mark.slow
def test_wrong_data_root_is_a_clear_error(tmp_path):
    out = run_tool(*TINY, "--data-root", tmp_path / "nowhere", "--work-dir", tmp_path / "w")
    assert out.returncode != 0
    assert "nowhere/imagenet/train" in out.stderr and "<class>" in out.stderr


def _linear(data_root, work_dir, epochs=2):
    from transfer.evaluation.cls_eval import evaluate

    recipe = linear_probe.LinearRecipe(epochs=epochs, batch_size=6, crop=32, resize=32,
                                       workers=0)
    return evaluate(arch="convnext_mini", backbone="random:0", data_root=data_root,
                    work_dir=work_dir, protocol="linear", recipe=recipe)


def test_linear_probe_resumes_to_the_same_result(data_root, tmp_path, monkeypatch):
    straight = _linear(data_root, tmp_path / "straight")
    saves = {"n": 0}
    real_save = linear_probe.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        saves["n"] += 1
        raise KeyboardInterrupt("preempted after the first epoch's checkpoint")

    monkeypatch.setattr(linear_probe, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _linear(data_root, tmp_path / "resumed")
    assert saves["n"] == 1 and not (tmp_path / "resumed" / "metrics.json").exists()
    monkeypatch.setattr(linear_probe, "atomic_save", real_save)
    resumed = _linear(data_root, tmp_path / "resumed")
    assert resumed == straight
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert a["history"] == b["history"] and len(b["history"]) == 2
    assert b["settings"]["epochs"] == 2 and b["reference_settings"]["epochs"] == 100
    assert b["reference_settings"]["lr"] == 0.3 and b["reference_settings"]["total_batch"] == 256


def test_knn_seeds_in_one_process_draw_their_banks_and_a_rerun_skips_them(data_root,
                                                                         tmp_path):
    from transfer.evaluation.cls_eval import evaluate

    def knn(fraction, seeds):
        return evaluate(arch="convnext_mini", backbone="random:0", data_root=data_root,
                        work_dir=tmp_path / str(fraction), protocol="knn", seeds=seeds,
                        memory_fraction=fraction, k=3,
                        recipe=linear_probe.LinearRecipe(batch_size=6, crop=32, resize=32,
                                                         workers=0))

    full = knn(1.0, [0, 1])  # the whole bank: the vote is deterministic, seeds agree
    assert full[0] == full[1]
    half = knn(0.5, [0, 1, 2])
    assert sorted(half) == [0, 1, 2]
    records = [json.loads((tmp_path / "0.5" / f"seed{s}" / "metrics.json").read_text())
               for s in range(3)]
    assert [r["settings"]["seed"] for r in records] == [0, 1, 2]
    assert all(r["settings"]["memory_fraction"] == 0.5 for r in records)
    assert records[0]["reference_settings"]["memory_fraction"] == 1.0
    # the banks differ: the seeds draw different halves of the training images
    from transfer.evaluation.dense_retrieval import choose_subset

    n = records[0]["num_train"]
    assert len({tuple(choose_subset(n, 0.5, s)) for s in range(3)}) > 1
    assert knn(0.5, [0, 1, 2]) == {}  # all finished: nothing runs again


def test_resume_refuses_another_runs_checkpoint(data_root, tmp_path):
    _linear(data_root, tmp_path, epochs=1)
    from transfer.evaluation.cls_eval import evaluate

    with pytest.raises(ValueError, match="another run.*epochs"):
        evaluate(arch="convnext_mini", backbone="random:0", data_root=data_root,
                 work_dir=tmp_path, protocol="linear",
                 recipe=linear_probe.LinearRecipe(epochs=3, batch_size=6, crop=32, resize=32,
                                                  workers=0))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_knn_gathers_the_same_bank(data_root, tmp_path):
    """Two gloo processes each extract half of the images; the gathered bank gives the same
    numbers as one process."""
    one = run_tool(*TINY, "--data-root", data_root, "--work-dir", tmp_path / "one")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--standalone", "tools/cls_eval.py", *TINY, "--data-root",
                          data_root, "--work-dir", tmp_path / "two"],
                         cwd=ROOT, env=dict(ENV, OMP_NUM_THREADS="1"), capture_output=True,
                         text=True)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert a["metrics"] == b["metrics"] and b["settings"]["processes"] == 2


def test_requeueable_resubmits_the_same_call():
    submitit = pytest.importorskip("submitit")
    from pretrain.common.slurm import Requeueable

    call = Requeueable(max, 2, 3)
    again = call.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert isinstance(again.function, Requeueable) and again.function.args == (2, 3)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_slurm_submission_runs_through_submitit(data_root, tmp_path):
    """Without sbatch, submitit's local executor runs the job: the same submission path,
    started from a folder outside the repository."""
    pytest.importorskip("submitit")
    work = tmp_path / "w"
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "cls_eval.py"), *TINY,
                          "--data-root", data_root, "--work-dir", work, "--slurm",
                          "--gpus-per-node", "1", "--cpus-per-task", "1", "--timeout-min", "5"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert out.returncode == 0 and "submitted job" in out.stdout, out.stderr[-2000:]
    for _ in range(120):
        if (work / "metrics.json").is_file():
            break
        time.sleep(1)
    logs = "".join(p.read_text() for p in (work / "slurm").glob("*.err"))
    assert (work / "metrics.json").is_file(), logs[-2000:]
    assert json.loads((work / "metrics.json").read_text())["protocol"] == "knn"
