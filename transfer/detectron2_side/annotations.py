"""A COCO annotation file is parsed when the dataset is registered, not in a data loader.

detectron2 registers COCO sets lazily: a file that does not parse fails when the first
loader is built, as a ``JSONDecodeError`` without the file's name. ``check_coco_annotations``
parses it at registration and names the file, the dataset and what was expected. Does not
import detectron2.
"""
import json
from pathlib import Path

COCO_KEYS = ("images", "annotations", "categories")


def check_coco_annotations(path: str | Path, name: str) -> dict[str, int]:
    """Parse ``path`` as COCO instances JSON; returns the count of each of ``COCO_KEYS``.
    Raises ``ValueError`` naming ``name`` and the file otherwise."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"dataset {name}: {path} does not parse as JSON ({exc}); expected "
                         "COCO instances annotations (images, annotations, categories)") from exc
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in COCO_KEYS):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"dataset {name}: {path} is JSON but not COCO instances annotations: "
                         f"expected the lists {', '.join(COCO_KEYS)}, found {found}")
    return {key: len(data[key]) for key in COCO_KEYS}
