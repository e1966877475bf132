"""Results tables: a suite's ``results.json`` + the paper's numbers -> Markdown, CSV, LaTeX, PNG.

One table row per (backbone, experiment, metric): our number (the mean, std and count of a
seeded row), the paper's number for the model the backbone is compared with (``paper:`` in the
suite, entries of ``configs/suites/paper_results.yaml``), their difference, the row's cost, and
how its settings deviate from the protocol's (transfer/fingerprint.py). The columns are
explained in docs/suites.md ("Reading the results"). Rows that did not finish stay in the
table with their status, so a missing number is never silent. The pictures (table.png,
plot.png, tradeoff.png) are drawn by transfer/suite/plots.py, with matplotlib.
"""
import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from pretrain.common.durations import duration
from pretrain.common.files import write_text
from transfer.fingerprint import deviations
from transfer.suite import plots

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
    task: str = ""
    std: float | None = None  # sample standard deviation over the seeds (None: one run)
    n: int = 0  # runs behind ``ours`` (finished seeds)
    seeds_planned: int = 1
    deviates: tuple[str, ...] = ()  # how the settings differ from the protocol's

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


def row_deviations(row: dict) -> list[str]:
    """How a results.json row's settings differ from its protocol's reference, over all its
    seeds (each difference once)."""
    runs = row.get("seeds") or [row]
    found = [d for run in runs
             for d in deviations(run.get("settings"), run.get("reference_settings"))]
    return list(dict.fromkeys(found))


def build_rows(results: list[dict], paper: dict) -> list[TableRow]:
    rows = []
    for result in results:
        for r in result["rows"]:
            cost = r.get("cost") or {}
            deviates = tuple(row_deviations(r))
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
                    log=r["log"], task=r.get("task", ""),
                    std=metric_value(r.get("metrics_std"), metric),
                    n=r.get("n_seeds", int(ours is not None)) if ours is not None else 0,
                    seeds_planned=r.get("seeds_planned", 1), deviates=deviates))
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
    return "-" if seconds is None else duration(seconds)


def _ours(row: TableRow, pm: str = "±") -> str:
    """Our number; for a seeded row ``mean ± std (n=N)``, ``n=k/N`` while seeds are missing."""
    if row.ours is None or row.seeds_planned <= 1:
        return _num(row.ours)
    n = f"{row.n}" if row.n == row.seeds_planned else f"{row.n}/{row.seeds_planned}"
    return f"{_num(row.ours)} {pm} {_num(row.std)} (n={n})"


def _deviates(row: TableRow) -> str:
    return "; ".join(row.deviates) if row.deviates else "-"


def _gpu_hours(row: TableRow) -> str:
    return "-" if row.gpu_hours is None else f"{row.gpu_hours:.2f}"


def _status(row: TableRow) -> str:
    if row.status in ("finished", "reference", "pending"):
        return row.status
    return f"{row.status}: {row.reason}" if row.reason else row.status


LONG_COLUMNS = ("backbone", "experiment", "metric", "ours", "paper", "delta", "paper model",
                "status", "wall time", "GPUs", "GPU-hours", "GPU type", "deviates")


def _long_cells(row: TableRow) -> list[str]:
    return [row.label, row.experiment_label, row.metric, _ours(row), _num(row.paper),
            _num(row.delta, signed=True), row.paper_model or "-", _status(row), _wall(row.wall_s),
            "-" if row.gpus is None else str(row.gpus), _gpu_hours(row), row.gpu_type or "-",
            _deviates(row)]


def _md_table(header: list[str], body: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header))] + [line(b) for b in body])


DEVIATES_MARK = "†"


def _summary_cell(row: TableRow | None) -> str:
    if row is None:
        return ""
    mark = DEVIATES_MARK if row.deviates else ""
    if row.ours is None and row.paper is not None:
        return (f"{row.status} (paper {_num(row.paper)})" if row.status != "reference"
                else f"(paper {_num(row.paper)})")
    if row.ours is None:
        return row.status
    if row.paper is not None:
        return f"{_ours(row)}{mark} (paper {_num(row.paper)}, {_num(row.delta, True)})"
    return f"{_ours(row)}{mark}"


