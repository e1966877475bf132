"""Output folders that are really read-only, really full, or under a file (docs/reliability.md,
"Configs and arguments"): a tmpfs mounted read-only, or mounted with a few MiB, so the kernel
refuses the writes as it would on a real disk, not a simulation. Needs root with CAP_SYS_ADMIN (mount);
elsewhere the tests skip and say so."""
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"
TINY_RUN = ["data.num_images=16", "optim.batch_size=8", "optim.max_steps=2",
            "run.checkpoint_every_steps=1"]


@contextmanager
def tmpfs(where: Path, options: str):
    """A tmpfs at ``where`` (``options``: ro, size=...), unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip() or out.returncode}): "
                    "a read-only or full folder needs root with CAP_SYS_ADMIN")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def read_only(where: Path, files: dict[str, bytes]):
    """A tmpfs holding ``files``, then remounted read-only."""
    @contextmanager
    def mounted():
        with tmpfs(where, "size=8m") as folder:
            for name, data in files.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            yield folder
    return mounted()


def test_read_only_output_folder_is_refused_by_name_before_any_work(tmp_path):
    with read_only(tmp_path / "ro", {"old/keep.txt": b"kept"}) as ro:
        with pytest.raises(SystemExit) as info:  # pretraining: before the data is read
            load_tool("pretrain").main(["--config", str(SMOKE), f"run.output_dir={ro}/run",
                                        "data.kind=imagefolder", "data.root=/nonexistent"])
        assert f"run.output_dir {ro}/run: cannot write in {ro} (Read-only file system)" \
            in str(info.value)
        with pytest.raises(SystemExit, match=f"output {ro}/b.pth: folder {ro}: cannot write"):
            load_tool("export_backbone").main([str(tmp_path / "absent.pth"), f"{ro}/b.pth"])
        with pytest.raises(SystemExit, match=f"--out {ro}/m.pth: folder {ro}: cannot write"):
            load_tool("convert").main(["--framework", "mmseg", "--arch", "resnet18",
                                       "--source", "random:0", "--out", f"{ro}/m.pth"])
        suite = subprocess.run([sys.executable, "tools/run_suite.py",
                                "configs/suites/demo_cpu.yaml", "--work-dir", f"{ro}/suite"],
                               cwd=ROOT, capture_output=True, text=True)
        assert suite.returncode != 0
        assert f"--work-dir {ro}/suite: cannot write in {ro} (Read-only file system)" \
            in suite.stderr
        assert (ro / "old/keep.txt").read_bytes() == b"kept"


@pytest.mark.mmseg
def test_read_only_work_dir_of_segmentation(tmp_path):
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    config = "configs/segmentation/linear_convnext_small_voc12aug_40k.py"
    with read_only(tmp_path / "ro", {}) as ro:
        with pytest.raises(SystemExit, match=f"--work-dir {ro}/w: cannot write in {ro}"):
            load_tool("seg_train").main([config, "--backbone", "c.pth", "--data-root",
                                         str(tmp_path), "--work-dir", f"{ro}/w"])


def test_a_disk_too_small_for_the_checkpoints_is_refused_before_training(tmp_path):
    with tmpfs(tmp_path / "small", "size=1m") as small:
        with pytest.raises(SystemExit) as info:
            load_tool("pretrain").main(["--config", str(SMOKE), f"run.output_dir={small}/run",
                                        *TINY_RUN])
        message = str(info.value)
        assert f"run.output_dir {small}/run: " in message and "MiB free in" in message
        assert "this run's checkpoint needs about" in message
        assert not (small / "run" / "checkpoint.pth").exists()
        assert not list((small / "run").glob("metrics.jsonl"))  # no step ran


def test_a_disk_that_fills_up_during_a_checkpoint_write_keeps_the_old_one(tmp_path):
    import torch

    from pretrain.checkpoint import atomic_save
    from pretrain.common.files import OutputWriteError

    with tmpfs(tmp_path / "disk", "size=4m") as disk:
        target = disk / "checkpoint.pth"
        atomic_save({"w": torch.zeros(300_000)}, target)  # 1.2 MB: fits
        old = target.read_bytes()
        (disk / "filler").write_bytes(b"\0" * (2 * 2**20))  # leaves < 1 MiB
        with pytest.raises(OutputWriteError) as info:  # torch's own error: 'unexpected pos'
            atomic_save({"w": torch.ones(300_000)}, target)
        assert str(info.value).startswith(f"[Errno 28] cannot write {target}: the disk is full")
        assert "the previous checkpoint.pth is unchanged and no temporary is left" \
            in str(info.value)
        assert target.read_bytes() == old
        assert sorted(p.name for p in disk.iterdir()) == ["checkpoint.pth", "filler"]


def test_suite_work_dir_under_a_regular_file_is_refused_by_name(tmp_path):
    """It used to end in a raw NotADirectoryError traceback from the first step's mkdir."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = subprocess.run([sys.executable, "tools/run_suite.py", "configs/suites/demo_cpu.yaml",
                          "--work-dir", str(blocker / "w")], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"error: --work-dir {blocker / 'w'}: {blocker} is a regular file" in out.stderr
