"""Evaluations of a frozen backbone that need no framework (torch only):

- ``knn``: exact cosine k-nearest-neighbour search in chunks (classification, dense retrieval);
- ``classification``: ImageFolder splits, pooled features, the k-NN classifier;
- ``linear_probe``: the linear classification protocol (resumable);
- ``cls_eval``: both classification protocols end to end, writing metrics.json
  (tools/cls_eval.py);
- ``dense_retrieval``: training-free dense nearest-neighbour segmentation (Hummingbird); the
  mmseg-read data and the entry point are ``transfer/mmseg_side/dense_nn.py``;
- ``pca_maps``: the first principal components of a backbone's dense features as RGB (demo).
"""
