"""mmengine checkpoints and the weights-only allow-list (docs/reliability.md, "Checkpoints").

``builtins.getattr`` on the allow-list let a crafted ``iter_N.pth`` fetch ``eval``
(``getattr.__self__`` is the builtins module) and plant it where mmengine calls it: the
gadget of ``bad_inputs.getattr_gadget`` creates a marker file when MessageHub.load_state_dict
deep-copies the resumed runtime info. The allow-list now maps ``builtins.getattr`` to
HistoryBuffer's four statistic methods, and only a file directly in a seg_train work dir (the
marker in its own folder) is trusted.
"""
import builtins
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bad_inputs import getattr_gadget
from conftest import load_tool

pytest.importorskip("mmengine", reason="needs the MMSegmentation environment")

from mmengine.logging import MessageHub  # noqa: E402
from mmengine.logging.history_buffer import HistoryBuffer  # noqa: E402

from transfer.mmseg_side.runner import (MMENGINE_CHECKPOINT_GLOBALS, RUN_MARKER,  # noqa: E402
                                        _numpy_globals, check_trained_checkpoint,
                                        checkpoint_trust, run_dir_of)

ROOT = Path(__file__).resolve().parent.parent
OLD_ALLOW_LIST = [*_numpy_globals(), HistoryBuffer, builtins.getattr]


def work_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_MARKER).write_text("{}")
    return folder


def gadget_checkpoint(path: Path, marker: Path, base: dict | None = None) -> Path:
    """An mmengine-shaped checkpoint (``base``, or a minimal one) whose message hub carries
    the gadget in its runtime info."""
    raw = base or {"meta": {"iter": 1}, "state_dict": {"w": torch.ones(1)},
                   "message_hub": {"log_scalars": {}, "runtime_info": {}, "resumed_keys": {}}}
    raw["message_hub"]["runtime_info"]["note"] = getattr_gadget(marker, HistoryBuffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raw, path)
    return path


def test_the_gadget_runs_under_the_old_allow_list(tmp_path):
    """With ``builtins.getattr`` allowed, weights_only loads the gadget and mmengine's own
    MessageHub.load_state_dict runs it: the marker appears."""
    marker = tmp_path / "gadget_ran"
    path = gadget_checkpoint(tmp_path / "iter_1.pth", marker)
    with torch.serialization.safe_globals(OLD_ALLOW_LIST):
        raw = torch.load(path, weights_only=True)
    MessageHub("gadget_check").load_state_dict(raw["message_hub"])
    assert marker.exists(), "the gadget must be live, or the tests below prove nothing"


def test_the_allow_list_refuses_the_gadget_in_a_trusted_dir(tmp_path):
    marker, work = tmp_path / "gadget_ran", work_dir(tmp_path / "work")
    path = gadget_checkpoint(work / "iter_1.pth", marker)
    with pytest.raises(ValueError) as info:
        check_trained_checkpoint(path, work)
    message = str(info.value)
    assert str(path) in message and "cannot be read as an mmengine checkpoint" in message
    assert "refusing getattr(getattr, '__self__')" in message
    assert not marker.exists()


@pytest.mark.parametrize("owner, name", [
    (HistoryBuffer, "__init__"), (HistoryBuffer, "__dict__"), (HistoryBuffer, "update"),
    (HistoryBuffer, "_statistics_methods"), (np.ndarray, "min"),
    (HistoryBuffer.min, "__globals__"), (HistoryBuffer.mean, "__self__"),
])
def test_getattr_fetches_only_history_buffer_statistics(owner, name, tmp_path):
    work = work_dir(tmp_path / "work")
    from bad_inputs import _Getattr

    fine = work / "iter_1.pth"
    torch.save({"meta": {}, "state_dict": {}, "stats": [_Getattr(HistoryBuffer, m) for m in
                                                         ("min", "max", "current", "mean")]},
               fine)
    assert check_trained_checkpoint(fine, work)["stats"] == [
        HistoryBuffer.min, HistoryBuffer.max, HistoryBuffer.current, HistoryBuffer.mean]
    bad = work / "iter_2.pth"
    torch.save({"meta": {}, "state_dict": {}, "x": _Getattr(owner, name)}, bad)
    with pytest.raises(ValueError, match=f"refusing getattr\\(.*, '{name}'\\)"):
        check_trained_checkpoint(bad, work)


