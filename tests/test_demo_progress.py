"""transfer/suite/demo_progress.py: the demo's overall ETA from measured step times and priors."""
import pytest

from transfer.suite.demo_progress import Timing, eta_seconds, expected_durations, progress_line


def test_measured_times_replace_the_priors_per_kind():
    timings = [Timing("segmentation", "finished", wall=20.0),
               Timing("segmentation", "finished", wall=40.0),
               Timing("segmentation", "todo"), Timing("pretrain", "running", elapsed=10.0)]
    expected = expected_durations(timings, {"segmentation": 5.0, "pretrain": 100.0})
    assert expected == {"segmentation": 30.0, "pretrain": 100.0}


def test_eta_shares_the_work_over_jobs_but_waits_for_the_longest_step():
    expected = {"pretrain": 100.0, "segmentation": 10.0}
    timings = [Timing("pretrain", "running", elapsed=40.0)] + [Timing("segmentation", "todo")] * 4
    # left: 60 + 4 x 10 = 100 over 2 jobs = 50, but the pretraining alone needs 60
    assert eta_seconds(timings, expected, jobs=2) == pytest.approx(60.0)
    assert eta_seconds(timings, expected, jobs=1) == pytest.approx(100.0)
    # an overrun step keeps a tenth of its expectation; finished / done steps count nothing
    late = [Timing("pretrain", "running", elapsed=500.0), Timing("recalibrate", "done"),
            Timing("segmentation", "finished", wall=3.0)]
    assert eta_seconds(late, expected, jobs=2) == pytest.approx(10.0)
    assert eta_seconds([], expected, jobs=2) == 0.0


def test_progress_line_counts_done_steps_and_names_running_ones():
    timings = [Timing("recalibrate", "finished", wall=5.0), Timing("detection", "done"),
               Timing("segmentation", "running", elapsed=5.0), Timing("segmentation", "todo")]
    line = progress_line(timings, ["random/voc_linear/seed0"], {"segmentation": 20.0}, 2, 75.0)
    assert line == ("[demo] 2/4 steps done, running: random/voc_linear/seed0; elapsed 1m15s, "
                    "ETA ~0m20s")
