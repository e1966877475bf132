"""Suites: which backbones meet which transfer experiments (``configs/suites/*.yaml``).

This module reads and checks a suite file and expands it into a plan: the steps to run
(pretraining, conversion, experiments), each with its folder, command and dependencies.
``transfer/suite_runner.py`` runs a plan and collects the results; ``transfer/tables.py``
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
        task: segmentation                       # segmentation | detection | command
        config: configs/segmentation/linear_{arch}_voc12aug_40k.py
        metric: mIoU
        gpus: 8

Rows are every backbone x every experiment whose ``archs`` patterns match the backbone's
architecture. Strings may hold placeholders: ``{data_root}``, ``{work_dir}``, ``{root}`` (the
repository), ``{python}``, ``{arch}``, ``{backbone}``, ``{experiment}``, ``{row_dir}``,
``{source}``, ``{checkpoint}`` (the converted mmseg checkpoint), ``{gpus}`` and the suite's
``variables``.
"""
import fnmatch
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("segmentation", "detection", "command")
BUILTINS = ("data_root", "work_dir", "root", "python", "arch", "backbone", "experiment",
            "row_dir", "source", "checkpoint", "gpus")

SUITE_KEYS = {"name", "description", "variables", "backbones", "experiments", "paper_results"}
BACKBONE_KEYS = {"arch", "source", "pretrain", "paper", "label"}
PRETRAIN_KEYS = {"config", "overrides", "gpus", "nodes"}
EXPERIMENT_KEYS = {"task", "config", "command", "metric", "metrics", "gpus", "options",
                   "archs", "paper", "label", "resume"}


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

    experiments = {}
    for name, entry in raw["experiments"].items():
        where = f"experiments.{name}"
        _check_keys(path, where, entry, EXPERIMENT_KEYS)
        task = entry.get("task")
        if task not in TASKS:
            _fail(path, f"{where}.task must be one of {', '.join(TASKS)}, got {task!r}")
        if task == "command":
            if not entry.get("command") or not isinstance(entry["command"], list):
                _fail(path, f"{where}: a 'command' task needs 'command' as a list of arguments")
        elif not entry.get("config"):
            _fail(path, f"{where}: a {task} experiment needs 'config'")
        if not entry.get("metric"):
            _fail(path, f"{where} needs 'metric', the metrics.json entry shown first "
                        "(e.g. mIoU, bbox_AP)")
        experiments[str(name)] = Experiment(
            name=str(name), task=task, metric=str(entry["metric"]),
            config=str(entry["config"]) if entry.get("config") else None,
            command=_as_list(entry.get("command")) or None,
            metrics=_as_list(entry.get("metrics")),
            gpus=_positive_int(path, f"{where}.gpus", entry.get("gpus", 1)),
            options=_as_list(entry.get("options")), archs=_as_list(entry.get("archs")) or ["*"],
            paper=str(entry.get("paper", name)), label=str(entry.get("label", name)),
            resume=bool(entry.get("resume", True)))

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
        return [s for s in self.steps if s.kind == "experiment"]


def backbone_source(backbone: Backbone, work_dir: Path, values: dict[str, str],
                    where: str) -> str:
    if backbone.source is None:
        return str(work_dir / "pretrain" / backbone.name / "backbone.pth")
    source = fill(backbone.source, values, where)
    if source == "random" or source.startswith("random:"):
        return source
    return str(Path(source).expanduser().resolve())


