"""Suites: which backbones meet which transfer experiments (``configs/suites/*.yaml``).

A suite file becomes numbers in four steps, one module each:

- ``spec``: read and check the suite file (backbones, experiments, variables);
- ``plan``: expand it into steps (pretraining, conversion, each experiment and seed), each with
  its folder, command line and dependencies; ``--only`` selects among them;
- ``runner``: run the steps, resumable: ``scheduler`` says which step can start, a launcher
  runs it on this machine (``launch_local``, ``processes``) or on SLURM (``launch_slurm``),
  ``report`` prints the summary; ``state`` is the one place that decides a step's state
  (finished, stale, failed, ...) from its folder (``status_file``: its record), and
  ``results`` writes results.json with it;
- ``tables`` and ``plots``: results.json -> table.md / .csv / .tex / .png and the figures;
  ``seeds`` gives a seeded row its mean, std and count.

The demo (tools/demo.py) adds ``verdicts`` (which backbone wins each task, from the numbers)
and ``demo_progress`` (its overall progress line and ETA). No framework is imported here: the
steps run the tools (tools/seg_train.py, tools/det_train.py, ...) as processes.
"""
