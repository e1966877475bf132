"""metrics.json: the one file every transfer run writes and suites read. Writing one does not
import torch unless the GPUs have to be found (``gpus`` / ``gpu_type`` not given)."""
import json
import socket
from datetime import datetime, timezone
from pathlib import Path

from pretrain.common.files import write_json
from pretrain.common.provenance import git_sha

TASKS = ("semantic_segmentation", "detection", "instance_segmentation", "classification",
         "dense_retrieval")


def gpu_description() -> tuple[int, str]:
    import torch

    if not torch.cuda.is_available():
        return 0, "cpu"
    return torch.cuda.device_count(), torch.cuda.get_device_name(0)


def write_metrics(path: str | Path, *, task: str, dataset: str, protocol: str, config: str,
                  backbone: dict, metrics: dict, wall_s: float, gpus: int | None = None,
                  gpu_type: str | None = None, extra: dict | None = None,
                  settings: dict | None = None, reference: dict | None = None) -> Path:
    """Write ``metrics.json`` atomically and return its path. ``settings`` is the protocol
    fingerprint: the settings that move a number (total batch, processes, norm layer, crop,
    iterations, precision, seed, config hash, framework versions); ``reference`` the same keys
    as the protocol declares them (its config, or the tool's documented defaults). The tables
    mark every row whose settings differ from its reference."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if gpus is None or gpu_type is None:  # only then is torch imported, to look
        found_gpus, found_type = gpu_description()
        gpus = found_gpus if gpus is None else gpus
        gpu_type = found_type if gpu_type is None else gpu_type
    record = {
        "task": task, "dataset": dataset, "protocol": protocol, "config": str(config),
        "backbone": backbone, "metrics": metrics,
        "cost": {"wall_s": round(wall_s, 1), "gpus": gpus, "gpu_type": gpu_type,
                 "gpu_hours": round(wall_s * gpus / 3600, 3), "host": socket.gethostname()},
        "settings": dict(settings or {}),
        "reference_settings": dict(reference or {}),
        "git_sha": git_sha(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        record.update(extra)
    return write_json(path, record)


def read_metrics(path: str | Path) -> dict:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable metrics.json ({exc})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{path}: metrics.json holds a {type(record).__name__}, expected an "
                         "object with task, dataset, protocol, backbone and metrics")
    for key in ("task", "dataset", "protocol", "backbone", "metrics"):
        if key not in record:
            raise ValueError(f"{path}: metrics.json lacks the {key!r} entry")
    return record
