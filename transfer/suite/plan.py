"""A suite expanded into a plan: the steps to run (pretraining, BatchNorm recalibration,
experiments), each with its folder, the tool's command line, its output and what it needs.
Every experiment is given its backbone's source as ``--backbone``; a tool that needs its
framework's file converts the source itself, into the step's folder.

``make_plan`` fills the suite's placeholders (listed in ``spec.py``) for every backbone x
experiment row; ``select`` keeps the steps that ``--only`` names and what they need. How a
step is launched (one process, torchrun, SLURM) is ``runner.py``'s business.
"""
import fnmatch
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.common.arguments import random_seed
from transfer.suite.spec import (ROOT, Backbone, Experiment, Suite, SuiteError,
                                  placeholders)

# How a task's tool is started for more than one GPU: torchrun, or it spawns its own processes
SPAWN = {"segmentation": "torchrun", "detection": "self", "classification": "torchrun"}
# Tasks whose tool runs several seeds in one process (--seeds, transfer/seed_runs.py)
SEEDS_IN_ONE_PROCESS = {"segmentation", "classification", "dense_retrieval"}
# Steps that derive a file from their backbone's: when stale, the file is simply rewritten
# (their folder is not moved aside)
REWRITTEN_KINDS = ("recalibrate",)
# recalibrate_bn keys -> tools/recalibrate_bn.py options
RECALIBRATE_OPTIONS = {"images": "--images", "image_size": "--image-size", "resize": "--resize",
                       "dataset": "--dataset", "batch_size": "--batch-size", "seed": "--seed"}


def fill(text: str, values: dict[str, str], where: str) -> str:
    """Replace ``{name}`` placeholders; an unknown one is an error naming ``where``."""
    names = placeholders(text, where)
    missing = sorted({n for n in names if n not in values})
    if missing:
        raise SuiteError(f"{where}: unknown placeholder(s) {', '.join('{' + m + '}' for m in missing)}"
                         f" in {text!r}; known here: {', '.join(sorted(values))}")
    return text.format_map(values)


@dataclass
class Step:
    """One thing to run. ``argv`` is the tool's own command line; how it is launched (one
    process, torchrun, SLURM) is the runner's business, told by ``spawn`` and ``gpus``."""
    id: str
    kind: str  # pretrain | recalibrate | experiment
    backbone: Backbone
    folder: Path
    argv: list[str]
    output: Path  # exists once the step has finished
    gpus: int = 0
    nodes: int = 1
    spawn: str = "none"  # torchrun: needs torchrun for > 1 process; self: spawns its own
    needs: list[str] = field(default_factory=list)
    experiment: Experiment | None = None
    source: str = ""  # the backbone source this step reads (file path or random:SEED)
    seed: int | None = None  # the seed of a seeded experiment step (None: the tool's default)
    row: str = ""  # experiment steps: <backbone>/<experiment>, shared by a row's seeds
    # a seeded row's command without a seed, into the row folder: with ``--seeds`` appended,
    # one process runs several of its seeds (None: the tool takes one seed per process)
    row_argv: list[str] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "suite.log"