def _experiment_argv(exp: Experiment, values: dict[str, str], gpus: int, where: str) -> list[str]:
    python = values["python"]
    options = [fill(o, values, f"{where}.options") for o in exp.options]
    if exp.task == "command":
        return [fill(a, values, f"{where}.command") for a in exp.command] + options
    config = fill(exp.config, values, f"{where}.config")
    if not (ROOT / config).is_file() and not Path(config).is_file():
        raise SuiteError(f"{where}.config: {config} does not exist (for arch {values['arch']}); "
                         "restrict the experiment with 'archs' or add the config")
    if exp.task == "segmentation":
        argv = [python, "tools/seg_train.py", config, "--checkpoint", values["checkpoint"],
                "--data-root", values["data_root"], "--work-dir", values["row_dir"]]
        if gpus > 1:
            argv += ["--launcher", "pytorch"]
        if exp.resume:
            argv += ["--resume"]
        return argv + options
    # detection: detectron2's own launcher starts one process per GPU (--num-gpus)
    argv = [python, "tools/det_train.py", "--num-gpus", str(max(gpus, 1)), "--config-file",
            config, "--backbone", values["source"], "--data-root", values["data_root"]]
    if exp.resume:
        argv += ["--resume"]
    argv += ["OUTPUT_DIR", values["row_dir"]]
    if gpus == 0:
        argv += ["MODEL.DEVICE", "cpu"]
    return argv + options


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
                      checkpoint="", gpus="")
        where = f"{suite.path}: backbones.{bb.name}"
        source = backbone_source(bb, work_dir, values, f"{where}.source")
        values["source"] = source
        needs = []
        if bb.pretrain is not None:
            folder = work_dir / "pretrain" / bb.name
            n = bb.pretrain["gpus"] if pretrain_gpus is None else pretrain_gpus
            config = fill(bb.pretrain["config"], values, f"{where}.pretrain.config")
            argv = [python, "tools/pretrain.py", "--config", config, "--output-dir", str(folder),
                    "--data-root", str(data_root), f"model.arch={bb.arch}"]
            argv += [fill(o, values, f"{where}.pretrain.overrides") for o in bb.pretrain["overrides"]]
            if n == 0:
                argv.append("run.device=cpu")
            steps.append(Step(f"pretrain:{bb.name}", "pretrain", bb, folder, argv,
                              folder / "backbone.pth", gpus=n, nodes=bb.pretrain["nodes"],
                              spawn="torchrun"))
            needs.append(f"pretrain:{bb.name}")
        rows = [e for e in suite.experiments.values() if e.applies_to(bb.arch)]
        checkpoint = work_dir / "checkpoints" / bb.name / "mmseg.pth"
        if any(e.task == "segmentation" for e in rows):
            argv = [python, "tools/convert.py", "--framework", "mmseg", "--arch", bb.arch,
                    "--source", source, "--out", str(checkpoint), "--quiet"]
            steps.append(Step(f"convert:{bb.name}", "convert", bb, checkpoint.parent, argv,
                              checkpoint, needs=list(needs), source=source))
        for exp in rows:
            row_dir = work_dir / "runs" / bb.name / exp.name
            n = exp.gpus if gpus is None else gpus
            row_values = dict(values, experiment=exp.name, row_dir=str(row_dir),
                              checkpoint=str(checkpoint), gpus=str(n))
            argv = _experiment_argv(exp, row_values, n, f"{suite.path}: experiments.{exp.name}")
            row_needs = list(needs) + ([f"convert:{bb.name}"] if exp.task == "segmentation" else [])
            steps.append(Step(f"{bb.name}/{exp.name}", "experiment", bb, row_dir, argv,
                              row_dir / "metrics.json", gpus=n,
                              spawn={"segmentation": "torchrun", "detection": "self"}.get(exp.task, "none"),
                              needs=row_needs, experiment=exp, source=source))
    if not any(s.kind == "experiment" for s in steps):
        raise SuiteError(f"{suite.path}: no experiment applies to any backbone (check 'archs')")
    return Plan(suite, work_dir, data_root, steps)


def select(plan: Plan, patterns: list[str]) -> list[Step]:
    """Steps whose id matches one of the glob ``patterns`` (all when none), plus what they
    need (pretraining and conversion of their backbone)."""
    if not patterns:
        return list(plan.steps)
    chosen = {s.id for s in plan.steps if any(fnmatch.fnmatchcase(s.id, p) for p in patterns)}
    if not chosen:
        known = ", ".join(s.id for s in plan.steps)
        raise SuiteError(f"--only {' '.join(patterns)} matches no step; steps: {known}")
    for step in plan.steps:
        if step.id in chosen:
            chosen.update(step.needs)
    return [s for s in plan.steps if s.id in chosen]
