"""Wall times as people read them in logs and tables. Standard library only (no torch)."""


def duration(seconds: float) -> str:
    """``1h05m`` from an hour on, else ``3m07s`` (whole seconds, rounded)."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
