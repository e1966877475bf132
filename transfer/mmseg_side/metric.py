"""``PerClassIoUMetric``: mmseg's ``IoUMetric`` that also keeps the per-class numbers.

mmseg's ``IoUMetric`` prints the per-class table to the log and returns only the means. This
subclass computes the same table and keeps it in ``self.per_class`` ({class: {"IoU", "Acc"}},
percent; IoU is ``None`` for a class absent from both ground truth and prediction, Acc for a
class absent from the ground truth), with the means in ``self.summary``, for metrics.json.
The returned dict is unchanged (aAcc, mIoU, mAcc), so logs and checkpoints stay mmseg's.
Only the main process computes metrics, so ``per_class`` is set there only.
"""
import math

from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.per_class: dict[str, dict[str, float | None]] = {}
        self.summary: dict[str, float] = {}
        self.evaluated = False  # set on every process, unlike the tables

    def process(self, data_batch, data_samples) -> None:
        """Refuse label values outside the classes that are not the ignore index: mmseg's
        histogram drops them silently, which would shrink every union (a wrong mIoU)."""
        num_classes = len(self.dataset_meta["classes"])
        for sample in data_samples:
            check_label_values(sample["gt_sem_seg"]["data"], num_classes, self.ignore_index,
                               sample.get("seg_map_path", "a label map"))
        super().process(data_batch, data_samples)

    def evaluate(self, size: int) -> dict:
        metrics = super().evaluate(size)
        self.evaluated = True
        return metrics

    def compute_metrics(self, results: list) -> dict:
        metrics = super().compute_metrics(results)
        if self.format_only:
            return metrics
        intersect, union, pred, label = (sum(column) for column in zip(*results))
        per_metric = self.total_area_to_metrics(intersect, union, pred, label, self.metrics,
                                                self.nan_to_num, self.beta)
        per_metric.pop("aAcc", None)
        names = self.dataset_meta["classes"]
        self.per_class = {
            name: {key: _percent(values[i]) for key, values in per_metric.items()}
            for i, name in enumerate(names)}
        self.summary = dict(metrics)
        return metrics


def _percent(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value * 100, 2)


def check_label_values(label, num_classes: int, ignore_index: int, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` when ``label`` (a tensor of class indices, after
    the dataset's own reduction) holds values outside ``0..num_classes-1`` other than
    ``ignore_index``, with the values and their pixel count."""
    import torch

    bad = (label != ignore_index) & ((label < 0) | (label >= num_classes))
    if bool(bad.any()):
        values = torch.unique(label[bad]).tolist()
        raise ValueError(f"{source}: {int(bad.sum())} pixels with label values {values[:10]} "
                         f"outside the {num_classes} classes (0..{num_classes - 1}) and not the "
                         f"ignore index {ignore_index}; fix the label map (the dataset "
                         "preparation tools in tools/prepare/ write valid ones)")
