"""A backbone source -> the weights file a framework loads.

tools/seg_train.py and tools/det_train.py take ``--backbone SOURCE`` and call ``convert_into``:
one strict read of the source (``transfer.weights.read_backbone``) as the architecture their
config builds, then the framework's file written atomically into the run's own folder as
``backbone_<arch>.pth`` (mmseg: ``transfer.mmseg_side.checkpoint``) or ``backbone_<arch>.pkl``
(detectron2: ``transfer.detectron2_side.conversion``). tools/convert.py writes the same files
by hand (``write_converted``). The framework side is imported only when asked for: a
segmentation run never imports detectron2.
"""
from dataclasses import dataclass
from pathlib import Path

from transfer.weights import BackboneWeights, read_backbone

SUFFIXES = {"mmseg": ".pth", "detectron2": ".pkl"}


@dataclass
class Converted:
    weights: BackboneWeights  # what was read: the tensors the framework's model must hold
    path: Path  # the framework's file
    key_map: str  # one "source -> target" line per tensor, then a count line

    def report(self) -> str:
        """For the run's log: the coverage of the read, where it went, the key map."""
        return f"{self.weights.coverage()}\nconverted to {self.path}:\n{self.key_map}"


def write_converted(weights: BackboneWeights, framework: str, out: str | Path) -> str:
    """Write ``weights`` as ``framework``'s file at ``out`` (atomically); returns the key map
    as text."""
    if framework == "mmseg":
        from transfer.mmseg_side.checkpoint import format_key_map, write_checkpoint

        return format_key_map(write_checkpoint(out, weights))
    from transfer.detectron2_side.conversion import convert_backbone, format_key_map, write_pkl

    model_dict, key_map = convert_backbone(weights)
    write_pkl(out, model_dict, weights.info())
    return format_key_map(key_map)


def convert_into(source: str, arch: str, folder: str | Path, framework: str) -> Converted:
    """Read ``source`` once, strictly, as ``arch`` and write ``framework``'s file into
    ``folder``. Under several processes each writes the same bytes atomically: no ordering
    between them is needed. ``ValueError`` / ``OSError`` name the source before anything is
    written."""
    weights = read_backbone(source, arch)
    path = Path(folder) / f"backbone_{arch}{SUFFIXES[framework]}"
    return Converted(weights, path, write_converted(weights, framework, path))
