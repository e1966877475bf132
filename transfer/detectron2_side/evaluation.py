"""Evaluators by dataset type, and their results flattened for metrics.json.

COCO sets report box (and mask) AP, AP50, AP75, APs/m/l and per-class AP (pycocotools through
detectron2's COCOEvaluator); VOC sets report AP50 / AP (mean over IoU 0.5:0.95) / AP75 with
the VOC2007 11-point metric for 2007 test (detectron2's PascalVOCDetectionEvaluator).
"""
import math
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator


def build_evaluator(cfg, dataset_name: str, output_folder: str | None = None):
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if kind == "coco":
        return COCOEvaluator(dataset_name, output_dir=output_folder)
    if kind == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    raise ValueError(f"dataset {dataset_name}: no evaluator for evaluator_type {kind!r} "
                     "(expected 'coco' or 'pascal_voc')")


def _number(value):
    value = float(value)
    return None if math.isnan(value) else round(value, 4)  # JSON has no NaN


def flatten_results(results: dict) -> dict:
    """``{"bbox": {"AP": .., "AP-cls": ..}, "segm": {..}}`` (one dataset) ->
    ``{"bbox_AP": .., "segm_AP": .., "per_class": {"bbox": {cls: AP}}}``."""
    metrics, per_class = {}, {}
    for task, values in results.items():
        for name, value in values.items():
            if name.startswith("AP-"):
                per_class.setdefault(task, {})[name[3:]] = _number(value)
            else:
                metrics[f"{task}_{name}"] = _number(value)
    if per_class:
        metrics["per_class"] = per_class
    return metrics


def metrics_from_results(results: dict, dataset_names) -> dict:
    """What ``DefaultTrainer.test`` returns -> metrics.json ``metrics``. It returns
    ``{task: {...}}`` for one test set (flattened here) and ``{dataset: {task: {...}}}`` for
    several (one flat dict per set, under its name)."""
    if not results:
        raise ValueError("no evaluation results (is DATASETS.TEST empty?)")
    if len(dataset_names) == 1:
        return flatten_results(results)
    return {name: flatten_results(results[name]) for name in dataset_names}
