"""The results as pictures: the main table (table.png), bars per experiment (plot.png) and the
local/global trade-off (tradeoff.png), from the rows of transfer/suite/tables.py (which calls
this module; nothing here imports it: the table's cells and notes come as arguments, the rows
are read by attribute). matplotlib is imported by the drawing functions only (Agg backend: no display needed); every file is
written to a temporary name and renamed, so a reader never sees half a picture.
"""
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

from pretrain.common.files import atomic_path

# Tasks whose main metric is a dense score (x of the trade-off) or a global one (y).
DENSE_TASKS = ("segmentation", "dense_retrieval")
GLOBAL_TASKS = ("classification",)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, tight: bool = False) -> Path:
    """Write ``fig`` (``tight``: cropped to what is drawn, text outside the axes included)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format=path.suffix.lstrip("."),
                    **({"bbox_inches": "tight", "pad_inches": 0.1} if tight else {}))
    _pyplot().close(fig)
    return path


ROW_INCHES = (0.15, 0.11)  # a table row's height: per line of text, plus the cell's padding
NOTE_POINTS = 7


def table_picture(header: list[str], body: list[list[str]], notes: list[str], path: Path,
                  title: str) -> Path:
    """The main comparison (``tables.summary_table``: backbones down, experiments across,
    ``ours (paper, delta)``) as a matplotlib table, with the deviation notes (one per column,
    ``tables.deviation_notes``) right under it. The table's height comes from its rows and the
    picture is cropped to what is drawn, so there is no empty band."""
    plt = _pyplot()
    wrap = [[textwrap.fill(c, 22) for c in line] for line in [header] + body]
    lines = max(c.count("\n") + 1 for line in wrap for c in line)
    width = max(6.0, 1.9 * len(header))
    height = (len(wrap) if body else 2) * (ROW_INCHES[0] * lines + ROW_INCHES[1])
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    table = ax.table(cellText=wrap[1:] or [[""] * len(header)], colLabels=wrap[0],
                     bbox=(0.0, 0.0, 1.0, 1.0), cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
    chars = int(width * 72 / (NOTE_POINTS * 0.55))  # what fits across the table
    notes = [textwrap.fill(n, chars, subsequent_indent="   ") for n in notes]
    if notes:
        ax.annotate("\n".join(notes), xy=(0.0, 0.0), xycoords="axes fraction",
                    xytext=(0, -6), textcoords="offset points", fontsize=NOTE_POINTS,
                    va="top", ha="left")
    return _save(fig, path, tight=True)


def bars(rows, path: Path, title: str) -> Path:
    """Grouped bars: one group per experiment (main metric), one bar per backbone, error bars
    from the seeds (std); the paper's number for a backbone is a black diamond over its bar."""
    plt = _pyplot()
    main = [r for r in rows if r.main and r.status != "reference"]
    groups = list(dict.fromkeys((r.experiment, r.metric, r.experiment_label) for r in main))
    backbones = list(dict.fromkeys(r.label for r in main))
    width = 0.8 / max(len(backbones), 1)
    paper_labelled = False
    fig, ax = plt.subplots(figsize=(3.0 + max(4.0, 2.0 * len(groups) * max(1, len(backbones) / 3)),
                                    4.8))
    for i, label in enumerate(backbones):
        xs, ys, errs, px, py = [], [], [], [], []
        for g, (exp, metric, _) in enumerate(groups):
            row = next((r for r in main if r.label == label and r.experiment == exp
                        and r.metric == metric), None)
            x = g - 0.4 + width * (i + 0.5)
            if row is not None and row.ours is not None:
                xs.append(x)
                ys.append(row.ours)
                errs.append(row.std or 0.0)
            if row is not None and row.paper is not None:
                px.append(x)
                py.append(row.paper)
        drawn = ax.bar(xs, ys, width * 0.9, label=label,
                       yerr=errs if any(errs) else None, capsize=3)
        ax.bar_label(drawn, fmt="%.1f", fontsize=7, padding=2)
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
    return _save(fig, path)


@dataclass
class TradeoffPoint:
    label: str  # the backbone's label (it carries alpha)
    dense: float  # mean over the dense experiments' main metric
    dense_err: float  # std of that mean from the seeds' std (0 without seeds)
    global_: float
    global_err: float
    dense_experiments: list[str]
    global_experiments: list[str]


def _mean_with_error(rows) -> tuple[float, float]:
    """Mean of the rows' numbers; its std from theirs, as for independent runs:
    sqrt(sum std_i^2) / k (a row without seeds counts 0)."""
    k = len(rows)
    return (sum(r.ours for r in rows) / k,
            math.sqrt(sum((r.std or 0.0) ** 2 for r in rows)) / k)


def tradeoff_points(rows) -> tuple[list[TradeoffPoint], str]:
    """One point per backbone that has a number for every dense and every global experiment
    it is run on; ('', reason) for what was left out or why nothing can be drawn."""
    main = [r for r in rows if r.main and r.status != "reference"]
    if not any(r.task in GLOBAL_TASKS for r in main):
        return [], "no classification rows (add a task: classification experiment to the suite)"
    if not any(r.task in DENSE_TASKS for r in main):
        return [], "no dense rows (segmentation or dense_retrieval experiments)"
    points, left_out = [], []
    for label in dict.fromkeys(r.label for r in main):
        mine = [r for r in main if r.label == label]
        dense = [r for r in mine if r.task in DENSE_TASKS]
        global_ = [r for r in mine if r.task in GLOBAL_TASKS]
        missing = [r.experiment_label for r in dense + global_ if r.ours is None]
        if missing or not dense or not global_:
            what = ", ".join(missing) or "a dense or global experiment"
            left_out.append(f"{label} (no number for {what})")
            continue
        (d, d_err), (g, g_err) = _mean_with_error(dense), _mean_with_error(global_)
        points.append(TradeoffPoint(label, d, d_err, g, g_err,
                                    [r.experiment_label for r in dense],
                                    [r.experiment_label for r in global_]))
    why = f"left out: {'; '.join(left_out)}" if left_out else ""
    return points, why if points else (why or "no backbone has both scores")


def tradeoff(rows, path: Path, title: str) -> tuple[Path | None, str]:
    """Dense score (x) vs global score (y), one labelled point per backbone with error bars
    from the seeds. Returns (path, note) or (None, why it was not drawn)."""
    points, why = tradeoff_points(rows)
    if not points:
        return None, why
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for p in points:
        ax.errorbar(p.dense, p.global_, xerr=p.dense_err or None, yerr=p.global_err or None,
                    fmt="o", capsize=3, markersize=7, label=p.label)
        ax.annotate(p.label, (p.dense, p.global_), textcoords="offset points", xytext=(6, 6),
                    fontsize=8)
    dense_names = ", ".join(dict.fromkeys(e for p in points for e in p.dense_experiments))
    global_names = ", ".join(dict.fromkeys(e for p in points for e in p.global_experiments))
    ax.set_xlabel(textwrap.fill(f"dense score: mean of {dense_names}", 70), fontsize=8)
    ax.set_ylabel(textwrap.fill(f"global score: {global_names}", 45), fontsize=8)
    ax.set_title(f"{title}: local vs global features" + (f"\n({why})" if why else ""),
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    fig.tight_layout()
    return _save(fig, path), why
