"""mmengine's Runner with safe checkpoint loading, the run marker, and metrics.json.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 does not pass
``weights_only``: its own checkpoints (the message hub's numpy values, the scheduler state)
then fail to load. ``SegRunner`` does not turn ``weights_only`` off. It allow-lists exactly
the callables mmengine's checkpoints need (``MMENGINE_CHECKPOINT_GLOBALS``), and only for a
file directly inside a work dir that tools/seg_train.py created (the folder itself holds
``seg_run.json``; an ancestor's marker trusts nothing): resuming a run from its own work dir,
or testing a checkpoint beside its run's marker. Any other file loads with plain
``weights_only``; when that fails the error says why and what to do.

``load_from`` (tools/seg_test.py) loads strictly: a checkpoint that does not fit the model is
an error, not a log line.
"""
import pickle
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import Runner
from mmengine.runner.checkpoint import find_latest_checkpoint

from pretrain.common.files import write_json
from pretrain.common.provenance import git_sha
from transfer.metrics import write_metrics

RUN_MARKER = "seg_run.json"


def _numpy_globals() -> list:
    """numpy's pickle entry points for arrays, scalars and dtypes (module moved in numpy 2)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    # dtype objects are rebuilt through their class (Float64DType, ...): the numeric ones
    # the message hub may log.
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64,
                                           np.int32, np.uint8, np.bool_)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


# mmengine pickles HistoryBuffer's statistic methods (``__getstate__`` saves its
# ``_statistics_methods``) as ``getattr(HistoryBuffer, "min")``: pickle's form for a method.
HISTORY_BUFFER_STATISTICS = ("min", "max", "current", "mean")


def history_buffer_statistic(owner, name):
    """What the checkpoints' ``builtins.getattr`` is mapped to: HistoryBuffer's own statistic
    methods and nothing else. The real ``getattr`` would hand a crafted file any attribute
    (``getattr.__self__`` is the builtins module, so ``eval``; a function's ``__globals__``),
    and mmengine calls what it unpickled (``copy.deepcopy`` of the message hub's runtime info
    calls an instance's ``__reduce_ex__``)."""
    if owner is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    what = "getattr" if owner is history_buffer_statistic else getattr(
        owner, "__qualname__", type(owner).__name__)
    raise pickle.UnpicklingError(
        f"refusing getattr({what}, {name!r}) (weights_only allow-list of mmengine "
        f"checkpoints): only HistoryBuffer's {', '.join(HISTORY_BUFFER_STATISTICS)} methods are "
        "expected")


# What mmengine 0.10.7's checkpoints pickle besides tensors and containers (found with
# ``torch.serialization.get_unsafe_globals_in_checkpoint`` on seg_train checkpoints): numpy
# arrays, scalars and dtypes of the message hub, its HistoryBuffer, and ``builtins.getattr``
# in torch's ``(callable, name)`` form, mapped to ``history_buffer_statistic``. The
# weights-only unpickler refuses to call or build anything outside this list.
MMENGINE_CHECKPOINT_GLOBALS = [*_numpy_globals(), HistoryBuffer,
                               (history_buffer_statistic, "builtins.getattr")]


def is_run_file(path: str | Path, folder: str | Path) -> bool:
    """``path`` is a file directly in ``folder`` (symlinks resolved), not in a sub-folder."""
    return Path(path).resolve().parent == Path(folder).resolve()


def run_dir_of(path: str | Path) -> Path | None:
    """The seg_train work dir holding ``path``: its own folder, when that folder holds the
    marker. An ancestor's marker does not count: anything may lie in a work dir's sub-folders
    (the test folders, a copied file)."""
    folder = Path(path).resolve().parent
    return folder if (folder / RUN_MARKER).is_file() else None


@contextmanager
def checkpoint_trust(path: str | Path, trusted_dir: str | Path | None):
    """Allow mmengine's checkpoint globals while loading ``path`` iff it lies directly in
    ``trusted_dir`` and that folder is a seg_train work dir; explain a weights_only refusal."""
    trusted = (trusted_dir is not None and (Path(trusted_dir) / RUN_MARKER).is_file()
               and is_run_file(path, trusted_dir))
    allow = torch.serialization.safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
    try:
        with allow if trusted else nullcontext():
            yield trusted
    except Exception as exc:  # noqa: BLE001 - only the weights_only refusal is re-worded
        if trusted or "weights_only" not in str(exc):
            raise
        raise RuntimeError(
            f"{path} was refused by torch.load(weights_only=True): it pickles objects other "
            f"than tensors. mmengine checkpoints are trusted only inside a work dir written by "
            f"tools/seg_train.py (the file's own folder holds {RUN_MARKER}); this one is not. If you made this "
            f"file, load it from its run's work dir.\n{type(exc).__name__}: {exc}") from exc


def check_trained_checkpoint(path: str | Path, trusted_dir: str | Path | None) -> dict:
    """Read an mmengine checkpoint (``iter_N.pth``) under the policy above, before any model
    is built, and check that it holds a ``state_dict``; errors name the file and what was
    expected. Returns the loaded checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; expected an iter_N.pth "
                                "written by tools/seg_train.py")
    try:
        with checkpoint_trust(path, trusted_dir):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file and the expectation
        raise ValueError(f"{path}: cannot be read as an mmengine checkpoint of "
                         f"tools/seg_train.py ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), dict)
                                            for k in ("meta", "state_dict")):
        raise ValueError(f"{path}: expected an mmengine checkpoint (a dict with 'meta' and "
                         f"'state_dict'), got {type(raw).__name__}"
                         + (f" with keys {sorted(raw)[:6]}" if isinstance(raw, dict) else ""))
    return raw


class SegRunner(Runner):
    """``Runner`` whose checkpoint loading follows the policy of the module docstring.

    ``trusted_dir``: where mmengine's own checkpoints may be unpickled with the allow-list
    (default: this run's work dir). ``pretrained``: the ``transfer.conversion.Converted`` the
    backbone's ``Pretrained`` init loads, set by tools/seg_train.py; ``VerifyPretrainedHook``
    checks the backbone holds its weights."""

    trusted_dir: str | None = None
    pretrained = None

    def load_or_resume(self) -> None:
        if self._has_loaded:
            return
        trusted_dir = self.trusted_dir or self.work_dir
        if self._resume:
            path = self._load_from or find_latest_checkpoint(self.work_dir)
            if path is None:
                self.logger.info(f"resume: no checkpoint in {self.work_dir} yet; "
                                 "starting at iteration 0")
                return
            with checkpoint_trust(path, trusted_dir):
                self.resume(path)
        elif self._load_from is not None:
            with checkpoint_trust(self._load_from, trusted_dir):
                try:
                    self.load_checkpoint(self._load_from, strict=True)
                except RuntimeError as exc:  # strict key check: name the file
                    raise RuntimeError(f"{self._load_from} does not fit the config's model "
                                       f"(another architecture?): {exc}") from exc
        else:
            return
        self._has_loaded = True


def write_run_marker(work_dir: str | Path, record: dict) -> Path:
    """``seg_run.json``: what this work dir holds (config, backbone, data)."""
    record = dict(record, git_sha=git_sha(),
                  started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return write_json(Path(work_dir) / RUN_MARKER, record)


def metrics_record(metric) -> tuple[dict, dict]:
    """A ``PerClassIoUMetric`` after evaluation -> (the ``metrics`` entry of metrics.json:
    aAcc, mIoU, mAcc and ``per_class`` IoU; the per-class accuracy, kept beside it)."""
    if not metric.per_class:
        raise RuntimeError("the evaluator holds no results: no evaluation ran on this process")
    summary = {k: float(v) for k, v in metric.summary.items()}
    iou = {name: values.get("IoU") for name, values in metric.per_class.items()}
    acc = {name: values.get("Acc") for name, values in metric.per_class.items()}
    return {**summary, "per_class": iou}, acc


def find_metric(evaluator):
    from .metric import PerClassIoUMetric

    for metric in evaluator.metrics:
        if isinstance(metric, PerClassIoUMetric):
            return metric
    raise RuntimeError("the evaluator has no PerClassIoUMetric: set val_evaluator / "
                       "test_evaluator type='PerClassIoUMetric' (configs/segmentation/_base_)")


def _norm_type(cfg) -> str:
    """The trainable norm layers' type (the head's ``norm_cfg``). mmengine turns SyncBN into BN
    without a distributed launcher, i.e. with one process, whose BN then normalises over the
    whole batch: what SyncBN computes. So SyncBN stays SyncBN in the fingerprint; a config
    edited to BN with several processes normalises per process and reads BN."""
    node = cfg.model.decode_head.get("norm_cfg") or cfg.get("norm_cfg") or {}
    return node.get("type", "none")


def _precision(cfg) -> str:
    wrapper = cfg.optim_wrapper
    if wrapper.get("type") == "AmpOptimWrapper":
        return str(wrapper.get("dtype") or "fp16").replace("float16", "fp16")
    return "fp32"


def seg_settings(cfg, config_path: str | Path, world: int) -> dict:
    """The run's protocol fingerprint (transfer/fingerprint.py): what moves a segmentation
    number, as this run had it after every command-line override."""
    from transfer.fingerprint import config_sha256, framework_versions

    randomness = cfg.get("randomness") or {}
    return {
        "total_batch": cfg.train_dataloader.batch_size * world, "processes": world,
        "gpus": world if torch.cuda.is_available() else 0,
        "norm": _norm_type(cfg), "crop": list(cfg.crop_size),
        "test_mode": cfg.model.test_cfg.get("mode", "whole"),
        "iterations": cfg.train_cfg.max_iters, "precision": _precision(cfg),
        "lr": cfg.optim_wrapper.optimizer.lr, "seed": randomness.get("seed"),
        "deterministic": bool(randomness.get("deterministic", False)),
        "config_sha256": config_sha256(config_path),
        "frameworks": framework_versions(("torch", "torchvision", "mmcv", "mmengine", "mmseg")),
    }


def seg_reference(cfg, config_path: str | Path) -> dict:
    """The protocol's declared settings: the config's ``reference_settings`` (crop as a list,
    as the settings have it)."""
    declared = cfg.get("reference_settings")
    if not declared:
        raise ValueError(f"{config_path} declares no reference_settings = dict(...): every "
                         "protocol config names the settings its numbers were made with "
                         "(docs/suites.md, 'Protocol fingerprints')")
    reference = dict(declared)
    if "crop" in reference:
        reference["crop"] = list(reference["crop"])
    return reference


def write_seg_metrics(work_dir: str | Path, cfg, config_path: str, backbone: dict,
                      metrics: dict, wall_s: float, world: int, extra: dict | None = None) -> Path:
    """metrics.json of a segmentation run, with its settings and the protocol's reference."""
    gpus = world if torch.cuda.is_available() else 0
    return write_metrics(Path(work_dir) / "metrics.json", task="semantic_segmentation",
                         dataset=cfg.dataset_name, protocol=cfg.protocol, config=config_path,
                         backbone=backbone, metrics=metrics, wall_s=wall_s, gpus=gpus,
                         extra=extra, settings=seg_settings(cfg, config_path, world),
                         reference=seg_reference(cfg, config_path))
