"""The demo's verdict logic (transfer/suite/verdicts.py) on hand-made results: seed grouping, the
spread rule (2 x the larger seed std), strict and non-strict claims, missing rows, the summary."""
import math

import pytest

from transfer.suite.verdicts import (Score, compare, not_finished, seed_scores, summary,
                                     verdict_lines, verdicts)

LABELS = {"vicregl": "VICRegL", "vicreg": "VICReg", "random": "random"}


def rows_for(experiment: str, task: str, metric: str, values: dict[str, list[float]],
             status: str = "finished") -> list[dict]:
    """results.json rows as the suite runner writes them: one per (backbone, experiment), a
    seeded row holding one record per seed under ``seeds`` (its own metrics are the means)."""
    rows = []
    for bb, vals in values.items():
        seeds = [{"id": f"{bb}/{experiment}/seed{k}", "seed": k, "status": status,
                  "metrics": {metric: v, "mAcc": 99.0}} for k, v in enumerate(vals)]
        rows.append({"id": f"{bb}/{experiment}", "backbone": bb, "experiment": experiment,
                     "experiment_label": experiment.upper(), "task": task, "metric": metric,
                     "status": status, "metrics": {metric: sum(vals) / len(vals)},
                     "seeds": seeds if len(vals) > 1 else None})
        if len(vals) == 1:  # an unseeded row: the run's own record
            rows[-1]["metrics"] = seeds[0]["metrics"]
    return rows


def test_score_mean_and_sample_std():
    score = Score((1.0, 2.0, 3.0))
    assert score.n == 3 and score.mean == 2.0 and score.std == pytest.approx(1.0)
    assert Score((5.0,)).std is None


def test_seed_scores_group_by_backbone_and_experiment_and_skip_unfinished():
    rows = rows_for("voc", "segmentation", "mIoU", {"vicregl": [10.0, 12.0]})
    rows += rows_for("voc", "segmentation", "mIoU", {"random": [3.0, 4.0]}, status="failed")
    rows += rows_for("voc", "segmentation", "mIoU", {"vicreg": [7.0]})
    rows.append({"backbone": "other", "experiment": "voc", "task": "segmentation",
                 "metric": "mIoU", "status": "finished", "metrics": {"mAcc": 1.0}})
    rows[0]["seeds"][1]["status"] = "pending"  # a seed not run yet
    scores = seed_scores(rows)
    assert set(scores) == {("vicregl", "voc"), ("vicreg", "voc")}
    assert scores[("vicregl", "voc")].values == (10.0,)
    assert scores[("vicreg", "voc")].values == (7.0,)


def test_compare_uses_twice_the_larger_std():
    a, b = Score((10.0, 11.0, 12.0)), Score((8.0, 8.0, 8.0))  # std 1 and 0
    result = compare("a", "b", a, b)
    assert result.diff == pytest.approx(3.0) and result.spread == pytest.approx(2.0)
    assert result.exceeds and result.holds
    close = compare("a", "b", a, Score((9.5, 9.5, 9.5)))  # diff 1.5 < 2
    assert not close.exceeds and not close.holds
    assert "within the spread 2.00" in close.text({})


def test_one_seed_means_spread_unknown_and_no_strict_claim_holds():
    result = compare("a", "b", Score((50.0,)), Score((1.0, 2.0)))
    assert result.spread is None and not result.exceeds and not result.holds
    assert "spread unknown" in result.text({})


def test_non_strict_claim_tolerates_a_tie_but_not_a_clear_reversal():
    vicreg = Score((40.0, 41.0, 42.0))  # std 1 -> spread 2
    assert compare("vicreg", "vicregl", vicreg, Score((42.0, 42.0, 42.0)), strict=False).holds
    assert compare("vicreg", "vicregl", vicreg, Score((30.0, 30.0, 30.0)), strict=False).holds
    reversed_ = compare("vicreg", "vicregl", vicreg, Score((45.0, 45.0, 45.0)), strict=False)
    assert reversed_.exceeds and not reversed_.holds


