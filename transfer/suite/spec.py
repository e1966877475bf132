"""Suites: which backbones meet which transfer experiments (``configs/suites/*.yaml``).

This module reads and checks a suite file and expands it into a plan: the steps to run
(pretraining, conversion, experiments), each with its folder, command and dependencies.
``transfer/suite/runner.py`` runs a plan and collects the results; ``transfer/suite/tables.py``
turns the results into tables. No framework is imported here.

A suite file (full description in docs/suites.md)::

    name: vicregl_resnet50
    variables: {checkpoints: checkpoints}        # defaults of --set KEY=VALUE
    backbones:
      official_r50_alpha0.75:
        arch: resnet50
        source: "{checkpoints}/resnet50_alpha0.75.pth"   # or random:0, or a torchvision file
        paper: resnet50_alpha0.75                # model(s) of paper_results.yaml to compare with
      ours_r50_alpha0.75:
        arch: resnet50
        pretrain: {config: configs/pretrain/..., overrides: [...], gpus: 8}
    experiments:
      voc12aug_linear:
        task: segmentation    # segmentation | detection | classification | dense_retrieval
                              # | command
        config: configs/segmentation/linear_{arch}_voc12aug_40k.py
        metric: mIoU
        gpus: 8
        seeds: 3                                 # 3 runs of the head, seeds 0..2 (default: one)
      in1k_knn:
        task: classification                     # tools/cls_eval.py
        protocol: knn                            # knn (default) | linear
        metric: top1

Rows are every backbone x every experiment whose ``archs`` patterns match the backbone's
architecture. Strings may hold placeholders: ``{data_root}``, ``{work_dir}``, ``{root}`` (the
repository), ``{python}``, ``{arch}``, ``{backbone}``, ``{experiment}``, ``{row_dir}``,
``{source}``, ``{checkpoint}`` (the converted mmseg checkpoint), ``{gpus}``, ``{seed}`` (the
step's seed; 0 when the experiment has no ``seeds``) and the suite's ``variables``.

``seeds: N`` (N > 1) makes N steps of a row, ``<backbone>/<experiment>/seed<k>`` for k = 0..N-1,
each in ``<row folder>/seed<k>`` and given its seed (``--seed k``, detectron2's ``SEED k``);
without it (or N = 1) a row is one step that passes no seed (the tool's default).
"""
import fnmatch
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("segmentation", "detection", "classification", "dense_retrieval", "command")
CLASSIFICATION_PROTOCOLS = ("knn", "linear")
BUILTINS = ("data_root", "work_dir", "root", "python", "arch", "backbone", "experiment",
            "row_dir", "source", "checkpoint", "gpus", "seed")
# How a task's tool is started for more than one GPU: torchrun, or it spawns its own processes
SPAWN = {"segmentation": "torchrun", "detection": "self", "classification": "torchrun"}

SUITE_KEYS = {"name", "description", "variables", "backbones", "experiments", "paper_results"}
BACKBONE_KEYS = {"arch", "source", "pretrain", "paper", "label"}
PRETRAIN_KEYS = {"config", "overrides", "gpus", "nodes"}
EXPERIMENT_KEYS = {"task", "config", "command", "metric", "metrics", "gpus", "options",
                   "archs", "paper", "label", "resume", "protocol", "seeds"}


class SuiteError(ValueError):
    """The suite file is not usable; the message names the file and the entry."""


@dataclass
class Backbone:
    name: str
    arch: str
    source: str | None  # None: produced by this suite's pretraining
    pretrain: dict | None = None
    paper: list[str] = field(default_factory=list)
    label: str = ""


@dataclass
class Experiment:
    name: str
    task: str
    metric: str
    config: str | None = None
    command: list[str] | None = None
    metrics: list[str] = field(default_factory=list)  # shown besides the main metric
    gpus: int = 1
    options: list[str] = field(default_factory=list)
    archs: list[str] = field(default_factory=lambda: ["*"])
    paper: str = ""  # experiment key in paper_results.yaml (default: the name)
    label: str = ""
    resume: bool = True
    protocol: str = ""  # classification: knn | linear
    seeds: int = 1  # > 1: that many steps, one per seed

    @property
    def seeded(self) -> bool:
        return self.seeds > 1

    def applies_to(self, arch: str) -> bool:
        return any(fnmatch.fnmatchcase(arch, pattern) for pattern in self.archs)


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    variables: dict[str, str]
    backbones: dict[str, Backbone]
    experiments: dict[str, Experiment]
    paper_results: Path


