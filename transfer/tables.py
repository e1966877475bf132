"""Results tables: a suite's ``results.json`` + the paper's numbers -> Markdown, CSV, LaTeX, PNG.

One table row per (backbone, experiment, metric): our number, the paper's number for the
model the backbone is compared with (``paper:`` in the suite, entries of
``configs/suites/paper_results.yaml``), their difference, and the row's cost. The columns are
explained in docs/suites.md ("Reading the results"). Rows that did not finish stay in the
table with their status, so a missing number is never silent. Needs matplotlib for the plot.
"""
import csv
import io
import json
import math
import textwrap
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

PAPER_KEYS = {"model", "experiment", "metric", "value", "source"}


@dataclass
class PaperEntry:
    model: str
    experiment: str
    metric: str
    value: float
    source: str


@dataclass
class TableRow:
    suite: str
    backbone: str
    label: str
    arch: str
    experiment: str
    experiment_label: str
    metric: str
    main: bool  # the experiment's main metric (the one plotted and in the summary)
    ours: float | None
    paper: float | None
    paper_model: str
    paper_source: str
    status: str
    reason: str
    wall_s: float | None
    gpus: int | None
    gpu_hours: float | None
    gpu_type: str
    log: str

    @property
    def delta(self) -> float | None:
        if self.ours is None or self.paper is None:
            return None
        return self.ours - self.paper


