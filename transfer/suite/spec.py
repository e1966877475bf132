"""Suites: which backbones meet which transfer experiments (``configs/suites/*.yaml``).

This module reads and checks a suite file (``load_suite``); ``plan.py`` expands it into the
steps to run. No framework is imported here.

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
        recalibrate_bn: {images: 800, image_size: 224}  # optional: BN statistics recomputed
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
``{source}`` (the backbone's source, what every experiment is given as ``--backbone``),
``{gpus}``, ``{seed}`` (the step's seed; 0 when the experiment has no ``seeds``) and the
suite's ``variables``. A suite names sources only: a tool that needs a framework's file
converts the source itself (``{checkpoint}``, the converted mmseg file of former versions, is
an error naming the file).

``seeds: N`` (N > 1) makes N steps of a row, ``<backbone>/<experiment>/seed<k>`` for k = 0..N-1,
each in ``<row folder>/seed<k>`` and given its seed (``--seed k``, detectron2's ``SEED k``);
without it (or N = 1) a row is one step that passes no seed (the tool's default).
"""
import fnmatch
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pretrain.common.yaml_files import read_yaml_mapping

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("segmentation", "detection", "classification", "dense_retrieval", "command")
CLASSIFICATION_PROTOCOLS = ("knn", "linear")
BUILTINS = ("data_root", "work_dir", "root", "python", "arch", "backbone", "experiment",
            "row_dir", "source", "gpus", "seed")
# Placeholders of former versions and what replaced them: an old suite file fails saying so,
# rather than with "unknown placeholder" alone
RETIRED = {"checkpoint": "the converted mmseg checkpoint of the former 'convert' step is gone: "
                         "experiments are given their backbone's source (tools/seg_train.py "
                         "--backbone {source}) and convert it themselves; use {source}"}

SUITE_KEYS = {"name", "description", "variables", "backbones", "experiments", "paper_results"}
BACKBONE_KEYS = {"arch", "source", "pretrain", "paper", "label", "recalibrate_bn"}
PRETRAIN_KEYS = {"config", "overrides", "gpus", "nodes"}
# tools/recalibrate_bn.py's options (values may hold placeholders), and its step's GPU count
RECALIBRATE_KEYS = {"images", "image_size", "resize", "dataset", "batch_size", "seed", "gpus"}
EXPERIMENT_KEYS = {"task", "config", "command", "metric", "metrics", "gpus", "options",
                   "archs", "paper", "label", "resume", "protocol", "seeds"}

# Suite, backbone and experiment names become folders (work_dirs/suites/<suite>,
# <work dir>/pretrain/<backbone>, <work dir>/runs/<backbone>/<experiment>) and step ids that
# --only matches as globs: one path component of plain characters, never '/', '..' or '*'
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = ("1 to 64 letters, digits, '.', '_' or '-', starting with a letter or a digit "
             "(a name is a folder of the work dir: no '/', no '..', no absolute path)")


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
    # recalibrate_bn: tools/recalibrate_bn.py's options as strings (placeholders unfilled)
    # and "gpus" (int); None: the evaluations read the source as it is
    recalibrate_bn: dict | None = None


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


def placeholders(text: str, where: str) -> list[str]:
    """The ``{name}`` placeholders of the suite string ``text``. ``SuiteError`` naming
    ``where`` for a lone brace, a format spec or conversion (``{seed:>4}``, ``{arch!r}``), an
    attribute or index (``{arch.upper}``), or an empty ``{}``: str.format would fail with a
    traceback, or pad, convert or look up silently. ``{{`` and ``}}`` are literal braces."""
    expected = ("expected {name} placeholders only (no format spec, conversion, attribute or "
                "index); write {{ and }} for literal braces")
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise SuiteError(f"{where}: {text!r}: {exc}; {expected}") from None
    names = []
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise SuiteError(f"{where}: {text!r}: placeholder {{{shown}}}: {expected}")
        names.append(name)
    return names


def _check_strings(path, where: str, texts, known: set[str]) -> None:
    """Every placeholder of ``texts`` well formed and known (a built-in or a variable)."""
    for text in texts:
        unknown = sorted({n for n in placeholders(text, f"{path}: {where}") if n not in known})
        for name in unknown:
            if name in RETIRED:
                _fail(path, f"{where}: {{{name}}} in {text!r}: {RETIRED[name]}")
        if unknown:
            _fail(path, f"{where}: unknown placeholder(s) "
                        f"{', '.join('{' + n + '}' for n in unknown)} in {text!r}; known here: "
                        f"{', '.join(sorted(known))}")


def _check_variable(path, where: str, value: str) -> None:
    """Variables are substituted as written: a brace in one would reach the command line as
    is (``{other}`` not filled), so none is allowed."""
    if "{" in value or "}" in value:
        _fail(path, f"{where} = {value!r}: expected a plain value; variables are substituted "
                    "as written, placeholders inside them are not filled (use the placeholder "
                    "in the string that uses the variable)")


