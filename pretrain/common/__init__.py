"""Torch-free helpers that pretrain/, transfer/ and tools/ share: standard library (and PyYAML)
only, so importing them loads no torch and no framework (tests/test_import_graph.py checks it).

``files`` (atomic writes, output checks), ``preflight`` (output folders and free space),
``run_lock`` (one process per folder), ``pids``, ``provenance`` (git commit), ``durations``
(wall-time text), ``arguments`` (command-line checks, exit 2), ``slurm`` (submitit options),
``state_keys`` (strict state-dict loading), ``yaml_files`` (recipes and suite files),
``data_root`` (where datasets are).
"""
