"""tools/make_table.py on recorded metrics.json files: the paper column, the difference, the
status of rows that did not finish, deviations from the protocol, seeded rows, and the outputs
(Markdown, CSV, LaTeX, table.png, plot.png, tradeoff.png)."""
import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from transfer.suite.plots import table_picture, tradeoff_points
from transfer.suite.tables import (TableRow, build_rows, deviation_notes, load_paper, make_tables,
                                   metric_value, summary_table)

ROOT = Path(__file__).resolve().parent.parent

# Recorded by the real tools on the CPU (synthetic data, a few iterations; per-class tables
# shortened): tools/seg_train.py on linear_convnext_small_voc12aug_40k (convnext_mini, random
# init) and tools/det_train.py on faster_rcnn_resnet50_c4_voc0712_24k (resnet18, 3 iterations).
RECORDED_SEG = {
    "task": "semantic_segmentation", "dataset": "voc12aug", "protocol": "linear_frozen",
    "config": "configs/segmentation/linear_convnext_small_voc12aug_40k.py",
    "backbone": {"arch": "convnext_mini", "source": "random:0", "kind": "random",
                 "sha256": "7399aa5493a54697ed287760aca184c00973b59c7c9563560d87d20be509fcdd"},
    "metrics": {"aAcc": 66.76, "mIoU": 4.71, "mAcc": 11.08,
                "per_class": {"background": 67.99, "aeroplane": 1.95, "cow": None}},
    "cost": {"wall_s": 9.1, "gpus": 0, "gpu_type": "cpu", "gpu_hours": 0.0, "host": "vm"},
    "git_sha": "acabb823d19d5fbc1fd40d3b3ac512a7ccb8cccf+dirty",
    "finished_at": "2026-11-26T12:20:07+00:00", "iterations": 100, "total_batch": 8,
    # the protocol fingerprint as tools/seg_train.py writes it (transfer/fingerprint.py), with
    # this run's values; the reference is the config's reference_settings
    "settings": {"total_batch": 8, "processes": 1, "gpus": 0, "norm": "SyncBN", "crop": [64, 64],
                 "test_mode": "slide", "iterations": 100, "precision": "fp32", "lr": 0.003,
                 "seed": 0, "deterministic": False, "config_sha256": "0" * 64,
                 "frameworks": {"torch": "2.9.1", "mmseg": "1.2.2"}},
    "reference_settings": {"total_batch": 16, "norm": "SyncBN", "crop": [512, 512],
                           "test_mode": "slide", "iterations": 40000, "precision": "fp32",
                           "lr": 0.0001}}
SEG_DEVIATES = ("total batch 8, protocol 16; crop 64x64, protocol 512x512; iterations 100, "
                "protocol 40000; lr 0.003, protocol 0.0001")
RECORDED_DET = {
    "task": "detection", "dataset": "voc07+12", "protocol": "finetune_c4_24k",
    "config": "configs/detection/faster_rcnn_resnet50_c4_voc0712_24k.yaml",
    "backbone": {"arch": "resnet18", "source": "/tmp/h5/ck/resnet18.pth", "kind": "ours-export",
                 "sha256": "56f88cc96ac721c780ec45b9db26e4a2813248c6fee9be8beb9389e39e885595"},
    "metrics": {"bbox_AP": 0.1602, "bbox_AP50": 0.6442, "bbox_AP75": 0.0},
    "cost": {"wall_s": 74.1, "gpus": 0, "gpu_type": "cpu", "gpu_hours": 0.0, "host": "vm"},
    "git_sha": "79f03b0375a88f6b82b7fa918849dd5ef9a12b69+dirty",
    "finished_at": "2026-11-26T12:28:44+00:00", "max_iter": 3, "ims_per_batch": 2,
    "eval_only": False, "test_sets": ["synthetic_voc_2007_test"],
    "settings": {"total_batch": 2, "processes": 1, "gpus": 0, "norm": "SyncBN",
                 "iterations": 3, "precision": "fp32", "lr": 0.02, "seed": -1},
    "reference_settings": {"total_batch": 16, "norm": "SyncBN", "precision": "fp32", "lr": 0.02,
                           "iterations": 24000}}