def load_paper(path: str | Path) -> dict[tuple[str, str, str], PaperEntry]:
    """Read the paper numbers; every entry needs model, experiment, metric, value, source."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the paper numbers ({exc})") from exc
    entries: dict[tuple[str, str, str], PaperEntry] = {}
    models = raw.get("models") or {}
    for i, item in enumerate(raw.get("results") or []):
        if not isinstance(item, dict) or set(item) != PAPER_KEYS:
            raise ValueError(f"{path}: results[{i}] must have exactly the keys "
                             f"{', '.join(sorted(PAPER_KEYS))}; got {item!r}")
        if item["model"] not in models:
            raise ValueError(f"{path}: results[{i}] names model {item['model']!r}, which is "
                             "not described under 'models'")
        if not isinstance(item["value"], (int, float)) or not str(item["source"]).strip():
            raise ValueError(f"{path}: results[{i}] needs a numeric value and a source")
        key = (item["model"], item["experiment"], item["metric"])
        if key in entries:
            raise ValueError(f"{path}: results[{i}] repeats {key}")
        entries[key] = PaperEntry(item["model"], item["experiment"], item["metric"],
                                  float(item["value"]), str(item["source"]))
    return entries


def metric_value(metrics: dict | None, name: str) -> float | None:
    """``metrics[name]``; a dotted name walks nested entries (``voc_2007_test.bbox_AP``)."""
    node = metrics
    for part in name.split(".") if metrics is not None else []:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return None if math.isnan(node) else float(node)


def build_rows(results: list[dict], paper: dict) -> list[TableRow]:
    rows = []
    for result in results:
        for r in result["rows"]:
            cost = r.get("cost") or {}
            for metric in r["metrics_shown"]:
                entry = next((paper[(m, r["paper_experiment"], metric)] for m in r["paper_models"]
                              if (m, r["paper_experiment"], metric) in paper), None)
                ours = metric_value(r.get("metrics"), metric)
                status, reason = r["status"], r.get("reason", "")
                if status == "finished" and ours is None:
                    status, reason = "no metric", f"{metric} is not in {r['metrics_path']}"
                rows.append(TableRow(
                    suite=result["suite"], backbone=r["backbone"], label=r["backbone_label"],
                    arch=r["arch"], experiment=r["experiment"],
                    experiment_label=r["experiment_label"], metric=metric,
                    main=metric == r["metric"], ours=ours,
                    paper=entry.value if entry else None,
                    paper_model=entry.model if entry else "",
                    paper_source=entry.source if entry else "", status=status, reason=reason,
                    wall_s=cost.get("wall_s", r.get("runner_wall_s")), gpus=cost.get("gpus"),
                    gpu_hours=cost.get("gpu_hours"), gpu_type=str(cost.get("gpu_type") or ""),
                    log=r["log"]))
    return rows


def reference_rows(results: list[dict], paper: dict, rows: list[TableRow]) -> list[TableRow]:
    """Paper numbers for the suites' experiments that no backbone row is compared with
    (e.g. MoCo v2 beside our ResNet-50 rows): ours empty, status 'reference'."""
    shown = {(r.paper_model, r.metric) + (r.experiment,) for r in rows if r.paper_model}
    extra = []
    for result in results:
        experiments = {r["paper_experiment"]: r for r in result["rows"]}
        for entry in paper.values():
            row = experiments.get(entry.experiment)
            if row is None or entry.metric not in row["metrics_shown"]:
                continue
            if (entry.model, entry.metric, row["experiment"]) in shown:
                continue
            shown.add((entry.model, entry.metric, row["experiment"]))
            extra.append(TableRow(
                suite=result["suite"], backbone=entry.model, label=f"{entry.model} (paper)",
                arch="", experiment=row["experiment"], experiment_label=row["experiment_label"],
                metric=entry.metric, main=entry.metric == row["metric"], ours=None,
                paper=entry.value, paper_model=entry.model, paper_source=entry.source,
                status="reference", reason="", wall_s=None, gpus=None, gpu_hours=None,
                gpu_type="", log=""))
    return extra


# ---- formatting ---------------------------------------------------------------------------

def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _gpu_hours(row: TableRow) -> str:
    return "-" if row.gpu_hours is None else f"{row.gpu_hours:.2f}"


def _status(row: TableRow) -> str:
    if row.status in ("finished", "reference", "pending"):
        return row.status
    return f"{row.status}: {row.reason}" if row.reason else row.status


LONG_COLUMNS = ("backbone", "experiment", "metric", "ours", "paper", "delta", "paper model",
                "status", "wall time", "GPUs", "GPU-hours", "GPU type")


def _long_cells(row: TableRow) -> list[str]:
    return [row.label, row.experiment_label, row.metric, _num(row.ours), _num(row.paper),
            _num(row.delta, signed=True), row.paper_model or "-", _status(row), _wall(row.wall_s),
            "-" if row.gpus is None else str(row.gpus), _gpu_hours(row), row.gpu_type or "-"]


def _md_table(header: list[str], body: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header))] + [line(b) for b in body])


def summary_table(rows: list[TableRow]) -> tuple[list[str], list[list[str]]]:
    """Backbones down, experiments across, main metric: ``ours (paper, delta)``."""
    experiments = []
    for row in rows:
        if row.main and (row.experiment, row.metric) not in [(e, m) for e, m, _ in experiments]:
            experiments.append((row.experiment, row.metric, row.experiment_label))
    backbones = list(dict.fromkeys(r.label for r in rows))
    header = ["backbone"] + [f"{label} {metric}" for _, metric, label in experiments]
    body = []
    for label in backbones:
        cells = [label]
        for exp, metric, _ in experiments:
            row = next((r for r in rows if r.label == label and r.experiment == exp
                        and r.metric == metric), None)
            if row is None:
                cells.append("")
            elif row.ours is None and row.paper is not None:
                cells.append(f"{row.status} (paper {_num(row.paper)})" if row.status != "reference"
                             else f"(paper {_num(row.paper)})")
            elif row.ours is None:
                cells.append(row.status)
            elif row.paper is not None:
                cells.append(f"{_num(row.ours)} (paper {_num(row.paper)}, "
                             f"{_num(row.delta, True)})")
            else:
                cells.append(_num(row.ours))
        body.append(cells)
    return header, body


def summary_markdown(rows: list[TableRow]) -> str:
    return _md_table(*summary_table(rows))


def to_markdown(rows: list[TableRow], results: list[dict], sources: list[str],
                paper_path: str) -> str:
    suites = ", ".join(dict.fromkeys(r["suite"] for r in results))
    out = [f"# Results: {suites}", "",
           f"Made {datetime.now(timezone.utc).isoformat(timespec='seconds')} from "
           f"{', '.join(sources)}; paper numbers from {paper_path}. Columns are explained in "
           "docs/suites.md (\"Reading the results\").", "",
           "## Main comparison", "", summary_markdown(rows), "",
           "## All rows", "", _md_table(list(LONG_COLUMNS), [_long_cells(r) for r in rows])]
    pretraining = [(r["suite"], p) for r in results for p in r.get("pretraining", [])]
    if pretraining:
        out += ["", "## Pretraining cost", "", _md_table(
            ["suite", "backbone", "status", "wall time", "GPUs", "GPU-hours", "GPU type"],
            [[s, p["backbone"], p["status"], _wall(p.get("wall_s")), str(p.get("gpus", "-")),
              f"{p['gpu_hours']:.2f}" if p.get("gpu_hours") is not None else "-",
              p.get("gpu_type") or "-"] for s, p in pretraining])]
    cited = list(dict.fromkeys((r.paper_model, r.experiment, r.metric, r.paper, r.paper_source)
                               for r in rows if r.paper_model))
    if cited:
        out += ["", "## Sources of the paper numbers", ""]
        out += [f"- {m} / {e} / {metric} = {_num(v)}: {s}" for m, e, metric, v, s in cited]
    return "\n".join(out) + "\n"


CSV_COLUMNS = ("suite", "backbone", "label", "arch", "experiment", "metric", "main", "ours",
               "paper", "delta", "paper_model", "paper_source", "status", "reason", "wall_s",
               "gpus", "gpu_hours", "gpu_type", "log")


def to_csv(rows: list[TableRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record = asdict(row)
        record["delta"] = None if row.delta is None else round(row.delta, 4)
        writer.writerow({k: "" if record.get(k) is None else record[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(c, c) for c in text)


def to_latex(rows: list[TableRow]) -> str:
    """A booktabs table (``\\usepackage{booktabs}``) of the rows, without log paths."""
    columns = ["backbone", "experiment", "metric", "ours", "paper", r"$\Delta$", "status",
               "wall time", "GPU-h", "GPU type"]
    lines = [r"\begin{tabular}{lllrrrllrl}", r"\toprule",
             " & ".join(columns) + r" \\", r"\midrule"]
    for r in rows:
        cells = [_tex(r.label), _tex(r.experiment_label), _tex(r.metric), _num(r.ours),
                 _num(r.paper), _num(r.delta, True), _tex(r.status), _tex(_wall(r.wall_s)),
                 _gpu_hours(r), _tex(r.gpu_type or "-")]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def plot(rows: list[TableRow], path: Path, title: str) -> Path:
    """Grouped bars: one group per experiment (main metric), one bar per backbone; the
    paper's number for a backbone is a black diamond over its bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in rows if r.main and r.status != "reference"]
    groups = list(dict.fromkeys((r.experiment, r.metric, r.experiment_label) for r in main))
    backbones = list(dict.fromkeys(r.label for r in main))
    width = 0.8 / max(len(backbones), 1)
    paper_labelled = False
    fig, ax = plt.subplots(figsize=(3.0 + max(4.0, 2.0 * len(groups) * max(1, len(backbones) / 3)),
                                    4.8))
    for i, label in enumerate(backbones):
        xs, ys, px, py = [], [], [], []
        for g, (exp, metric, _) in enumerate(groups):
            row = next((r for r in main if r.label == label and r.experiment == exp
                        and r.metric == metric), None)
            x = g - 0.4 + width * (i + 0.5)
            if row is not None and row.ours is not None:
                xs.append(x)
                ys.append(row.ours)
            if row is not None and row.paper is not None:
                px.append(x)
                py.append(row.paper)
        bars = ax.bar(xs, ys, width * 0.9, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        if px:
            ax.scatter(px, py, marker="D", color="black", s=18, zorder=3,
                       label=None if paper_labelled else "paper")
            paper_labelled = True
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{textwrap.fill(label, 18)}\n{metric}" for _, metric, label in groups],
                       fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def read_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable results.json of tools/run_suite.py ({exc})") from exc
    for key in ("suite", "rows"):
        if key not in data:
            raise ValueError(f"{path}: results.json lacks {key!r} (written by tools/run_suite.py)")
    return data


def make_tables(result_paths: list[str | Path], out_dir: str | Path,
                paper_path: str | Path | None = None, references: bool = False,
                png: bool = True) -> dict[str, Path]:
    """Write table.md, table.csv, table.tex and table.png into ``out_dir``; returns the paths."""
    results = [read_results(p) for p in result_paths]
    paper_path = Path(paper_path or results[0].get("paper_results")
                      or Path(__file__).resolve().parent.parent / "configs/suites/paper_results.yaml")
    paper = load_paper(paper_path)
    rows = build_rows(results, paper)
    if references:
        rows += reference_rows(results, paper, rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "md": out_dir / "table.md", "csv": out_dir / "table.csv", "tex": out_dir / "table.tex"}
    written["md"].write_text(to_markdown(rows, results, [str(p) for p in result_paths],
                                         str(paper_path)))
    written["csv"].write_text(to_csv(rows))
    written["tex"].write_text(to_latex(rows))
    if png:
        title = ", ".join(dict.fromkeys(r["suite"] for r in results))
        written["png"] = plot(rows, out_dir / "table.png", title)
    return written