def test_verdicts_count_dense_orderings_and_the_global_claim():
    rows = rows_for("voc", "segmentation", "mIoU",
                    {"vicregl": [14.0, 15.0, 16.0], "vicreg": [10.0, 10.5, 11.0],
                     "random": [8.0, 8.1, 8.2]})  # reached: 4.5 > 2, 2.4 > 1
    rows += rows_for("ade", "dense_retrieval", "mIoU",
                     {"vicregl": [9.0, 9.0, 9.0], "vicreg": [9.2, 8.8, 9.0],
                      "random": [5.0, 5.0, 5.0]})  # VICRegL vs VICReg within the spread
    rows += rows_for("city", "segmentation", "mIoU", {"vicregl": [1.0], "random": [1.0]})
    rows += rows_for("imagenet", "classification", "top1",
                     {"vicregl": [60.0, 60.0, 60.0], "vicreg": [70.0, 70.0, 70.0],
                      "random": [20.0, 20.0, 20.0]})
    rows += rows_for("coco", "detection", "bbox_AP", {"vicregl": [1.0], "vicreg": [2.0]})
    result = verdicts(rows)
    assert [v.experiment for v in result] == ["voc", "ade", "city", "imagenet"]
    voc, ade, city, cls = result
    assert voc.reached and voc.dense and not ade.reached and ade.complete
    assert not city.complete and not city.reached
    assert cls.reached and not cls.dense
    assert voc.learns and ade.learns and cls.learns and not city.learns
    assert math.isclose(voc.comparisons[0].diff, 4.5)
    assert [(c.a, c.b) for c in voc.comparisons] == [("vicregl", "vicreg"), ("vicreg", "random"),
                                                      ("vicregl", "random")]
    assert [(c.a, c.b, c.strict) for c in cls.comparisons] == [
        ("vicreg", "vicregl", False), ("vicreg", "random", True), ("vicregl", "random", True)]
    text = summary(result, LABELS)
    assert text.startswith("VICReg and VICRegL > random on 3 of 3 task(s); ")
    assert ("VICRegL > VICReg > random reached on 1 of 2 dense task(s) (VOC); "
            "1 without results") in text
    assert "VICReg >= VICRegL reached on 1 of 1 global task(s) (IMAGENET)" in text
    lines = "\n".join(verdict_lines(result, LABELS))
    assert "VICRegL > VICReg: difference +4.50, exceeds the spread 2.00 -> holds" in lines
    assert "VICRegL > VICReg: difference +0.00, within the spread 0.40 -> does not hold" in lines
    assert "no verdict: a backbone has no finished result" in lines
    assert "ordering REACHED" in lines and "ordering not reached" in lines
    assert "VICRegL > random: difference +40.00" in lines
    assert "pretrained > random init HOLDS; ordering REACHED" in lines


def test_summary_without_results():
    assert summary([], LABELS) == "no dense or global task has results."


def test_not_finished_names_failures_but_not_missing_extras_or_unselected_steps():
    rows = rows_for("voc", "segmentation", "mIoU", {"vicregl": [1.0, 2.0, 3.0]})
    rows[0]["seeds"][2]["status"] = "pending"  # seed 2 not selected (--only)
    rows += rows_for("coco", "detection", "bbox_AP", {"random": [0.0]}, status="missing_extra")
    rows += rows_for("city", "segmentation", "mIoU", {"vicreg": [0.0]}, status="failed")
    selected = {"vicregl/voc/seed0", "vicregl/voc/seed1", "random/coco", "vicreg/city"}
    assert not_finished(rows, selected) == ["vicreg/city"]
    assert not_finished(rows, selected | {"vicregl/voc/seed2"}) == ["vicregl/voc/seed2",
                                                                   "vicreg/city"]