DET_DEVIATES = "total batch 2, protocol 16; iterations 3, protocol 24000"

SUITE = textwrap.dedent('''
    name: recorded
    backbones:
      official_r50: {arch: resnet50, source: "random:1", paper: [resnet50_alpha0.75, vicregl_resnet50], label: official R50 a=0.75}
      random_r50: {arch: resnet50, source: "random:0", label: random R50}
      supervised_r50: {arch: resnet50, source: "random:2", paper: supervised_resnet50, label: supervised_r50}
    experiments:
      voc12aug_linear: {task: segmentation, config: "configs/segmentation/linear_{arch}_voc12aug_40k.py", metric: mIoU, metrics: [mAcc], label: VOC linear}
      voc0712_faster_rcnn_c4: {task: detection, config: "configs/detection/faster_rcnn_{arch}_c4_voc0712_24k.yaml", metric: bbox_AP, metrics: [bbox_AP50], label: VOC07+12 det}
''')


def tool(name, *args, check=0):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / name), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == check, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A suite's work dir as the runner leaves it: four rows with their metrics.json, one
    failed row (status file, no metrics) and one never run."""
    tmp = tmp_path_factory.mktemp("table")
    suite = tmp / "suite.yaml"
    suite.write_text(SUITE)
    work = tmp / "work"
    runs = work / "runs"
    seg = dict(RECORDED_SEG, metrics=dict(RECORDED_SEG["metrics"], mIoU=56.4, mAcc=70.2))
    for row, record in {"official_r50/voc12aug_linear": seg,
                        "official_r50/voc0712_faster_rcnn_c4": RECORDED_DET,
                        "random_r50/voc12aug_linear": RECORDED_SEG,
                        "supervised_r50/voc0712_faster_rcnn_c4": dict(
                            RECORDED_DET, metrics={"bbox_AP": 52.96, "bbox_AP50": 81.3})}.items():
        (runs / row).mkdir(parents=True)
        (runs / row / "metrics.json").write_text(json.dumps(record))
    failed = runs / "random_r50/voc0712_faster_rcnn_c4"
    failed.mkdir(parents=True)
    (failed / "suite_status.json").write_text(json.dumps(
        {"state": "failed", "returncode": 1, "log": str(failed / "suite.log")}))
    tool("run_suite.py", suite, "--work-dir", work, "--collect-only", "--no-tables")
    return tmp, work


@pytest.mark.slow
def test_results_json_collects_every_row(recorded):
    _, work = recorded
    results = json.loads((work / "results.json").read_text())
    states = {r["id"]: r["status"] for r in results["rows"]}
    assert states == {"official_r50/voc12aug_linear": "finished",
                      "official_r50/voc0712_faster_rcnn_c4": "finished",
                      "random_r50/voc12aug_linear": "finished",
                      "random_r50/voc0712_faster_rcnn_c4": "failed",
                      "supervised_r50/voc12aug_linear": "pending",
                      "supervised_r50/voc0712_faster_rcnn_c4": "finished"}
    row = next(r for r in results["rows"] if r["id"] == "official_r50/voc12aug_linear")
    assert "per_class" not in row["metrics"] and row["metrics"]["mIoU"] == 56.4
    assert row["cost"]["gpu_type"] == "cpu" and row["paper_experiment"] == "voc12aug_linear"


def test_tables_from_recorded_metrics(recorded):
    tmp, work = recorded
    out = tool("make_table.py", work, "--out-dir", tmp / "tables").stdout
    md = (tmp / "tables" / "table.md").read_text()
    assert out.startswith("# Results: recorded")
    # main comparison: ours (paper, difference); the paper number of the model compared with
    # † marks the rows whose settings deviate from the protocol's; the notes say how
    assert "| official R50 a=0.75 | 56.4† (paper 55.9, +0.5) | 0.2† (paper 59.5, -59.3) |" in md
    assert "| random R50 | 4.7† | failed |" in md
    assert "| supervised_r50 | pending | 53.0† (paper 53.5, -0.5) |" in md
    # one note per column, its rows named (the pending / failed row has no settings to compare)
    assert ("- † VOC linear, 2 of 3 rows (official R50 a=0.75, random R50): total batch 8 "
            "(protocol 16); crop 64x64 (protocol 512x512); iterations 100 (protocol 40000); "
            "lr 0.003 (protocol 0.0001)\n") in md
    assert ("- † VOC07+12 det, 2 of 3 rows (official R50 a=0.75, supervised_r50): total batch 2 "
            "(protocol 16); iterations 3 (protocol 24000)\n") in md
    assert md.count("- † ") == 2
    # all rows: the failed one names its log; cost columns
    log = work / "runs/random_r50/voc0712_faster_rcnn_c4/suite.log"
    assert f"| random R50 | VOC07+12 det | bbox_AP | - | - | - | - | failed: return code 1, log {log} |" in md
    assert ("| official R50 a=0.75 | VOC07+12 det | bbox_AP50 | 0.6 | - | - | - | finished | 1m14s "
            f"| 0 | 0.00 | cpu | {DET_DEVIATES} |") in md
    # every paper number shown is cited
    assert "- resnet50_alpha0.75 / voc12aug_linear / mIoU = 55.9: [official]" in md
    assert "- supervised_resnet50 / voc0712_faster_rcnn_c4 / bbox_AP50 = 81.3: [protocols]" in md

    rows = list(csv.DictReader((tmp / "tables" / "table.csv").open()))
    assert len(rows) == 6 * 2  # six rows, two metrics each
    official = next(r for r in rows if r["backbone"] == "official_r50" and r["metric"] == "mIoU")
    assert (float(official["ours"]), float(official["paper"])) == (56.4, 55.9)
    assert float(official["delta"]) == pytest.approx(0.5)
    assert official["paper_model"] == "resnet50_alpha0.75" and official["main"] == "True"
    assert official["deviates"] == SEG_DEVIATES and official["task"] == "segmentation"
    assert (official["std"], official["n"], official["seeds_planned"]) == ("", "1", "1")
    failed = next(r for r in rows if r["backbone"] == "random_r50" and r["metric"] == "bbox_AP")
    assert failed["ours"] == "" and failed["status"] == "failed"

    tex = (tmp / "tables" / "table.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and "\\bottomrule" in tex
    assert "supervised\\_r50 & VOC07+12 det & bbox\\_AP & 53.0 & 53.5 & -0.5" in tex
    assert tex.count("\\\\\n") == 1 + 12  # header + rows
    assert "total batch 2, protocol 16; iterations 3, protocol 24000 \\\\" in tex

    import matplotlib.image

    # the main comparison (cropped to its 4 rows and 2 notes); bars per experiment
    for name, least in (("table.png", 250), ("plot.png", 400)):
        assert (tmp / "tables" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(tmp / "tables" / name).shape
        assert width > 600 and height > least, name
    assert _blank_band(tmp / "tables" / "table.png") < 40
    # no classification rows: no trade-off plot, and the output says why
    assert "tradeoff.png not drawn: no classification rows" in out
    assert not (tmp / "tables" / "tradeoff.png").exists()


def test_references_add_the_papers_other_models(recorded):
    tmp, work = recorded
    tool("make_table.py", work, "--out-dir", tmp / "ref", "--references", "--no-plot")
    md = (tmp / "ref" / "table.md").read_text()
    assert "| mocov2_resnet50 (paper) | VOC07+12 det | bbox_AP | - | 57.4 | - | mocov2_resnet50 | reference |" in md
    assert not any((tmp / "ref").glob("*.png"))


def test_bad_paper_file_is_named(recorded, tmp_path):
    _, work = recorded
    bad = tmp_path / "paper.yaml"
    bad.write_text("models: {m: x}\nresults:\n  - {model: m, experiment: e, metric: mIoU, value: 1.0}\n")
    proc = tool("make_table.py", work, "--paper", bad, "--out-dir", tmp_path, check=1)
    assert f"{bad}: results[0] must have exactly the keys" in proc.stderr


def test_paper_numbers_are_the_references():
    """Every number is a published one (paper_results.yaml names each source), unchanged."""
    paper = load_paper(ROOT / "configs/suites/paper_results.yaml")
    expected_official = {  # vicregl-official.md, released models: (IN-1k top-1, VOC mIoU)
        "resnet50_alpha0.9": (71.2, 54.0), "resnet50_alpha0.75": (70.4, 55.9),
        "convnext_small_alpha0.9": (75.9, 66.7), "convnext_small_alpha0.75": (74.6, 67.5),
        "convnext_base_alpha0.9": (77.1, 69.3), "convnext_base_alpha0.75": (76.3, 70.4),
        "convnext_xlarge_alpha0.75": (79.4, 78.7)}
    for model, (top1, miou) in expected_official.items():
        assert paper[(model, "in1k_linear", "top1")].value == top1
        assert paper[(model, "voc12aug_linear", "mIoU")].value == miou
        assert paper[(model, "voc12aug_linear", "mIoU")].source.startswith("[official]")
    assert paper[("vicregl_resnet50", "voc0712_faster_rcnn_c4", "bbox_AP")].value == 59.5
    assert paper[("supervised_resnet50", "coco_mask_rcnn_fpn_1x", "bbox_AP")].value == 39.7
    assert paper[("mocov2_resnet50", "voc0712_faster_rcnn_c4", "bbox_AP75")].value == 64.0
    assert all(e.source.startswith(("[official]", "[protocols]")) for e in paper.values())
    assert len(paper) == 14 + 7 + 6 + 6
    # the suites' ImageNet linear experiments meet these numbers
    for suite in ("vicregl_resnet50", "vicregl_convnext"):
        text = (ROOT / f"configs/suites/{suite}.yaml").read_text()
        assert "  in1k_linear:\n" in text and "metric: top1" in text


def test_metric_lookup():
    metrics = {"mIoU": 50.0, "nan": float("nan"), "voc_2007_test": {"bbox_AP": 12.5}}
    assert metric_value(metrics, "mIoU") == 50.0
    assert metric_value(metrics, "voc_2007_test.bbox_AP") == 12.5
    assert metric_value(metrics, "nan") is None and metric_value(metrics, "absent") is None
    assert metric_value(None, "mIoU") is None


def _row(label, experiment, task, metric, value, std=None, n=1, planned=1, status="finished"):
    """A results.json row as tools/run_suite.py writes it (seeded when planned > 1)."""
    return {"id": f"{label}/{experiment}", "backbone": label, "backbone_label": label,
            "arch": "convnext_mini", "source": "random:0", "paper_models": [],
            "experiment": experiment, "experiment_label": experiment,
            "paper_experiment": experiment, "task": task, "metric": metric,
            "metrics_shown": [metric], "status": status, "reason": "",
            "log": "suite.log", "metrics_path": "metrics.json", "runner_wall_s": 1.0,
            "metrics": None if value is None else {metric: value},
            "metrics_std": None if std is None else {metric: std}, "n_seeds": n,
            "seeds_planned": planned, "seeds": None,
            "cost": {"wall_s": 1.0, "gpus": 0, "gpu_type": "cpu", "gpu_hours": 0.0}}


TRADEOFF_ROWS = [
    # VICRegL: dense = mean(13, 11, 20) = 44/3, its std sqrt(0^2 + 0^2 + 1.5^2) / 3 = 0.5;
    # global = 60 +- 2
    _row("VICRegL a=0.75", "voc", "segmentation", "mIoU", 13.0),
    _row("VICRegL a=0.75", "ade", "segmentation", "mIoU", 11.0),
    _row("VICRegL a=0.75", "voc_nn", "dense_retrieval", "mIoU", 20.0, 1.5, 3, 3),
    _row("VICRegL a=0.75", "knn", "classification", "top1", 60.0, 2.0, 3, 3),
    # VICReg: dense = mean(9, 8, 12) = 29/3 +- 0.6 / 3; global 64 +- 1
    _row("VICReg a=1", "voc", "segmentation", "mIoU", 9.0),
    _row("VICReg a=1", "ade", "segmentation", "mIoU", 8.0),
    _row("VICReg a=1", "voc_nn", "dense_retrieval", "mIoU", 12.0, 0.6, 3, 3),
    _row("VICReg a=1", "knn", "classification", "top1", 64.0, 1.0, 3, 3),
    # random: its classification failed -> left out of the plot, with the reason
    _row("random", "voc", "segmentation", "mIoU", 8.5),
    _row("random", "ade", "segmentation", "mIoU", 8.0),
    _row("random", "voc_nn", "dense_retrieval", "mIoU", 5.0, 0.2, 3, 3),
    _row("random", "knn", "classification", "top1", None, status="failed"),
]


def test_tradeoff_points_and_plot(tmp_path):
    results = {"suite": "demo", "rows": TRADEOFF_ROWS, "pretraining": []}
    (tmp_path / "results.json").write_text(json.dumps(results))
    rows = build_rows([results], {})
    points, why = tradeoff_points(rows)
    assert [p.label for p in points] == ["VICRegL a=0.75", "VICReg a=1"]
    assert points[0].dense == pytest.approx(44 / 3) and points[0].dense_err == pytest.approx(0.5)
    assert (points[0].global_, points[0].global_err) == (60.0, 2.0)
    assert points[1].dense == pytest.approx(29 / 3) and points[1].dense_err == pytest.approx(0.2)
    assert points[0].dense_experiments == ["voc", "ade", "voc_nn"]
    assert why == "left out: random (no number for knn)"

    written = make_tables([tmp_path / "results.json"], tmp_path / "t",
                          ROOT / "configs/suites/paper_results.yaml")
    assert written["tradeoff"] == tmp_path / "t" / "tradeoff.png"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(written["tradeoff"]).shape
    assert width >= 900 and height >= 700
    md = written["md"].read_text()
    # seeded rows: mean ± std (n); a failed one keeps its status
    assert "| VICRegL a=0.75 | 13.0 | 11.0 | 20.0 ± 1.5 (n=3) | 60.0 ± 2.0 (n=3) |" in md
    assert "| random | 8.5 | 8.0 | 5.0 ± 0.2 (n=3) | failed |" in md
    tex = written["tex"].read_text()
    assert "VICReg a=1 & knn & top1 & 64.0 $\\pm$ 1.0 (n=3) &" in tex
    rows = list(csv.DictReader(written["csv"].open()))
    knn = next(r for r in rows if r["label"] == "VICReg a=1" and r["experiment"] == "knn")
    assert (knn["ours"], knn["std"], knn["n"], knn["seeds_planned"]) == ("64.0", "1.0", "3", "3")


def test_seed_statistics_by_hand():
    from transfer.suite.seeds import aggregate_metrics, mean_std, row_state

    assert mean_std([]) == (None, None) and mean_std([4.0]) == (4.0, None)
    mean, std = mean_std([11.0, 12.0, 15.0])
    assert mean == pytest.approx(38 / 3) and std == pytest.approx((13 / 3) ** 0.5)
    means, stds = aggregate_metrics([{"mIoU": 10.0, "per": {"a": 1.0}, "x": "text"},
                                     {"mIoU": 14.0, "per": {"a": 3.0}, "x": "text"}])
    assert means == {"mIoU": 12.0, "per": {"a": 2.0}}
    assert stds["mIoU"] == pytest.approx(8 ** 0.5) and stds["per"]["a"] == pytest.approx(2 ** 0.5)
    # a metric that one seed lacks is not averaged over the others
    assert aggregate_metrics([{"a": 1.0, "b": 2.0}, {"a": 3.0}])[0] == {"a": 2.0}
    assert row_state([("finished", ""), ("finished", "")]) == ("finished", "")
    assert row_state([("finished", ""), ("pending", "x"), ("failed", "rc 1")]) == (
        "failed", "seed2: rc 1; 1 of 3 seeds finished")
    assert row_state([("missing_extra", "no d2")] * 2) == (
        "missing_extra", "seed0: no d2; 0 of 2 seeds finished")


def _table_row(label, experiment, deviates=(), ours=20.0):
    return TableRow(suite="demo", backbone=label, label=label, arch="convnext_mini",
                    experiment=experiment, experiment_label=experiment, metric="mIoU", main=True,
                    ours=ours, paper=None, paper_model="", paper_source="", status="finished",
                    reason="", wall_s=1.0, gpus=0, gpu_hours=0.0, gpu_type="cpu", log="",
                    deviates=tuple(deviates))


SEG = ("total batch 8, protocol 16", "crop 96x96, protocol 512x512")


def test_deviation_notes_one_per_column():
    """21 deviating cells (3 backbones x 7 experiments) -> 7 notes, each listing its column's
    shared deviations once; what only one row adds is named with that row."""
    backbones = ["VICReg", "VICRegL", "random"]
    rows = [_table_row(b, f"exp{j}", SEG + ((f"seed {j}, protocol 0",) if b == "random" else ()))
            for b in backbones for j in range(7)]
    notes = deviation_notes(rows)
    assert len(notes) == 7
    assert notes[0] == ("† exp0, every row: total batch 8 (protocol 16); crop 96x96 "
                        "(protocol 512x512); random also: seed 0 (protocol 0)")
    # rows without deviations are counted; rows with nothing in common are named one by one
    rows = [_table_row("A", "voc", ["lr 1, protocol 2"]), _table_row("B", "voc", ["crop 9"]),
            _table_row("C", "voc"), _table_row("C", "knn", ["crop 64, protocol 224"])]
    assert deviation_notes(rows) == [
        "† voc, 2 of 3 rows (A, B): A: lr 1 (protocol 2); B: crop 9",
        "† knn, every row: crop 64 (protocol 224)"]
    # nothing of the per-row deviations is lost: every one is in its column's note
    notes = {n.split(",")[0][2:]: n for n in deviation_notes(rows)}
    for row in rows:
        for deviation in row.deviates:
            value, _, protocol = deviation.partition(", protocol ")
            assert value in notes[row.experiment]
            assert not protocol or f"(protocol {protocol})" in notes[row.experiment]


def _blank_band(png) -> int:
    """The tallest run of all-white pixel rows in ``png`` (a band of nothing)."""
    import matplotlib.image
    import numpy as np

    image = matplotlib.image.imread(png)[..., :3]
    blank = (image > 0.99).all(axis=(1, 2))
    longest = run = 0
    for white in blank:
        run = run + 1 if white else 0
        longest = max(longest, run)
    return longest


def test_table_picture_height_follows_the_rows(tmp_path):
    import matplotlib.image

    heights = {}
    for count in (2, 8):
        rows = [_table_row(f"backbone {i}", f"exp{j}", SEG) for i in range(count)
                for j in range(7)]
        png = table_picture(*summary_table(rows), deviation_notes(rows),
                            tmp_path / f"table{count}.png", "demo")
        heights[count] = matplotlib.image.imread(png).shape[0]
        # cropped to what is drawn: no empty band (the old picture had 300+ white pixel rows
        # between the table and its notes; a table row is ~40 px, the margin 15)
        assert _blank_band(png) < 40, count
    # six more rows: six row heights more (about 0.3 inch at 150 dpi each), nothing else
    assert 6 * 35 < heights[8] - heights[2] < 6 * 60
    assert heights[2] < 400  # 3 table rows and 7 notes fit in ~2.5 inches