def summary_table(rows: list[TableRow]) -> tuple[list[str], list[list[str]]]:
    """Backbones down, experiments across, main metric: ``ours (paper, delta)``; a seeded
    row's ours is ``mean ± std (n=N)``; ``†`` marks a row whose settings deviate from the
    protocol's (``deviation_notes`` says how, one note per column)."""
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
            cells.append(_summary_cell(next((r for r in rows if r.label == label and
                                             r.experiment == exp and r.metric == metric), None)))
        body.append(cells)
    return header, body


def _in_words(deviation: str) -> str:
    """``"total batch 8, protocol 16"`` -> ``"total batch 8 (protocol 16)"``: a note joins
    several with '; ', and the parentheses keep each pair together."""
    head, sep, protocol = deviation.rpartition(", protocol ")
    return f"{head} (protocol {protocol})" if sep else deviation


def deviation_notes(rows: list[TableRow]) -> list[str]:
    """One note per experiment (a column of the main comparison) whose rows deviate from the
    protocol, in the columns' order: the deviations every deviating row shares, once, then
    what only some rows add, by name. It says which rows it covers ("every row" when no
    backbone of the column is without deviations), so nothing of a per-row note is lost."""
    columns: dict[str, dict[str, tuple[str, ...]]] = {}  # experiment label -> label -> deviates
    backbones: dict[str, list[str]] = {}  # experiment label -> every backbone in its column
    for row in rows:
        backbones.setdefault(row.experiment_label, [])
        if row.label not in backbones[row.experiment_label]:
            backbones[row.experiment_label].append(row.label)
        if row.deviates:
            columns.setdefault(row.experiment_label, {}).setdefault(row.label, row.deviates)
    notes = []
    for experiment, found in columns.items():
        shared = [d for d in next(iter(found.values()))
                  if all(d in other for other in found.values())]
        which = ("every row" if len(found) == len(backbones[experiment]) else
                 f"{len(found)} of {len(backbones[experiment])} rows ({', '.join(found)})")
        parts = ["; ".join(map(_in_words, shared))] if shared else []
        for label, deviates in found.items():
            extra = [d for d in deviates if d not in shared]
            if extra:
                parts.append(f"{label}{' also' if shared else ''}: "
                             + "; ".join(map(_in_words, extra)))
        notes.append(f"{DEVIATES_MARK} {experiment}, {which}: " + "; ".join(parts))
    return notes


def summary_markdown(rows: list[TableRow]) -> str:
    """The main comparison, with the deviation notes (one per column) under it."""
    notes = deviation_notes(rows)
    return _md_table(*summary_table(rows)) + ("\n\n" + "\n".join(f"- {n}" for n in notes)
                                              if notes else "")


def recalibration_note(results: list[dict]) -> str | None:
    """One line saying whose BatchNorm statistics were recomputed before evaluation
    (tools/recalibrate_bn.py, the ``bn_recalibration`` of the rows' metrics.json backbone
    entries); None when no finished row's were. Backbones without a finished row are left out."""
    found: dict[str, dict | None] = {}
    for result in results:
        for row in result["rows"]:
            for run in [row] + list(row.get("seeds") or []):
                record = run.get("backbone_record")
                if isinstance(record, dict):
                    done = record.get("bn_recalibration") or {}
                    if found.get(row["backbone_label"]) is None:
                        found[row["backbone_label"]] = done if done.get("images") else None
    done = {label: r for label, r in found.items() if r}
    if not done:
        return None
    how = {(r["images"], r.get("image_size")) for r in done.values()}
    if len(done) == len(found) and len(how) == 1:
        images, size = how.pop()
        return (f"BatchNorm statistics of every backbone recomputed on {images} clean training "
                f"images ({size} px centre crops) before evaluation (tools/recalibrate_bn.py).")
    return ("BatchNorm statistics recomputed on clean training images before evaluation for "
            + ", ".join(f"{label} ({r['images']} images, {r.get('image_size')} px)"
                        for label, r in done.items())
            + "; not for " + ", ".join(sorted(set(found) - set(done))) + ".")


