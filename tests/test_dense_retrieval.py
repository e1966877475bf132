"""The dense nearest-neighbour core (pure torch): label pooling, the vote, the search, the
confusion-matrix mIoU, on cases small enough to compute by hand."""
import math

import pytest
import torch

from pretrain.backbones import build_backbone
from transfer.evaluation import dense_retrieval as dr
from transfer.evaluation.knn import l2_normalise, topk_cosine

IGNORE = 255


def test_pool_labels_soft_majority_and_ignore():
    label = torch.tensor([[0, 0, 1, 1],
                          [0, 1, 1, 1],
                          [IGNORE, IGNORE, 2, 2],
                          [IGNORE, IGNORE, 2, 0]])
    soft, keep = dr.pool_labels(label, (2, 2), 3, IGNORE)
    # cells row-major: top-left 3x0 + 1x1; top-right 4x1; bottom-left all ignored;
    # bottom-right 3x2 + 1x0
    assert keep.tolist() == [True, True, False, True]
    expected = torch.tensor([[0.75, 0.25, 0], [0, 1, 0], [0, 0, 0], [0.25, 0, 0.75]])
    assert torch.allclose(soft, expected)
    major, _ = dr.pool_labels(label, (2, 2), 3, IGNORE, "majority")
    assert major.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]]


def test_pool_labels_partly_ignored_cell_is_normalised_over_labelled_pixels():
    label = torch.tensor([[1, IGNORE], [IGNORE, IGNORE]])
    soft, keep = dr.pool_labels(label, (1, 1), 2, IGNORE)
    assert keep.tolist() == [True] and soft.tolist() == [[0.0, 1.0]]


def test_vote_is_softmax_weighted_mean_of_neighbour_labels():
    sims = torch.tensor([[0.9, 0.5]])
    labels = torch.tensor([[[1.0, 0.0], [0.2, 0.8]]])
    t = 0.1
    w0 = math.exp(9) / (math.exp(9) + math.exp(5))
    expected = [w0 * 1.0 + (1 - w0) * 0.2, (1 - w0) * 0.8]
    assert torch.allclose(dr.vote(sims, labels, t), torch.tensor([expected]), atol=1e-6)


def test_chunked_topk_equals_full_search():
    g = torch.Generator().manual_seed(0)
    bank = l2_normalise(torch.randn(53, 8, generator=g))
    queries = l2_normalise(torch.randn(11, 8, generator=g))
    sims, idx = topk_cosine(queries, bank, 5, bank_chunk=7, query_chunk=4)
    full = (queries @ bank.T).topk(5, dim=1)
    assert torch.allclose(sims, full.values) and torch.equal(idx, full.indices)


def test_predict_confusion_and_miou_by_hand():
    bank = l2_normalise(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    bank_labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    query = torch.tensor([[[1.0, 0.1]], [[0.1, 1.0]]])  # (D=2, h=1, w=2)
    pred = dr.predict(query, bank, bank_labels, (2, 4), k=2, temperature=0.02)
    # bilinear x2 upsampling: columns 0, 1 lean on the left cell, 2, 3 on the right one
    assert pred.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]
    gt = torch.tensor([[0, 0, 0, 1], [0, 0, 1, IGNORE]])
    conf = dr.confusion(pred, gt, 3, IGNORE)
    assert conf.tolist() == [[4, 1, 0], [0, 2, 0], [0, 0, 0]]
    m = dr.segmentation_metrics(conf, ["a", "b", "absent"])
    # IoU a = 4 / (5 + 4 - 4), b = 2 / (2 + 3 - 2); Acc a = 4/5, b = 2/2; aAcc = 6/7
    assert m["per_class"] == {"a": 80.0, "b": 66.67, "absent": None}
    assert m["per_class_acc"] == {"a": 80.0, "b": 100.0, "absent": None}
    assert m["mIoU"] == round((0.8 + 2 / 3) / 2 * 100, 2)
    assert m["mAcc"] == 90.0 and m["aAcc"] == round(6 / 7 * 100, 2)


def test_predicted_but_absent_class_has_zero_iou_and_null_acc():
    conf = torch.tensor([[3, 1], [0, 0]])  # class 1 never in the ground truth, predicted once
    m = dr.segmentation_metrics(conf, ["x", "y"])
    assert m["per_class"] == {"x": 75.0, "y": 0.0} and m["per_class_acc"]["y"] is None
    assert m["mIoU"] == 37.5 and m["mAcc"] == 75.0


def test_memory_cap_keeps_rare_class_cells_first():
    features = torch.randn(4, 2, 4)
    label = torch.zeros(2, 4, dtype=torch.long)
    label[0, 3] = 1  # one cell of class 1 among seven of class 0
    feats, labels = dr.memory_entries(features, label, 2, IGNORE, per_image=1,
                                      generator=torch.Generator().manual_seed(0))
    assert labels.tolist() == [[0.0, 1.0]]
    assert torch.allclose(feats[0], l2_normalise(features[:, 0, 3]))


def test_choose_subset_is_seeded():
    a, b = dr.choose_subset(128, 1 / 8, 0), dr.choose_subset(128, 1 / 8, 1)
    assert len(a) == 16 and a == sorted(set(a)) and a == dr.choose_subset(128, 1 / 8, 0)
    assert a != b
    assert dr.choose_subset(5, 1 / 128, 3) and len(dr.choose_subset(5, 1.0, 0)) == 5
    with pytest.raises(ValueError, match="memory-fraction"):
        dr.choose_subset(10, 0.0, 0)


@pytest.mark.parametrize("arch", ["convnext_mini", "resnet18"])
def test_last_features_are_the_official_local_features(arch):
    model = build_backbone(arch).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps, _ = model(x)
        last = dr.local_features(model, x, "last")
        concat = dr.local_features(model, x, "concat")
    assert torch.allclose(last.flatten(2).transpose(1, 2), maps, atol=1e-5)
    assert concat.shape == (2, sum(model.stage_channels), 16, 16)