def fake_mmengine_checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": {"iter": 1, "seed": np.int64(0)}, "state_dict": {"w": torch.ones(1)}},
               path)
    return path


def test_an_ancestor_marker_trusts_nothing(tmp_path):
    """seg_test trusted any file below a folder holding seg_run.json; now only the folder
    itself counts, and a symlink counts where it points."""
    work = work_dir(tmp_path / "work")
    own = fake_mmengine_checkpoint(work / "iter_1.pth")
    assert run_dir_of(own) == work.resolve()
    assert check_trained_checkpoint(own, work)["meta"]["iter"] == 1
    below = fake_mmengine_checkpoint(work / "sub" / "iter_1.pth")
    assert run_dir_of(below) is None
    with pytest.raises(RuntimeError, match="refused by torch.load"):
        with checkpoint_trust(below, work) as trusted:
            assert not trusted
            torch.load(below, weights_only=True)
    elsewhere = fake_mmengine_checkpoint(tmp_path / "elsewhere" / "x.pth")
    (work / "iter_9.pth").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="refused by torch.load"):
        check_trained_checkpoint(work / "iter_9.pth", work)


# ---- end to end: a real seg_train work dir -------------------------------------------------
SEG_CONFIG = "configs/segmentation/linear_convnext_small_voc12aug_40k.py"
SEG_TINY = ["model.backbone.arch=convnext_mini", "model.decode_head.in_channels=[16,32,64,128]"]


def seg_args(backbone, data_root, work, *extra):
    return [SEG_CONFIG, "--backbone", str(backbone), "--data-root", str(data_root),
            "--work-dir", str(work), "--max-iters", "2", "--crop-size", "64", "--num-workers",
            "0", "--total-batch", "2", *extra, "--cfg-options", *SEG_TINY]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-iteration seg_train run: (data root, backbone source, work dir)."""
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    from transfer.synthetic.segmentation import write_voc12aug

    folder = tmp_path_factory.mktemp("seg")
    write_voc12aug(folder / "data", num_train=2, num_val=1, size=64, seed=0)
    backbone = "random:0"
    work = folder / "work"
    result = subprocess.run([sys.executable, "tools/seg_train.py",
                             *seg_args(backbone, folder / "data", work)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "data", backbone, work


@pytest.mark.slow
@pytest.mark.mmseg
def test_real_checkpoints_need_exactly_the_allow_list(trained):
    _, _, work = trained
    path = work / "iter_2.pth"
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
               for g in MMENGINE_CHECKPOINT_GLOBALS}
    assert needed <= allowed | {"numpy.core.multiarray._reconstruct",
                                "numpy.core.multiarray.scalar"}, needed - allowed
    raw = check_trained_checkpoint(path, work)
    assert raw["meta"]["iter"] == 2
    assert all(isinstance(v, HistoryBuffer) for v in raw["message_hub"]["log_scalars"].values())


@pytest.mark.slow
@pytest.mark.mmseg
def test_seg_train_resume_and_seg_test_refuse_the_gadget(trained, tmp_path):
    data_root, backbone, work = trained
    marker = tmp_path / "gadget_ran"
    work2 = tmp_path / "work"
    shutil.copytree(work, work2)
    base = check_trained_checkpoint(work2 / "iter_2.pth", work2)
    bad = gadget_checkpoint(work2 / "iter_2.pth", marker, base)
    (work2 / "last_checkpoint").write_text(str(bad))
    with pytest.raises(SystemExit) as info:
        load_tool("seg_train").main(seg_args(backbone, data_root, work2, "--resume"))
    assert str(bad) in str(info.value) and "refusing getattr(getattr, '__self__')" in str(
        info.value)
    assert not marker.exists()

    # seg_test: a copy in a sub-folder of the work dir is not trusted by the work dir's marker
    below = work2 / "sub" / "iter_2.pth"
    below.parent.mkdir()
    shutil.copy(work / "iter_2.pth", below)
    with pytest.raises(SystemExit) as info:
        load_tool("seg_test").main([SEG_CONFIG, str(below), "--data-root", str(data_root),
                                    "--crop-size", "64", "--num-workers", "0",
                                    "--cfg-options", *SEG_TINY])
    assert str(below) in str(info.value) and "refused by torch.load" in str(info.value)
    assert not marker.exists()