def to_markdown(rows: list[TableRow], results: list[dict], sources: list[str],
                paper_path: str) -> str:
    suites = ", ".join(dict.fromkeys(r["suite"] for r in results))
    note = recalibration_note(results)
    out = [f"# Results: {suites}", "",
           f"Made {datetime.now(timezone.utc).isoformat(timespec='seconds')} from "
           f"{', '.join(sources)}; paper numbers from {paper_path}. Columns are explained in "
           "docs/suites.md (\"Reading the results\").", "",
           *([note, ""] if note else []),
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


CSV_COLUMNS = ("suite", "backbone", "label", "arch", "task", "experiment", "metric", "main",
               "ours", "std", "n", "seeds_planned", "paper", "delta", "paper_model",
               "paper_source", "status", "reason", "deviates", "wall_s", "gpus", "gpu_hours",
               "gpu_type", "log")


def to_csv(rows: list[TableRow]) -> str:
    """Every row with raw values; ``deviates`` joins the deviations with '; '."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record = asdict(row)
        record["delta"] = None if row.delta is None else round(row.delta, 4)
        record["deviates"] = "; ".join(row.deviates)
        writer.writerow({k: "" if record.get(k) is None else record[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(c, c) for c in text)


def to_latex(rows: list[TableRow]) -> str:
    """A booktabs table (``\\usepackage{booktabs}``) of the rows, without log paths; a seeded
    row's ours is ``mean $\\pm$ std (n=N)``; the last column says how a row deviates."""
    columns = ["backbone", "experiment", "metric", "ours", "paper", r"$\Delta$", "status",
               "wall time", "GPU-h", "GPU type", "deviates"]
    lines = [r"\begin{tabular}{lllrrrllrll}", r"\toprule",
             " & ".join(columns) + r" \\", r"\midrule"]
    for r in rows:
        ours = _tex(_ours(r, "PLUSMINUS")).replace("PLUSMINUS", r"$\pm$")
        cells = [_tex(r.label), _tex(r.experiment_label), _tex(r.metric), ours,
                 _num(r.paper), _num(r.delta, True), _tex(r.status), _tex(_wall(r.wall_s)),
                 _gpu_hours(r), _tex(r.gpu_type or "-"), _tex(_deviates(r))]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


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
                png: bool = True, log=print) -> dict[str, Path]:
    """Write table.md, table.csv, table.tex and, with ``png``, table.png (the main comparison
    as a picture), plot.png (bars per experiment) and tradeoff.png (dense vs global score per
    backbone; skipped when the suites have no classification or no dense rows) into
    ``out_dir``; returns the paths by kind. ``log`` gets what the reader should know (why the
    trade-off plot was not drawn, or which backbones it leaves out)."""
    results = [read_results(p) for p in result_paths]
    paper_path = Path(paper_path or results[0].get("paper_results")
                      or Path(__file__).resolve().parents[2] / "configs/suites/paper_results.yaml")
    paper = load_paper(paper_path)
    rows = build_rows(results, paper)
    if references:
        rows += reference_rows(results, paper, rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"md": write_text(out_dir / "table.md", to_markdown(
                   rows, results, [str(p) for p in result_paths], str(paper_path))),
               "csv": write_text(out_dir / "table.csv", to_csv(rows)),
               "tex": write_text(out_dir / "table.tex", to_latex(rows))}
    if png:
        title = ", ".join(dict.fromkeys(r["suite"] for r in results))
        written["png"] = plots.table_picture(*summary_table(rows), deviation_notes(rows),
                                             out_dir / "table.png", title)
        written["plot"] = plots.bars(rows, out_dir / "plot.png", title)
        tradeoff, why = plots.tradeoff(rows, out_dir / "tradeoff.png", title)
        if tradeoff is None:
            log(f"tradeoff.png not drawn: {why}")
        else:
            written["tradeoff"] = tradeoff
            if why:
                log(f"tradeoff.png: {why}")
    return written