@dataclass
class Plan:
    suite: Suite
    work_dir: Path
    data_root: Path
    steps: list[Step]

    def get(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def rows(self) -> list[Step]:
        """Every experiment step (a seeded row has one per seed)."""
        return [s for s in self.steps if s.kind == "experiment"]


def backbone_source(backbone: Backbone, work_dir: Path, values: dict[str, str],
                    where: str) -> str:
    if backbone.source is None:
        return str(work_dir / "pretrain" / backbone.name / "backbone.pth")
    source = fill(backbone.source, values, where)
    try:
        if random_seed(source) is not None:
            return source
    except ValueError as exc:  # random:abc
        raise SuiteError(f"{where}: {exc}") from None
    return str(Path(source).expanduser().resolve())


def _config(exp: Experiment, values: dict[str, str], where: str) -> str:
    config = fill(exp.config, values, f"{where}.config")
    if not (ROOT / config).is_file() and not Path(config).is_file():
        raise SuiteError(f"{where}.config: {config} does not exist (for arch {values['arch']}); "
                         "restrict the experiment with 'archs' or add the config")
    return config


def _seed_args(seed: int | None, flag: str = "--seed") -> list[str]:
    return [] if seed is None else [flag, str(seed)]


def _segmentation_argv(exp, values, gpus, where, seed) -> list[str]:
    argv = [values["python"], "tools/seg_train.py", _config(exp, values, where), "--backbone",
            values["source"], "--data-root", values["data_root"], "--work-dir",
            values["row_dir"]]
    if gpus > 1:
        argv += ["--launcher", "pytorch"]
    if exp.resume:
        argv += ["--resume"]
    return argv + _seed_args(seed)


def _detection_argv(exp, values, gpus, where, seed) -> list[str]:
    # detectron2's own launcher starts one process per GPU (--num-gpus); options are KEY VALUE
    argv = [values["python"], "tools/det_train.py", "--num-gpus", str(max(gpus, 1)),
            "--config-file", _config(exp, values, where), "--backbone", values["source"],
            "--data-root", values["data_root"]]
    if exp.resume:
        argv += ["--resume"]
    argv += ["OUTPUT_DIR", values["row_dir"]] + _seed_args(seed, "SEED")
    return argv + (["MODEL.DEVICE", "cpu"] if gpus == 0 else [])


def _evaluation_args(values: dict[str, str], seed: int | None) -> list[str]:
    """What tools/cls_eval.py and tools/dense_nn_eval.py both take (docs/suites.md)."""
    return ["--arch", values["arch"], "--backbone", values["source"], "--data-root",
            values["data_root"], "--work-dir", values["row_dir"]] + _seed_args(seed)


def _classification_argv(exp, values, gpus, where, seed) -> list[str]:
    return ([values["python"], "tools/cls_eval.py"] + _evaluation_args(values, seed)
            + ["--protocol", exp.protocol])


def _dense_retrieval_argv(exp, values, gpus, where, seed) -> list[str]:
    return ([values["python"], "tools/dense_nn_eval.py", _config(exp, values, where)]
            + _evaluation_args(values, seed))


def _command_argv(exp, values, gpus, where, seed) -> list[str]:
    return [fill(a, values, f"{where}.command") for a in exp.command]


TASK_ARGV = {"segmentation": _segmentation_argv, "detection": _detection_argv,
             "classification": _classification_argv, "dense_retrieval": _dense_retrieval_argv,
             "command": _command_argv}


def _experiment_argv(exp: Experiment, values: dict[str, str], gpus: int, where: str,
                     seed: int | None = None) -> list[str]:
    """The tool's command line for one step of ``exp`` (``seed``: a seeded step's seed); the
    experiment's ``options`` last."""
    options = [fill(o, values, f"{where}.options") for o in exp.options]
    return TASK_ARGV[exp.task](exp, values, gpus, where, seed) + options


def _pretrain_step(bb: Backbone, values: dict[str, str], work_dir: Path, data_root: Path,
                   pretrain_gpus: int | None, where: str) -> Step:
    folder = work_dir / "pretrain" / bb.name
    n = bb.pretrain["gpus"] if pretrain_gpus is None else pretrain_gpus
    config = fill(bb.pretrain["config"], values, f"{where}.pretrain.config")
    argv = [values["python"], "tools/pretrain.py", "--config", config, "--output-dir",
            str(folder), "--data-root", str(data_root), f"model.arch={bb.arch}"]
    argv += [fill(o, values, f"{where}.pretrain.overrides") for o in bb.pretrain["overrides"]]
    if n == 0:
        argv.append("run.device=cpu")
    return Step(f"pretrain:{bb.name}", "pretrain", bb, folder, argv, folder / "backbone.pth",
                gpus=n, nodes=bb.pretrain["nodes"], spawn="torchrun")


def _recalibrate_step(bb: Backbone, values: dict[str, str], work_dir: Path, data_root: Path,
                      gpus: int | None, needs: list[str], where: str) -> Step:
    """tools/recalibrate_bn.py on the backbone's source, into WORK/backbones/<name>/: the
    file every evaluation of the backbone then reads."""
    folder = work_dir / "backbones" / bb.name
    options = bb.recalibrate_bn
    n = options["gpus"] if gpus is None else gpus
    argv = [values["python"], "tools/recalibrate_bn.py", "--arch", bb.arch, "--backbone",
            values["source"], "--data-root", str(data_root), "--out",
            str(folder / "backbone.pth")]
    for key, flag in RECALIBRATE_OPTIONS.items():
        if key in options:
            argv += [flag, fill(options[key], values, f"{where}.recalibrate_bn.{key}")]
    if n == 0:
        argv += ["--device", "cpu"]
    return Step(f"recalibrate:{bb.name}", "recalibrate", bb, folder, argv,
                folder / "backbone.pth", gpus=n, needs=list(needs), source=values["source"])


def _experiment_steps(suite: Suite, bb: Backbone, exp: Experiment, values: dict[str, str],
                      work_dir: Path, gpus: int | None, needs: list[str]) -> list[Step]:
    """The row's steps: one, or one per seed (``seeds: N``) in ``<row>/seed<k>``."""
    row_id, row_dir = f"{bb.name}/{exp.name}", work_dir / "runs" / bb.name / exp.name
    n = exp.gpus if gpus is None else gpus
    seeds = list(range(exp.seeds)) if exp.seeded else [None]
    where = f"{suite.path}: experiments.{exp.name}"
    row_argv = None
    if (exp.seeded and exp.task in SEEDS_IN_ONE_PROCESS
            and not any("{seed}" in option for option in exp.options)):
        row_values = dict(values, experiment=exp.name, row_dir=str(row_dir), gpus=str(n),
                          seed="0")
        row_argv = _experiment_argv(exp, row_values, n, where, None)
    steps = []
    for seed in seeds:
        folder = row_dir if seed is None else row_dir / f"seed{seed}"
        step_values = dict(values, experiment=exp.name, row_dir=str(folder), gpus=str(n),
                           seed=str(seed or 0))
        argv = _experiment_argv(exp, step_values, n, where, seed)
        steps.append(Step(
            row_id if seed is None else f"{row_id}/seed{seed}", "experiment", bb, folder, argv,
            folder / "metrics.json", gpus=n, spawn=SPAWN.get(exp.task, "none"),
            needs=list(needs), experiment=exp, source=values["source"], seed=seed, row=row_id,
            row_argv=row_argv))
    return steps


def make_plan(suite: Suite, work_dir: str | Path, data_root: str | Path,
              gpus: int | None = None, pretrain_gpus: int | None = None,
              python: str = sys.executable) -> Plan:
    """Expand the suite into steps. ``gpus`` / ``pretrain_gpus`` override every experiment's /
    pretraining's GPU count (0 = CPU)."""
    work_dir, data_root = Path(work_dir).resolve(), Path(data_root).resolve()
    base = dict(suite.variables, data_root=str(data_root), work_dir=str(work_dir),
                root=str(ROOT), python=python)
    steps: list[Step] = []
    for bb in suite.backbones.values():
        values = dict(base, arch=bb.arch, backbone=bb.name, experiment="", row_dir="",
                      gpus="", seed="0")
        where = f"{suite.path}: backbones.{bb.name}"
        values["source"] = backbone_source(bb, work_dir, values, f"{where}.source")
        needs = []
        if bb.pretrain is not None:
            steps.append(_pretrain_step(bb, values, work_dir, data_root, pretrain_gpus, where))
            needs.append(f"pretrain:{bb.name}")
        if bb.recalibrate_bn is not None:  # every evaluation reads the recalibrated file
            steps.append(_recalibrate_step(bb, values, work_dir, data_root, gpus, needs, where))
            needs.append(steps[-1].id)
            values["source"] = str(steps[-1].output)
        for exp in suite.experiments.values():
            if exp.applies_to(bb.arch):
                steps += _experiment_steps(suite, bb, exp, values, work_dir, gpus, needs)
    if not any(s.kind == "experiment" for s in steps):
        raise SuiteError(f"{suite.path}: no experiment applies to any backbone (check 'archs')")
    return Plan(suite, work_dir, data_root, steps)


def select(plan: Plan, patterns: list[str]) -> list[Step]:
    """Steps whose id matches one of the glob ``patterns`` (all when none), plus what they
    need (pretraining and recalibration of their backbone). A row id
    (``backbone/experiment``) selects all the seeds of a seeded row."""
    if not patterns:
        return list(plan.steps)
    chosen = {s.id for s in plan.steps
              if any(fnmatch.fnmatchcase(s.id, p) or (s.row and fnmatch.fnmatchcase(s.row, p))
                     for p in patterns)}
    if not chosen:
        known = ", ".join(s.id for s in plan.steps)
        raise SuiteError(f"--only {' '.join(patterns)} matches no step; steps: {known}")
    for step in plan.steps:
        if step.id in chosen:
            chosen.update(step.needs)
    return [s for s in plan.steps if s.id in chosen]