def _check_keys(path, where: str, entry, allowed: set[str]) -> dict:
    if not isinstance(entry, dict):
        _fail(path, f"{where} must be a mapping, got {type(entry).__name__}")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        _fail(path, f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                    f"{', '.join(sorted(allowed))}")
    return entry


def _check_name(path, where: str, name) -> str:
    """``name`` (a YAML key or value) as a folder name, or a ``SuiteError`` naming ``where``."""
    text = str(name)
    if isinstance(name, bool) or not isinstance(name, (str, int)) or not NAME.fullmatch(text):
        shown = text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"
        _fail(path, f"{where} {shown!r} is not a usable name; expected {NAME_RULE}")
    return text


def _check_unique(path, section: str, names) -> None:
    """Names of one section must differ in more than letter case: on a case-insensitive file
    system (macOS, Windows shares) two of them would share one folder."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.lower(), name)
        if other != name:
            _fail(path, f"{section}.{other} and {section}.{name} differ only in letter case; "
                        "they would share one folder on a case-insensitive file system: "
                        "rename one")


def _duplicate_keys(path) -> list[str]:
    """Keys written twice in one mapping of the YAML file (YAML keeps the last silently, so a
    copied entry replaced the first one without a word)."""
    try:
        root = yaml.compose(path.read_text())
    except (OSError, yaml.YAMLError):
        return []  # read_yaml_mapping reports it
    found, nodes = [], [root]
    while nodes:
        node = nodes.pop()
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        found.append(f"{key.value!r} (line {key.start_mark.line + 1})")
                    seen.add(key.value)
                nodes.append(value)
        elif isinstance(node, yaml.SequenceNode):
            nodes.extend(node.value)
    return found


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


def _recalibrate_bn(path, where: str, entry) -> dict | None:
    """A backbone's ``recalibrate_bn:`` (its BatchNorm statistics recomputed on clean
    training images before any evaluation, tools/recalibrate_bn.py), checked."""
    if entry is None:
        return None
    entry = _check_keys(path, f"{where}.recalibrate_bn", entry, RECALIBRATE_KEYS)
    options = {k: str(v) for k, v in entry.items() if k != "gpus"}
    options["gpus"] = _positive_int(path, f"{where}.recalibrate_bn.gpus", entry.get("gpus", 1))
    return options


def load_suite(path: str | Path, variables: dict[str, str] | None = None) -> Suite:
    """Read and check a suite file; ``variables`` (from ``--set``) override its defaults."""
    path = Path(path)
    try:
        raw = read_yaml_mapping(path, "suite file", "configs/suites/",
                                "name, backbones, experiments, ...")
    except (OSError, ValueError, TypeError) as exc:
        raise SuiteError(str(exc)) from exc
    _check_keys(path, "the suite", raw, SUITE_KEYS)
    for key in ("backbones", "experiments"):
        if not isinstance(raw.get(key), dict) or not raw[key]:
            _fail(path, f"needs a non-empty '{key}' mapping")
    duplicates = _duplicate_keys(path)
    if duplicates:
        _fail(path, f"key(s) written twice in one mapping: {', '.join(duplicates)}; YAML would "
                    "keep only the last one")
    suite_name = _check_name(path, "name" if "name" in raw else
                             "the suite's name (its file name; set 'name:')",
                             raw.get("name", path.stem))
    for key in ("backbones", "experiments"):
        _check_unique(path, key, [_check_name(path, f"{key}:", n) for n in raw[key]])

    defaults = {str(k): str(v) for k, v in (raw.get("variables") or {}).items()}
    for key, value in defaults.items():
        _check_variable(path, f"variables.{key}", value)
    for key, value in (variables or {}).items():
        if key not in defaults:
            _fail(path, f"--set {key}=...: the suite has no variable {key!r}; its variables: "
                        f"{', '.join(sorted(defaults)) or 'none'}")
        _check_variable(path, f"--set {key}", value)
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
            paper=_as_list(entry.get("paper")), label=str(entry.get("label", name)),
            recalibrate_bn=_recalibrate_bn(path, where, entry.get("recalibrate_bn")))

    experiments = {str(name): _load_experiment(path, str(name), entry)
                   for name, entry in raw["experiments"].items()}
    known = set(BUILTINS) | set(defaults)
    for bb in backbones.values():
        pretrain = bb.pretrain or {"config": "", "overrides": []}
        _check_strings(path, f"backbones.{bb.name}",
                       [bb.source or "", pretrain["config"], *pretrain["overrides"]], known)
    for exp in experiments.values():
        _check_strings(path, f"experiments.{exp.name}",
                       [exp.config or "", *(exp.command or []), *exp.options], known)

    paper = Path(str(raw.get("paper_results", "configs/suites/paper_results.yaml")))
    return Suite(name=suite_name, path=path,
                 description=str(raw.get("description", "")).strip(), variables=defaults,
                 backbones=backbones, experiments=experiments,
                 paper_results=paper if paper.is_absolute() else ROOT / paper)
