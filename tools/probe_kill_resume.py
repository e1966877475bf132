#!/usr/bin/env python
"""Kill -9 a training tool at random moments, run the same command again, and compare the
result with an uninterrupted run (the probe behind docs/reliability.md).

  pretrain   tools/pretrain.py on a tiny CPU recipe (synthetic data, a checkpoint every
             step): final weights, optimiser state, GradScaler, RNG states, step, the
             exported backbone and metrics.jsonl (minus its wall-clock fields) must be equal.
             Half of the kills (--during-save) wait for a checkpoint write in progress (the
             temporary file exists) after the random delay.
  seg_train  tools/seg_train.py on a synthetic VOC aug set (needs MMSegmentation): the rerun
             passes --resume; metrics.json's metrics and the final checkpoint's weights must
             be equal.

Each trial kills once, at a random moment of the reference run's duration, then reruns to
the end. Prints one line per trial and "k/N identical"; writes WORK_DIR/report.json.

Examples
  python tools/probe_kill_resume.py --kills 10 --work-dir /tmp/kill_probe
  python tools/probe_kill_resume.py --tool seg_train --kills 3 --work-dir /tmp/seg_probe
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
SMOKE = "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"
# 16 steps of a small model; drop path on, so a resume must restore the RNG as well
PRETRAIN_TINY = ["data.num_images=64", "optim.batch_size=8", "optim.epochs=2",
                 "optim.warmup_epochs=1", "model.mlp=256-256", "model.maps_mlp=64-64",
                 "model.drop_path_rate=0.2", "run.checkpoint_every_steps=1",
                 "run.log_every_steps=1"]
SEG_CONFIG = "configs/segmentation/linear_convnext_small_voc12aug_40k.py"
WALL_CLOCK_KEYS = ("time", "images_per_s")  # differ between any two runs


def pretrain_argv(folder: Path, rerun: bool, extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "tools/pretrain.py"), "--config", str(ROOT / SMOKE),
            "--output-dir", str(folder), *PRETRAIN_TINY, *extra]


def seg_argv(folder: Path, rerun: bool, extra: list[str]) -> list[str]:
    data = folder.parent / "data"
    return [sys.executable, str(ROOT / "tools/seg_train.py"), SEG_CONFIG, "--backbone",
            "random:0", "--data-root", str(data), "--work-dir", str(folder),
            "--max-iters", "6", "--crop-size", "64", "--total-batch", "2", "--num-workers", "0",
            *(["--resume"] if rerun else []), "--cfg-options", "model.backbone.arch=convnext_mini",
            "model.decode_head.in_channels=[16,32,64,128]", "default_hooks.checkpoint.interval=1",
            "train_cfg.val_interval=6", *extra]


def prepare_seg(work: Path) -> None:
    """The synthetic VOC aug set, shared by all trials."""
    from transfer.synthetic.segmentation import write_voc12aug

    if not (work / "data").is_dir():
        write_voc12aug(work / "data", num_train=4, num_val=2, size=64, seed=0)


def run_to_end(argv: list[str], log: Path) -> float:
    start = time.time()
    with open(log, "ab") as sink:
        rc = subprocess.run(argv, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                            env=dict(os.environ, OMP_NUM_THREADS="1")).returncode
    if rc != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} exited with {rc}; see {log}")
    return time.time() - start


def saving_now(folder: Path) -> bool:
    return any(p.name.startswith(".checkpoint.pth.tmp-") for p in folder.glob(".*"))


def pretrain_progress(folder: Path) -> int:
    """Steps logged so far (the probe logs every step)."""
    path = folder / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def seg_progress(folder: Path) -> int:
    return len(list(folder.glob("iter_*.pth")))


def kill_once(argv: list[str], folder: Path, plan: dict, progress, log: Path) -> dict:
    """Start ``argv``; once ``progress(folder)`` reaches ``plan["step"]``, wait
    ``plan["jitter_s"]``, then (if ``plan["during_save"]``) until a checkpoint write is in
    progress, and SIGKILL the process group. Returns what was seen."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                env=dict(os.environ, OMP_NUM_THREADS="1"),
                                start_new_session=True)
    start = time.time()
    while proc.poll() is None and progress(folder) < plan["step"]:
        time.sleep(0.005)
    end = time.time() + plan["jitter_s"]
    while proc.poll() is None and time.time() < end:
        time.sleep(0.005)
    while plan["during_save"] and proc.poll() is None and not saving_now(folder):
        time.sleep(0.0005)
    in_save = saving_now(folder)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return {"killed_at_s": round(time.time() - start, 2), "after_step": progress(folder),
            "finished_first": proc.returncode == 0, "temporary_file_at_kill": in_save}


