"""How a suite runs (``tools/run_suite.py``'s options, the demo's): read by the runner and its
parts (``scheduler.py``, ``launch_local.py``, ``launch_slurm.py``, ``report.py``)."""
from dataclasses import dataclass, field


@dataclass
class RunOptions:
    launcher: str = "local"  # local | slurm
    jobs: int = 1  # steps run at the same time on this machine
    pretrain: bool = False  # run the suite's pretraining steps (otherwise they must be done)
    stream: bool = False
    heartbeat_s: float = 20.0
    skip_failed: bool = False
    rerun: list[str] = field(default_factory=list)  # step id globs to run again
    retry_hint: str = ""  # command prefix to print for retrying one step
    # run the ready seeds of a row in one process (tools that take --seeds): the start-up is
    # paid once instead of once per seed, which on a small CPU machine costs more than a
    # seed's evaluation; on a multi-GPU machine separate steps can run side by side instead
    group_seeds: bool = False
    # SLURM (submitit)
    partition: str | None = None
    timeout_min: int = 24 * 60
    cpus_per_gpu: int = 10
    slurm_extra: dict = field(default_factory=dict)
    slurm_cluster: str | None = None  # None: submitit decides (slurm); "local" for tests
    wait: bool = False
