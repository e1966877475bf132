#!/usr/bin/env python
"""Write a suite's results as Markdown, CSV and LaTeX tables and a PNG plot.

Reads one or more results.json files (written by tools/run_suite.py into its work dir, or a
work dir itself) and the paper's reported numbers (configs/suites/paper_results.yaml), and
writes table.md, table.csv, table.tex, table.png (the main comparison as a picture), plot.png
(bars per experiment, error bars from seeds) and tradeoff.png (dense score vs global score per
backbone, when the suites have classification rows). Each row is (backbone, experiment,
metric): ours (mean +- std (n) over seeds for a seeded row), the paper's number for the model
the backbone is compared with, the difference, the status, the cost (wall time, GPUs,
GPU-hours, GPU type) and how its settings deviate from the protocol's (marked with a dagger in
the main comparison). The columns are explained in docs/suites.md.

Examples:
  python tools/make_table.py work_dirs/suites/vicregl_resnet50
  # ResNet-50 and ConvNeXt suites in one table, with the paper's other models beside them
  python tools/make_table.py work_dirs/suites/vicregl_resnet50/results.json \\
      work_dirs/suites/vicregl_convnext/results.json --references --out-dir tables/
"""
import argparse
import sys
from pathlib import Path

import _bootstrap  # noqa: F401

from transfer.suite.tables import make_tables


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+",
                        help="results.json files of tools/run_suite.py, or their work dirs")
    parser.add_argument("--out-dir", type=Path,
                        help="where to write the tables (default: <first work dir>/table)")
    parser.add_argument("--paper", type=Path,
                        help="reported numbers (default: the suite's paper_results, normally "
                             "configs/suites/paper_results.yaml)")
    parser.add_argument("--references", action="store_true",
                        help="add the paper's other models for the same experiments as "
                             "reference rows (ours empty)")
    parser.add_argument("--no-plot", action="store_true",
                        help="skip the pictures (table.png, plot.png, tradeoff.png); e.g. "
                             "without matplotlib")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    first = Path(args.results[0])
    out_dir = args.out_dir or (first if first.is_dir() else first.parent) / "table"
    notes: list[str] = []
    try:
        written = make_tables(args.results, out_dir, args.paper, args.references,
                              png=not args.no_plot, log=notes.append)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(written["md"].read_text())
    print("\n".join(notes + ["wrote " + ", ".join(str(p) for p in written.values())]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
