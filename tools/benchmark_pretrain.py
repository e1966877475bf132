#!/usr/bin/env python
"""Pretraining throughput: the training step against the backbone-only ceiling, the step's
breakdown, the input pipeline (PIL and fast) and end to end, as one Markdown table.

Ratios are what to compare (both sides measured in one run, on one machine); absolute
images/s only mean something against a baseline rerun on the same card. One image = one
sample with all its views. Timings exclude warm-up steps and synchronise the device.

Examples
  # the three GPU settings (ResNet-50 2x224 b256, ResNet-50 2x224+6x96 b128,
  # ConvNeXt-S 2x224+6x96 b48; official heads, bf16 + channels_last) with the goals, plus
  # the ablation rows (one optimisation off at a time); estimated at about 5 minutes on one
  # H100 (docs/performance.md); tools/benchmark_gpu.sh wraps this:
  python tools/benchmark_pretrain.py --matrix gpu --ablations --json gpu.json
  # small CPU analogues of the same settings (about 9 minutes on 2 shared cores):
  python tools/benchmark_pretrain.py --matrix cpu --ablations --json cpu.json
  # one recipe at one per-GPU batch, any config override after the options:
  python tools/benchmark_pretrain.py --config configs/pretrain/vicregl_resnet50_2x224_300e_in1k.yaml \\
      --batch 128 --parts step run.precision=fp16
  # where a step's time goes, op by op (torch.profiler), for the first setting:
  python tools/benchmark_pretrain.py --matrix cpu --parts step --profile profile.txt
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import _bootstrap  # noqa: F401
import torch
import yaml

from pretrain import benchmark as bench
from pretrain.config import load_config

RECIPES = Path(__file__).resolve().parent.parent / "configs" / "pretrain"
R50 = RECIPES / "vicregl_resnet50_2x224_300e_in1k.yaml"
CNXS = RECIPES / "vicregl_convnext_small_2x224+6x96_400e_in1k.yaml"
MULTICROP = ["data.size_crops=[224,96]", "data.num_crops=[2,6]",
             "data.min_scale_crops=[0.4,0.08]", "data.max_scale_crops=[1.0,0.4]"]


@dataclass
class Setting:
    name: str
    recipe: Path
    batch: int  # per GPU
    overrides: list = field(default_factory=list)
    goal: float | None = None  # step / ceiling
    official_peak_gib: float | None = None  # the official code's, on one H100
    official_step_img_s: float | None = None


# The GPU settings and their step/ceiling goals (docs/performance.md); the recipes already hold
# bf16, channels_last and the optimisations.
GPU_MATRIX = [
    Setting("resnet50 2x224", R50, 256, [], 0.85, 25.2, 688),
    Setting("resnet50 2x224+6x96", R50, 128, MULTICROP, 0.75, 24.0, 118),
    Setting("convnext_small 2x224+6x96", CNXS, 48, [], 0.80, 20.8, 53),
]
# CPU analogues: smaller backbones and crops, heads sized so that the heads' share of the
# compute stays close to the GPU settings'; fp32 (CPU autocast is not the point here).
CPU_COMMON = ["run.precision=fp32", "run.channels_last=false", "model.mlp=2048-2048-2048",
              "model.maps_mlp=512-512-512"]
CPU_MATRIX = [
    Setting("cpu resnet18 2x96", R50, 32, CPU_COMMON + [
        "model.arch=resnet18", "data.size_crops=[96]"], 0.85),
    Setting("cpu resnet18 2x128+6x64", R50, 16, CPU_COMMON + [
        "model.arch=resnet18"] + MULTICROP[1:] + ["data.size_crops=[128,64]"], 0.75),
    Setting("cpu convnext_tiny 2x96+6x64", CNXS, 8, CPU_COMMON + [
        "model.arch=convnext_tiny", "data.size_crops=[96,64]"], 0.80),
]
# One optimisation off at a time, then all of them (the official code's choices), as
# (name, overrides, GPU only); prediction vs outcome: docs/performance.md.
ABLATIONS = [
    ("optimiser unfused", ["optim.fused=false"], False),
    ("loss read every step", ["run.check_finite_every_steps=1"], False),
    ("heads per view", ["model.fuse_heads=false"], False),
    ("views one by one", ["model.fuse_views=false", "model.fuse_heads=false"], False),
    ("fp16 + GradScaler", ["run.precision=fp16"], True),
    ("channels-first", ["run.channels_last=false"], True),
]


def ablations_for(cfg: dict, on_gpu: bool) -> list[tuple[str, list]]:
    """The ablations that change something for ``cfg`` on this device, then "all off"."""
    rows, union = [], []
    for name, extra, gpu_only in ABLATIONS:
        if gpu_only and not on_gpu:
            continue
        if name == "heads per view" and cfg["model"]["fuse_views"]:
            continue  # implied by fuse_views: see "views one by one"
        if name == "views one by one" and not cfg["model"]["fuse_views"]:
            continue
        if all(_value(cfg, o) == yaml.safe_load(o.split("=", 1)[1]) for o in extra):
            continue  # already off in this setting
        rows.append((name, extra))
        union += [o for o in extra if o not in union]
    if len(rows) > 1:
        rows.append(("all off", union))
    return rows


def _value(cfg: dict, override: str):
    section, key = override.split("=", 1)[0].split(".")
    return cfg[section][key]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--matrix", choices=("gpu", "cpu"),
                   help="gpu: the three GPU settings at their batches (needs a GPU); "
                        "cpu: small analogues for a CPU; overrides apply to every setting")
    p.add_argument("--config", type=Path, help="one recipe (configs/pretrain/*.yaml) instead "
                   "of a matrix; use with --batch")
    p.add_argument("--batch", type=int, default=None,
                   help="per-device batch for --config (default: the recipe's total batch)")
    p.add_argument("--goal", type=float, default=None, help="step/ceiling goal to print for --config")
    p.add_argument("--parts", default="step,loader,e2e",
                   help="comma list of: step (ceiling, step, loss and optimiser alone), loader "
                        "(PIL and fast pipelines from JPEG files), e2e (loader + step with the "
                        "recipe's data.pipeline)")
    p.add_argument("--ablations", action="store_true",
                   help="also time the step with one optimisation off at a time, and with all "
                        "of them off (the official code's choices); GPU-only switches are "
                        "skipped on the CPU")
    p.add_argument("--ablation-steps", type=int, default=None,
                   help="timed steps per ablation row (default 6 GPU, 3 CPU; 3 warm-up)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 on the CPU, where other work shares the "
                        "cores and one thread keeps timings steadier; torch's default on a GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5 GPU, 2 CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 12 GPU, 5 CPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers for loader/e2e (default: all cores, at most 16)")
    p.add_argument("--loader-batches", type=int, default=None,
                   help="timed batches for loader/e2e (default 12 GPU, 4 CPU), after 4 warm-up")
    p.add_argument("--jpeg-root", type=Path, default=None,
                   help="folder for the synthetic JPEGs (kept and reused; default: a "
                        "temporary folder)")
    p.add_argument("--jpeg-images", type=int, default=None,
                   help="number of synthetic JPEGs (default 512 GPU, 64 CPU); later epochs "
                        "reuse them with new augmentations")
    p.add_argument("--jpeg-size", default="500x375",
                   help="WIDTHxHEIGHT of the synthetic JPEGs (ImageNet's typical 500x375)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--profile", type=Path,
                   help="write a torch.profiler table (top ops by self time) of 3 training "
                        "steps of the first setting to this file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides applied to every setting, e.g. optim.fused=false")
    return p.parse_args(argv)


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU")
    return (f"{where}; {os.cpu_count()} CPU cores ({cpu}); torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def settings_for(args) -> list[Setting]:
    if args.matrix:
        base = GPU_MATRIX if args.matrix == "gpu" else CPU_MATRIX
        return [Setting(s.name, s.recipe, s.batch, s.overrides + args.overrides, s.goal,
                        s.official_peak_gib, s.official_step_img_s) for s in base]
    if not args.config:
        raise SystemExit("give --matrix gpu|cpu or --config RECIPE")
    cfg = load_config(args.config, args.overrides)
    return [Setting(args.config.stem, args.config, args.batch or cfg["optim"]["batch_size"],
                    list(args.overrides), args.goal)]


def run_setting(s: Setting, args, device, jpeg_root) -> list[dict]:
    parts = set(args.parts.split(","))
    cfg = load_config(s.recipe, s.overrides)
    row = {"setting": s.name, "variant": "recipe", "batch": s.batch, "goal": s.goal,
           "official_peak_gib": s.official_peak_gib, "pipeline": cfg["data"]["pipeline"],
           "precision": cfg["run"]["precision"], "channels_last": cfg["run"]["channels_last"],
           "overrides": s.overrides}
    rows = [row]
    if "step" in parts:
        print(f"[{s.name}] step ...", file=sys.stderr, flush=True)
        row.update(bench.measure_step(cfg, s.batch, device, args.warmup, args.steps))
    if "loader" in parts:
        for pipeline in ("pil", "fast", "fast-workers"):
            print(f"[{s.name}] loader {pipeline} ...", file=sys.stderr, flush=True)
            row[f"loader_{pipeline.replace('-', '_')}_img_s"] = bench.loader_throughput(
                cfg, jpeg_root, s.batch, args.workers, pipeline, device,
                args.loader_batches)["img_s"]
    if "e2e" in parts:
        print(f"[{s.name}] end to end ({cfg['data']['pipeline']}) ...", file=sys.stderr, flush=True)
        row["e2e_img_s"] = bench.end_to_end(cfg, jpeg_root, s.batch, args.workers,
                                            cfg["data"]["pipeline"], device,
                                            args.loader_batches)["img_s"]
        if "step_img_s" in row:
            row["e2e_ratio"] = row["e2e_img_s"] / row["step_img_s"]
    if args.ablations and "step" in parts:
        for name, extra in ablations_for(cfg, device.type == "cuda"):
            print(f"[{s.name}] ablation: {name} ...", file=sys.stderr, flush=True)
            variant = load_config(s.recipe, s.overrides + extra)
            result = bench.measure_step(variant, s.batch, device, min(args.warmup, 3),
                                        args.ablation_steps, breakdown=False)
            rows.append({"setting": s.name, "variant": name, "batch": s.batch,
                         "overrides": s.overrides + extra, **result})
    return rows


def fmt(value, spec=".0f", none="-") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return none
    return format(value, spec)


def table(rows: list[dict], device: torch.device) -> str:
    on_gpu = device.type == "cuda"
    head = ("| setting | variant | batch | ceiling img/s | step img/s | step/ceiling | goal | "
            "peak GiB (official) | backbone / loss / optimiser / heads+rest % | "
            "loader PIL img/s | loader fast img/s (workers only) | end to end img/s | "
            "e2e/step (goal 0.9) |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        goal = r.get("goal")
        if goal is None:
            verdict = "-"
        elif not on_gpu:
            verdict = f"({goal:.2f} on GPU)"
        else:
            verdict = f"{goal:.2f} {'met' if r.get('ratio', 0) >= goal else 'MISSED'}"
        peak = fmt(r.get("peak_gib"), ".1f", "n/a")
        if r.get("official_peak_gib"):
            ok = "" if r.get("peak_gib") is None else (
                " met" if r["peak_gib"] <= r["official_peak_gib"] else " HIGHER")
            peak += f" ({r['official_peak_gib']}){ok}"
        shares = "-"
        if "share_loss" in r:
            shares = " / ".join(fmt(100 * r[k], ".0f") for k in (
                "share_backbone", "share_loss", "share_optimizer", "share_heads_rest"))
        e2e = fmt(r.get("e2e_ratio"), ".2f")
        if on_gpu and "e2e_ratio" in r:
            e2e += " met" if r["e2e_ratio"] >= 0.9 else " MISSED"
        lines.append(
            f"| {r['setting']} | {r['variant']} | {r['batch']} | {fmt(r.get('ceiling_img_s'), '.1f')} "
            f"| {fmt(r.get('step_img_s'), '.1f')} | {fmt(r.get('ratio'), '.2f')} | {verdict} | "
            f"{peak} | {shares} | {fmt(r.get('loader_pil_img_s'), '.0f')} | "
            f"{fmt(r.get('loader_fast_img_s'), '.0f')} ({fmt(r.get('loader_fast_workers_img_s'), '.0f')})"
            f" | {fmt(r.get('e2e_img_s'), '.1f')} | "
            f"{e2e} |")
    return "\n".join(lines)


def profile_step(s: Setting, args, device, path: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    cfg = load_config(s.recipe, s.overrides)
    calls = bench.step_calls(cfg, s.batch, device, breakdown=False)
    for _ in range(args.warmup):
        calls["step"]()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            calls["step"]()
        bench.synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.write_text(f"# {s.name}, batch {s.batch}, 3 steps; {machine(device)}\n"
                    + prof.key_averages().table(sort_by=sort, row_limit=40) + "\n")
    print(f"profile written to {path}", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    choice = args.device
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(choice)
    on_gpu = device.type == "cuda"
    if args.matrix == "gpu" and not on_gpu:
        raise SystemExit("--matrix gpu needs a CUDA device; use --matrix cpu here")
    if args.threads or not on_gpu:
        torch.set_num_threads(args.threads or 1)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 2)
    args.steps = args.steps or (12 if on_gpu else 5)
    args.ablation_steps = args.ablation_steps or (6 if on_gpu else 3)
    args.workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    args.loader_batches = args.loader_batches or (12 if on_gpu else 4)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    settings = settings_for(args)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="vicregl-jpeg-") as tmp:
        jpeg_root = None
        if {"loader", "e2e"} & set(args.parts.split(",")):
            width, height = (int(v) for v in args.jpeg_size.lower().split("x"))
            count = args.jpeg_images or (512 if on_gpu else 64)
            root = args.jpeg_root or Path(tmp)
            print(f"writing {count} synthetic {width}x{height} JPEGs to {root} ...",
                  file=sys.stderr, flush=True)
            jpeg_root = bench.write_jpeg_folder(root, count, height, width,
                                                processes=min(16, os.cpu_count() or 1))
        if args.profile:
            profile_step(settings[0], args, device, args.profile)
        rows = []
        for s in settings:
            rows.extend(run_setting(s, args, device, jpeg_root))
            if on_gpu:
                torch.cuda.empty_cache()
    header = (f"Machine: {machine(device)}. Command: python tools/benchmark_pretrain.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}. Warm-up {args.warmup}, "
              f"timed {args.steps} steps; loader: {args.workers} workers, "
              f"{args.loader_batches} timed batches. {time.time() - started:.0f} s in all.")
    print(header + "\n\n" + table(rows, device))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(device), "argv": argv or sys.argv[1:],
                                         "rows": rows}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
