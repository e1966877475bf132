"""Suites: which backbones meet which transfer experiments (``configs/suites/*.yaml``).

A suite file becomes numbers in four steps, one module each:

- ``spec``: read and check the suite file (backbones, experiments, variables);
- ``plan``: expand it into steps (pretraining, conversion, each experiment and seed), each with
  its folder, command line and dependencies; ``--only`` selects among them;
- ``runner``: run the steps, resumable, on this machine or on SLURM; ``state`` reads a step's
  state from its folder (finished, stale, failed, ...), ``results`` writes results.json;
- ``tables`` and ``plots``: results.json -> table.md / .csv / .tex / .png and the figures;
  ``seeds`` gives a seeded row its mean, std and count.

The demo (tools/demo.py) adds ``verdicts`` (which backbone wins each task, from the numbers)
and ``demo_progress`` (its overall progress line and ETA). No framework is imported here: the
steps run the tools (tools/seg_train.py, tools/det_train.py, ...) as processes.
"""
