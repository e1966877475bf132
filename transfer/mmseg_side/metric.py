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