def tensors_equal(a, b, where: str, out: list[str]) -> None:
    """Deep comparison of checkpoint contents; appends the paths that differ to ``out``."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and torch.equal(a, b)):
            out.append(where)
    elif isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            out.append(f"{where} keys")
        for key in set(a) & set(b):
            tensors_equal(a[key], b[key], f"{where}.{key}", out)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            tensors_equal(x, y, f"{where}[{i}]", out)
    elif a != b:
        out.append(where)


def log_records(path: Path) -> list[dict]:
    from pretrain.run_logging import read_jsonl

    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS} for r in read_jsonl(path)]


def compare_pretrain(ref: Path, trial: Path) -> list[str]:
    from pretrain.weight_files import load_state_file

    diffs: list[str] = []
    a, b = (load_state_file(d / "checkpoint.pth") for d in (ref, trial))
    for key in ("model", "optimizer", "scaler", "step", "rng", "corrupt"):
        tensors_equal(a.get(key), b.get(key), key, diffs)
    x, y = (load_state_file(d / "backbone.pth") for d in (ref, trial))
    tensors_equal(x["state_dict"], y["state_dict"], "backbone.pth", diffs)
    if log_records(ref / "metrics.jsonl") != log_records(trial / "metrics.jsonl"):
        diffs.append("metrics.jsonl")
    leftovers = [p.name for p in trial.glob(".*tmp*")]
    if leftovers:
        diffs.append(f"temporary files left: {leftovers}")
    return diffs


def compare_seg(ref: Path, trial: Path) -> list[str]:
    import torch

    from transfer.mmseg_side.runner import MMENGINE_CHECKPOINT_GLOBALS

    diffs: list[str] = []
    metrics = [json.loads((d / "metrics.json").read_text())["metrics"] for d in (ref, trial)]
    if metrics[0] != metrics[1]:
        diffs.append(f"metrics.json: {metrics[0].get('mIoU')} vs {metrics[1].get('mIoU')}")
    with torch.serialization.safe_globals(MMENGINE_CHECKPOINT_GLOBALS):
        states = [torch.load(d / "iter_6.pth", map_location="cpu")["state_dict"]
                  for d in (ref, trial)]
    tensors_equal(states[0], states[1], "iter_6.pth state_dict", diffs)
    return diffs


# argv, comparison, progress, number of steps (checkpoints) of one run
TOOLS = {"pretrain": (pretrain_argv, compare_pretrain, pretrain_progress, 16),
         "seg_train": (seg_argv, compare_seg, seg_progress, 6)}


def probe(tool: str, kills: int, work: Path, seed: int = 0, extra: list[str] = (),
          during_save: float = 0.5) -> list[dict]:
    """Run the reference and ``kills`` kill-and-rerun trials; returns one record per trial."""
    argv_of, compare, progress, steps = TOOLS[tool]
    work.mkdir(parents=True, exist_ok=True)
    if tool == "seg_train":
        prepare_seg(work)
    rng = random.Random(seed)
    ref, timing = work / "reference", work / "reference_wall.json"
    if not timing.is_file():  # the uninterrupted run; its duration is the kill window
        shutil.rmtree(ref, ignore_errors=True)
        ref.mkdir()
        timing.write_text(json.dumps(run_to_end(argv_of(ref, False, list(extra)),
                                                work / "reference.log")))
    trials = []
    for i in range(kills):
        folder = work / f"trial_{i:02d}"
        shutil.rmtree(folder, ignore_errors=True)
        # step 0: during start-up; the last step: between the last checkpoint and the end
        plan = {"step": rng.randint(0, steps - 1), "jitter_s": rng.uniform(0.0, 2.0),
                "during_save": tool == "pretrain" and i < round(kills * during_save)}
        seen = kill_once(argv_of(folder, False, list(extra)), folder, plan, progress,
                         folder.parent / f"{folder.name}.log")
        run_to_end(argv_of(folder, True, list(extra)), folder.parent / f"{folder.name}.log")
        diffs = compare(ref, folder)
        trials.append({"trial": i, **plan, **seen,
                       "identical": not diffs, "differences": diffs})
        print(f"trial {i}: killed at {seen['killed_at_s']} s after step {seen['after_step']}"
              f"{' during a checkpoint write' if seen['temporary_file_at_kill'] else ''}"
              f"{' (had finished)' if seen['finished_first'] else ''}: "
              f"{'identical' if not diffs else 'DIFFERENT: ' + ', '.join(diffs[:5])}", flush=True)
    return trials


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", choices=tuple(TOOLS), default="pretrain")
    parser.add_argument("--kills", type=int, default=10, help="number of kill-and-rerun trials")
    parser.add_argument("--work-dir", type=Path, required=True,
                        help="where the reference and the trials run (reused: the reference "
                             "is kept between calls)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--during-save", type=float, default=0.5,
                        help="fraction of pretrain trials that, after their random delay, wait "
                             "for a checkpoint write in progress before killing")
    parser.add_argument("extra", nargs="*", help="more KEY=VALUE overrides for the tool")
    args = parser.parse_args(argv)
    if args.kills < 1:
        raise SystemExit(f"--kills {args.kills}: expected an integer >= 1")
    trials = probe(args.tool, args.kills, args.work_dir, args.seed, args.extra, args.during_save)
    same = sum(t["identical"] for t in trials)
    summary = {"tool": args.tool, "kills": len(trials), "identical": same, "trials": trials}
    (args.work_dir / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.tool}: {same}/{len(trials)} identical to the uninterrupted run "
          f"({sum(t['temporary_file_at_kill'] for t in trials)} kills during a checkpoint write)")
    return 0 if same == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
