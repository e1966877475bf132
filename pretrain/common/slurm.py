"""Submit a resumable job to SLURM through submitit (imported only when used).

The same pattern as tools/pretrain.py: one task per GPU, submitit exports the torch.distributed
variables (``init_distributed`` reads them), and on timeout or preemption ``checkpoint()``
requeues the same call, which resumes from its work dir. The job unpickles the call by its
module path, so the repository root is put on the PYTHONPATH the job inherits (sbatch exports
the submitting environment; submitit's local executor too).
"""
import argparse
import os
from pathlib import Path

from pretrain.common.arguments import int_at_least, json_object

ROOT = Path(__file__).resolve().parents[2]  # the repository: pretrain/common/<this file>


def add_slurm_args(parser: argparse.ArgumentParser, gpus_per_node: int = 8,
                   timeout_min: int = 24 * 60) -> None:
    """The ``--slurm`` option group of every tool that can submit itself."""
    group = parser.add_argument_group("SLURM (through submitit)")
    group.add_argument("--slurm", action="store_true", help="submit instead of running here")
    group.add_argument("--nodes", type=int_at_least(1), default=1, help="machines (default: 1)")
    group.add_argument("--gpus-per-node", type=int_at_least(1), default=gpus_per_node,
                       help=f"GPUs per machine, one process each (default: {gpus_per_node})")
    group.add_argument("--partition", default=None,
                       help="SLURM partition (default: the cluster's default)")
    group.add_argument("--timeout-min", type=int_at_least(1), default=timeout_min,
                       help="job time limit; the job is requeued and resumes on timeout")
    group.add_argument("--cpus-per-task", type=int_at_least(1), default=10,
                       help="CPU cores per process, for its DataLoader workers (default: 10)")
    group.add_argument("--slurm-extra", type=json_object, default="{}",
                       help="JSON object of extra submitit parameters")


class Requeueable:
    """``fn(*args)`` as a submitit job that requeues itself (and so resumes) on timeout."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __call__(self):
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return self.fn(*self.args)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(Requeueable(self.fn, *self.args))


def submit(call: Requeueable, args: argparse.Namespace, folder: str | Path, name: str):
    """Submit ``call`` with the ``add_slurm_args`` options; returns the submitit job."""
    import submitit

    path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), path) if p)
    # a 300-epoch run outlives many time limits: up to 30 requeues on timeout
    executor = submitit.AutoExecutor(folder=str(Path(folder) / "slurm"), slurm_max_num_timeout=30)
    executor.update_parameters(
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task, timeout_min=args.timeout_min,
        # the requeue signal comes 120 s before the limit: time for the job to stop and
        # requeue itself (it resumes from its last checkpoint)
        slurm_partition=args.partition, name=name, slurm_signal_delay_s=120,
        **args.slurm_extra)
    job = executor.submit(call)
    print(f"submitted job {job.job_id}; logs in {Path(folder) / 'slurm'}")
    return job
