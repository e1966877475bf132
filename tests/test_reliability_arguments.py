"""Tracebacks where a message was due (docs/reliability.md, "Configs and arguments").

A bad config value, option or suite string must stop the tool with one line naming the key
or option and what is expected, exit status 2 (argparse's), before any work: no traceback, no
folder created.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"
NO_DATA = ["data.kind=imagefolder", "data.root=/nonexistent/imagenet"]


def usage_error(capsys, tool: str, argv: list[str]) -> str:
    """Run ``tool.main(argv)`` here; it must exit 2 with its message on stderr's last line
    (argparse's usage lines may come before it). Returns that line."""
    with pytest.raises(SystemExit) as info:
        load_tool(tool).main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, (info.value.code, err)
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# ---- pretraining config values ------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("run.seed=4294967296", "run.seed = 4294967296: expected an integer in [0, 4294967295]"),
    ("run.seed=99999999999999999999", "run.seed = 99999999999999999999: expected an integer "
                                      "in [0, 4294967295]"),
    ("optim.base_lr=.inf", "optim.base_lr = inf: expected a finite number > 0.0"),
    ("optim.base_lr=.nan", "optim.base_lr = nan: expected a finite number > 0.0"),
    ("loss.inv_coeff=.inf", "loss.inv_coeff = inf: expected a finite number >= 0.0"),
    ("optim.weight_decay=-.inf", "optim.weight_decay = -inf: expected a finite number >= 0.0"),
    ("optim.end_lr_ratio=.inf", "optim.end_lr_ratio = inf: expected a finite number >= 0.0"),
])
def test_pretrain_config_values_beyond_what_runs(override, expected, capsys, tmp_path):
    """run.seed=2**32 ended in numpy's 'Seed must be between 0 and 2**32 - 1' traceback after
    config.json was written; optim.base_lr=.inf passed the rule that printed '(0.0, inf)'."""
    out = tmp_path / "run"
    line = usage_error(capsys, "pretrain", ["--config", str(SMOKE), override,
                                            f"run.output_dir={out}", *NO_DATA])
    assert line.startswith("error: recipe vicregl_convnext_mini") and line.endswith(expected)
    assert not out.exists()


def test_the_largest_seed_is_accepted():
    from pretrain.config import check_pretrain_config, load_config

    check_pretrain_config(load_config(SMOKE, ["run.seed=4294967295"]))


@pytest.mark.parametrize("argv, expected", [
    (["--slurm", "--slurm-extra", "{"], "argument --slurm-extra: '{': expected a JSON object"),
    (["--slurm", "--slurm-extra", "[1]"],
     "expected a JSON object, e.g. '{\"slurm_constraint\": \"volta32gb\"}', not a JSON list"),
    (["--slurm", "--gpus-per-node", "0"], "argument --gpus-per-node: 0: expected an integer >= 1"),
    (["--slurm", "--nodes", "-1"], "argument --nodes: -1: expected an integer >= 1"),
])
def test_pretrain_slurm_options(argv, expected, capsys):
    """A bad --slurm-extra was a JSONDecodeError traceback once the config had been checked;
    --gpus-per-node 0 a ZeroDivisionError."""
    assert expected in usage_error(capsys, "pretrain", ["--config", str(SMOKE), *argv])


@pytest.mark.slow
def test_a_real_process_exits_2_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "tools/pretrain.py", "--config", str(SMOKE),
                             "run.seed=4294967296", f"run.output_dir={tmp_path / 'run'}"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: recipe vicregl_convnext_mini_2x96+2x64_cpu_smoke: run.seed = 4294967296: "
        "expected an integer in [0, 4294967295]"]
    assert not (tmp_path / "run").exists()


# ---- backbone sources and evaluation options ------------------------------------------------
@pytest.mark.parametrize("source", ["random:abc", "random:", "random:-1", "random: 3",
                                    "random:99999999999999999999", "random:4294967296"])
def test_malformed_random_sources(source, capsys, tmp_path):
    """random:abc ended in "invalid literal for int() with base 10: 'abc'", random:999...
    in 'Overflow when unpacking long long'; 'random: 3' and 'random:-1' were taken."""
    expected = (f"argument --source: backbone source {source!r}: expected 'random' or "
                "'random:SEED' with SEED an integer in [0, 4294967295], or a checkpoint file")
    assert expected in usage_error(capsys, "convert", [
        "--framework", "mmseg", "--arch", "resnet18", "--source", source, "--out",
        str(tmp_path / "o.pth")])
    assert "argument --backbone: backbone source" in usage_error(capsys, "cls_eval", [
        "--arch", "resnet18", "--backbone", source, "--work-dir", str(tmp_path / "w")])
    from transfer.weights import read_backbone

    with pytest.raises(ValueError, match="backbone source"):
        read_backbone(source, "resnet18")
    assert not (tmp_path / "o.pth").exists() and not (tmp_path / "w").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--k", "-1"], "argument --k: -1: expected an integer >= 1"),
    (["--k", "ten"], "argument --k: 'ten': expected an integer >= 1"),
    (["--epochs", "0"], "argument --epochs: 0: expected an integer >= 1"),
    (["--workers", "-1"], "argument --workers: -1: expected an integer >= 0"),
    (["--image-size", "0"], "argument --image-size: 0: expected an integer >= 32"),
    (["--seed", "4294967296"], "argument --seed: 4294967296: expected an integer in "
                               "[0, 4294967295]"),
    (["--seed", "-1"], "argument --seed: -1: expected an integer in [0, 4294967295]"),
    (["--seeds", "0", "-2"], "argument --seeds: -2: expected an integer in [0, 4294967295]"),
    (["--slurm", "--slurm-extra", "constraint=volta"], "argument --slurm-extra: "
                                                       "'constraint=volta': expected a JSON"),
])
def test_cls_eval_options(argv, expected, capsys, tmp_path):
    """--k -1 was torch's 'selected index k out of range' traceback after the features were
    computed; --epochs 0 a max() of an empty history."""
    assert expected in usage_error(capsys, "cls_eval", [
        "--arch", "convnext_mini", "--backbone", "random:0", "--data-root", str(tmp_path),
        "--work-dir", str(tmp_path / "w"), *argv])
    assert not (tmp_path / "w").exists()


