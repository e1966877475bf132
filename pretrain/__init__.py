"""VICRegL pretraining: backbones, heads, losses, matching, augmentation and the training engine.

Depends on torch and torchvision only (plus small pure-Python packages), so it runs on a GPU
box that has nothing else installed.

Shared with transfer/ and tools/, standard library only (importing them loads no torch):
``files`` (atomic writes), ``provenance`` (git commit), ``durations`` (wall-time text),
``grouping`` (batching by shape), ``state_keys`` (strict state-dict loading), ``pids``.
``weight_files`` (with torch) loads any weights file safely and says which kind it is.
"""
