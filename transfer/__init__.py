"""Transfer: a pretrained backbone evaluated on downstream tasks, in three jobs.

- framework adapters: ``weights`` (the one strict reader every side uses), ``conversion`` (a
  source -> the file a framework loads, written into the run's folder), ``mmseg_side``
  (MMSegmentation) and ``detectron2_side`` (detectron2); only these two import a framework;
- ``evaluation``: the evaluations that need no framework (k-NN and linear classification,
  dense retrieval, PCA maps of the features);
- ``suite``: suites of backbones x experiments: the suite file, the plan, the resumable runner,
  the results and the tables;
- ``synthetic``: small datasets written in the real on-disk layouts, for tests and the demo.

Shared by all of them: ``datasets`` (the dataset names and folders under the one data root),
``metrics`` (metrics.json, the record every run writes), ``fingerprint`` (how a run deviates
from its protocol), ``seed_runs`` (several seeds of one evaluation in one process) and
``extras`` (optional extras such as detectron2: available or hidden).
"""
