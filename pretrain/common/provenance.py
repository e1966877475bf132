"""Which code made a file: the git commit recorded in checkpoints, converted weights and every
metrics.json. Standard library only (no torch import)."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: pretrain/common/<this file>


def git_sha(repo: str | Path | None = None) -> str:
    """The commit of the code that runs ("unknown" outside a git checkout; "+dirty" suffix)."""
    repo = Path(repo or ROOT)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
