"""VICRegL pretraining: the config (``config``: every key, its type and its checks), the model
(``backbones``, ``heads``, ``losses``, ``matching``, ``model``), the data (``data``,
``transforms``, ``pipeline`` and its fast path), the run (``builder`` builds it, ``engine``
trains it, ``checkpoint`` saves and restores it), the throughput benchmark and compatibility
with the official code (``official``).

Depends on torch and torchvision only (plus small pure-Python packages), so it runs on a GPU
box that has nothing else installed.

``common/`` holds the torch-free helpers shared with transfer/ and tools/ (files, provenance,
run locks, argument checks, ...); ``grouping`` (batching by shape) is standard library only
too. ``weight_files`` (with torch) loads any weights file safely and says which kind it is.
"""
