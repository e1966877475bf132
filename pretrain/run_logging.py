"""Run logs: JSON lines, TensorBoard and a loss plot, written by rank 0 only."""
import json
import logging
import sys
import time
from pathlib import Path

from .common.files import write_text

log = logging.getLogger("vicregl")


def setup_console(rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout,
                        force=True)


class RunLogger:
    """``metrics.jsonl`` (one JSON object per logged step) plus TensorBoard scalars."""

    def __init__(self, output_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(output_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume, drop records of steps the restarted run will redo."""
        if self.enabled and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if _step_of(line) is not None and _step_of(line) <= step]
            # atomic: a kill while truncating keeps the old records
            write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _step_of(line: str) -> int | None:
    """The step of one record; None for a blank line or one torn by a kill mid-write."""
    try:
        return int(json.loads(line)["step"]) if line.strip() else None
    except (ValueError, KeyError, TypeError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_losses(jsonl_path: Path, png_path: Path, title: str = "") -> Path | None:
    """Plot the total loss and each loss term against the step."""
    records = [r for r in read_jsonl(jsonl_path) if "loss" in r]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("loss", "global_inv", "global_var", "global_cov", "local_inv",
                        "local_var", "local_cov", "probe_ce") if k in records[0]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in records]
    axes[0].plot(steps, [r["loss"] for r in records], label="total")
    axes[0].set_title("total loss")
    for key in keys[1:]:
        axes[1].plot(steps, [r[key] for r in records], label=key)
    axes[1].set_title("weighted terms")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