# ---- suite files ---------------------------------------------------------------------------
SUITE = """\
name: probe
variables: {{ckpt: "{variable}"}}
backbones:
  rnd: {{arch: resnet18, source: "{source}"}}
experiments:
  cmd:
    task: command
    command: ["{{python}}", "-c", "{argument}"]
    metric: top1
"""


def suite_error(capsys, tmp_path, variable="ckpts", source="random:0", argument="pass",
                *extra) -> str:
    suite = tmp_path / "probe.yaml"
    suite.write_text(SUITE.format(variable=variable, source=source, argument=argument))
    line = usage_error(capsys, "run_suite", [str(suite), "--work-dir", str(tmp_path / "w"),
                                             "--dry-run", *extra])
    assert not (tmp_path / "w").exists()
    return line


@pytest.mark.parametrize("argument, expected", [
    ("print({1)", "'print({1)': expected '}' before end of string; expected {name} "
                  "placeholders only"),
    ("print(1})", "'print(1})': Single '}' encountered in format string"),
    ("{seed:>10}", "'{seed:>10}': placeholder {seed:>10}: expected {name} placeholders only"),
    ("{arch!r}", "placeholder {arch!r}: expected {name} placeholders only"),
    ("{arch.upper}", "placeholder {arch.upper}: expected {name} placeholders only"),
    ("{}", "placeholder {}: expected {name} placeholders only"),
    ("{nothere}", "unknown placeholder(s) {nothere} in '{nothere}'; known here: arch,"),
])
def test_suite_strings(argument, expected, capsys, tmp_path):
    """A lone brace was str.format's ValueError traceback; a format spec or conversion was
    applied silently ('{seed:>10}' became '         0')."""
    line = suite_error(capsys, tmp_path, argument=argument)
    assert line.startswith(f"error: {tmp_path / 'probe.yaml'}: experiments.cmd")
    assert expected in line


def test_literal_braces_still_work(capsys, tmp_path):
    suite = tmp_path / "probe.yaml"
    suite.write_text(SUITE.format(variable="ckpts", source="random:0",
                                  argument="print({{1: 2}}, {seed})"))
    assert load_tool("run_suite").main([str(suite), "--work-dir", str(tmp_path / "w"),
                                        "--dry-run"]) == 0
    assert "print({1: 2}, 0)" in capsys.readouterr().out


def test_a_variable_naming_a_placeholder(capsys, tmp_path):
    """Such a variable was substituted as written: the step got '{nothere}/r.pth'."""
    line = suite_error(capsys, tmp_path, variable="{nothere}", source="{ckpt}/r.pth")
    assert line.endswith("variables.ckpt = '{nothere}': expected a plain value; variables are "
                         "substituted as written, placeholders inside them are not filled (use "
                         "the placeholder in the string that uses the variable)")
    line = suite_error(capsys, tmp_path, "ckpts", "{ckpt}/r.pth", "pass", "--set",
                       "ckpt={root}/x")
    assert "--set ckpt = '{root}/x': expected a plain value" in line


def test_a_random_source_in_a_suite(capsys, tmp_path):
    line = suite_error(capsys, tmp_path, source="random:abc")
    assert "backbones.rnd.source: backbone source 'random:abc': expected 'random' or" in line


@pytest.mark.parametrize("argv, expected", [
    (["--slurm-extra", "{"], "argument --slurm-extra: '{': expected a JSON object"),
    (["--jobs", "0"], "argument --jobs: 0: expected an integer >= 1"),
    (["--gpus", "-1"], "argument --gpus: -1: expected an integer >= 0"),
    (["--set", "ckpt"], "error: --set 'ckpt': expected KEY=VALUE"),
])
def test_run_suite_options(argv, expected, capsys, tmp_path):
    assert expected in suite_error(capsys, tmp_path, "ckpts", "random:0", "pass", *argv)


def test_every_shipped_suite_still_loads():
    from transfer.suite.plan import make_plan
    from transfer.suite.spec import load_suite

    for path in sorted((ROOT / "configs/suites").glob("*.yaml")):
        if path.name != "paper_results.yaml":
            make_plan(load_suite(path), "/tmp/never_written", Path("data"))