def _fail(path, text: str):
    raise SuiteError(f"{path}: {text}")


def _check_keys(path, where: str, entry, allowed: set[str]) -> dict:
    if not isinstance(entry, dict):
        _fail(path, f"{where} must be a mapping, got {type(entry).__name__}")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        _fail(path, f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                    f"{', '.join(sorted(allowed))}")
    return entry


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _positive_int(path, where: str, value, minimum: int = 0) -> int:
    if not isinstance(value, int) or value < minimum:
        _fail(path, f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def _protocol(path, where: str, task: str, value) -> str:
    """The classification protocol (default knn); other tasks take their config's."""
    if task != "classification":
        if value is not None:
            _fail(path, f"{where}.protocol: only classification experiments take 'protocol' "
                        f"(knn | linear); a {task} experiment's protocol is its config")
        return ""
    value = "knn" if value is None else value
    if value not in CLASSIFICATION_PROTOCOLS:
        _fail(path, f"{where}.protocol must be one of {', '.join(CLASSIFICATION_PROTOCOLS)}, "
                    f"got {value!r}")
    return value


def _load_experiment(path, name: str, entry) -> Experiment:
    """One ``experiments:`` entry, checked."""
    where = f"experiments.{name}"
    _check_keys(path, where, entry, EXPERIMENT_KEYS)
    task = entry.get("task")
    if task not in TASKS:
        _fail(path, f"{where}.task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "command":
        if not entry.get("command") or not isinstance(entry["command"], list):
            _fail(path, f"{where}: a 'command' task needs 'command' as a list of arguments")
    elif not entry.get("config") and task != "classification":
        _fail(path, f"{where}: a {task} experiment needs 'config'")
    if not entry.get("metric"):
        _fail(path, f"{where} needs 'metric', the metrics.json entry shown first "
                    "(e.g. mIoU, bbox_AP, top1)")
    return Experiment(
        name=name, task=task, metric=str(entry["metric"]),
        protocol=_protocol(path, where, task, entry.get("protocol")),
        seeds=_positive_int(path, f"{where}.seeds", entry.get("seeds", 1), 1),
        config=str(entry["config"]) if entry.get("config") else None,
        command=_as_list(entry.get("command")) or None,
        metrics=_as_list(entry.get("metrics")),
        gpus=_positive_int(path, f"{where}.gpus", entry.get("gpus", 1)),
        options=_as_list(entry.get("options")), archs=_as_list(entry.get("archs")) or ["*"],
        paper=str(entry.get("paper", name)), label=str(entry.get("label", name)),
        resume=bool(entry.get("resume", True)))


def load_suite(path: str | Path, variables: dict[str, str] | None = None) -> Suite:
    """Read and check a suite file; ``variables`` (from ``--set``) override its defaults."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"suite file {path} does not exist (see configs/suites/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML ({exc})") from exc
    _check_keys(path, "the suite", raw, SUITE_KEYS)
    for key in ("backbones", "experiments"):
        if not raw.get(key):
            _fail(path, f"needs a non-empty '{key}' mapping")

    defaults = {str(k): str(v) for k, v in (raw.get("variables") or {}).items()}
    for key, value in (variables or {}).items():
        if key not in defaults:
            _fail(path, f"--set {key}=...: the suite has no variable {key!r}; its variables: "
                        f"{', '.join(sorted(defaults)) or 'none'}")
        defaults[key] = value
    clash = sorted(set(defaults) & set(BUILTINS))
    if clash:
        _fail(path, f"variables {', '.join(clash)} are built-in placeholders; rename them")

    backbones = {}
    for name, entry in raw["backbones"].items():
        where = f"backbones.{name}"
        _check_keys(path, where, entry, BACKBONE_KEYS)
        if "arch" not in entry:
            _fail(path, f"{where} needs 'arch' (e.g. resnet50, convnext_small)")
        if ("source" in entry) == ("pretrain" in entry):
            _fail(path, f"{where} needs exactly one of 'source' (a checkpoint file, random:SEED) "
                        "and 'pretrain' (a recipe this suite runs)")
        pretrain = entry.get("pretrain")
        if pretrain is not None:
            _check_keys(path, f"{where}.pretrain", pretrain, PRETRAIN_KEYS)
            if "config" not in pretrain:
                _fail(path, f"{where}.pretrain needs 'config' (a recipe in configs/pretrain/)")
            pretrain = {"config": str(pretrain["config"]),
                        "overrides": _as_list(pretrain.get("overrides")),
                        "gpus": _positive_int(path, f"{where}.pretrain.gpus",
                                              pretrain.get("gpus", 1)),
                        "nodes": _positive_int(path, f"{where}.pretrain.nodes",
                                               pretrain.get("nodes", 1), 1)}
        backbones[str(name)] = Backbone(
            name=str(name), arch=str(entry["arch"]),
            source=str(entry["source"]) if "source" in entry else None, pretrain=pretrain,
            paper=_as_list(entry.get("paper")), label=str(entry.get("label", name)))

    experiments = {str(name): _load_experiment(path, str(name), entry)
                   for name, entry in raw["experiments"].items()}

    paper = Path(str(raw.get("paper_results", "configs/suites/paper_results.yaml")))
    return Suite(name=str(raw.get("name", path.stem)), path=path,
                 description=str(raw.get("description", "")).strip(), variables=defaults,
                 backbones=backbones, experiments=experiments,
                 paper_results=paper if paper.is_absolute() else ROOT / paper)


def fill(text: str, values: dict[str, str], where: str) -> str:
    """Replace ``{name}`` placeholders; an unknown one is an error naming ``where``."""
    names = [f for _, f, _, _ in string.Formatter().parse(text) if f]
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
    kind: str  # pretrain | convert | experiment
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
    if source == "random" or source.startswith("random:"):
        return source
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
    argv = [values["python"], "tools/seg_train.py", _config(exp, values, where), "--checkpoint",
            values["checkpoint"], "--data-root", values["data_root"], "--work-dir",
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


def _experiment_steps(suite: Suite, bb: Backbone, exp: Experiment, values: dict[str, str],
                      work_dir: Path, gpus: int | None, needs: list[str]) -> list[Step]:
    """The row's steps: one, or one per seed (``seeds: N``) in ``<row>/seed<k>``."""
    row_id, row_dir = f"{bb.name}/{exp.name}", work_dir / "runs" / bb.name / exp.name
    n = exp.gpus if gpus is None else gpus
    seeds = list(range(exp.seeds)) if exp.seeded else [None]
    steps = []
    for seed in seeds:
        folder = row_dir if seed is None else row_dir / f"seed{seed}"
        step_values = dict(values, experiment=exp.name, row_dir=str(folder), gpus=str(n),
                           seed=str(seed or 0))
        argv = _experiment_argv(exp, step_values, n, f"{suite.path}: experiments.{exp.name}",
                                seed)
        steps.append(Step(
            row_id if seed is None else f"{row_id}/seed{seed}", "experiment", bb, folder, argv,
            folder / "metrics.json", gpus=n, spawn=SPAWN.get(exp.task, "none"),
            needs=list(needs), experiment=exp, source=values["source"], seed=seed, row=row_id))
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
        checkpoint = work_dir / "checkpoints" / bb.name / "mmseg.pth"
        values = dict(base, arch=bb.arch, backbone=bb.name, experiment="", row_dir="",
                      checkpoint=str(checkpoint), gpus="", seed="0")
        where = f"{suite.path}: backbones.{bb.name}"
        values["source"] = source = backbone_source(bb, work_dir, values, f"{where}.source")
        needs = []
        if bb.pretrain is not None:
            steps.append(_pretrain_step(bb, values, work_dir, data_root, pretrain_gpus, where))
            needs.append(f"pretrain:{bb.name}")
        rows = [e for e in suite.experiments.values() if e.applies_to(bb.arch)]
        if any(e.task == "segmentation" for e in rows):
            argv = [python, "tools/convert.py", "--framework", "mmseg", "--arch", bb.arch,
                    "--source", source, "--out", str(checkpoint), "--quiet"]
            steps.append(Step(f"convert:{bb.name}", "convert", bb, checkpoint.parent, argv,
                              checkpoint, needs=list(needs), source=source))
        for exp in rows:
            converted = [f"convert:{bb.name}"] if exp.task == "segmentation" else []
            steps += _experiment_steps(suite, bb, exp, values, work_dir, gpus, needs + converted)
    if not any(s.kind == "experiment" for s in steps):
        raise SuiteError(f"{suite.path}: no experiment applies to any backbone (check 'archs')")
    return Plan(suite, work_dir, data_root, steps)


def select(plan: Plan, patterns: list[str]) -> list[Step]:
    """Steps whose id matches one of the glob ``patterns`` (all when none), plus what they
    need (pretraining and conversion of their backbone). A row id (``backbone/experiment``)
    selects all the seeds of a seeded row."""
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
