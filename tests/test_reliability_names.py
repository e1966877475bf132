"""Names used as paths (docs/reliability.md, "Suite names"): suite, backbone and experiment
names become folders of the work dir, so each must be one plain path component, checked when
the suite is loaded (--dry-run included), and two of them must never share a folder."""
import pytest
import yaml

from conftest import load_tool
from transfer.suite.spec import SuiteError, load_suite

BAD_NAMES = {"parent": "../x", "deep_parent": "../../../../tmp/escaped", "absolute": "/abs",
             "slash": "a/b", "long": "n" * 300, "dot": ".", "dotdot": "..", "glob": "r50*",
             "space": "a b", "empty": "", "hidden": ".x", "newline": "a\nb"}


def suite_dict(name="names", backbone="bb", experiment="exp") -> dict:
    command = ["{python}", "-c", "pass", "{row_dir}"]
    return {"name": name,
            "backbones": {backbone: {"arch": "resnet18", "source": "random:0"}},
            "experiments": {experiment: {"task": "command", "command": command,
                                         "metric": "top1", "gpus": 0}}}


def write(tmp_path, data: dict, text: str | None = None):
    path = tmp_path / "suite.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("section", ["name", "backbone", "experiment"])
@pytest.mark.parametrize("kind", list(BAD_NAMES))
def test_a_name_that_is_not_one_plain_folder_name_is_refused_at_load(kind, section, tmp_path):
    bad = BAD_NAMES[kind]
    path = write(tmp_path, suite_dict(**{section: bad}))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "is not a usable name" in message
    assert (repr(bad) if len(bad) < 80 else "(300 characters)") in message
    assert "no '/', no '..'" in message


def test_dry_run_refuses_a_name_that_escapes_the_work_dir(tmp_path, capsys):
    path = write(tmp_path, suite_dict(backbone="../../escaped"))
    work = tmp_path / "deep" / "work"
    with pytest.raises(SystemExit) as info:
        load_tool("run_suite").main([str(path), "--work-dir", str(work), "--dry-run"])
    assert info.value.code == 2  # a usage error, as argparse's
    assert "backbones: '../../escaped' is not a usable name" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists()


def test_names_differing_only_in_case_are_refused(tmp_path):
    data = suite_dict()
    data["backbones"]["R50"] = data["backbones"]["r50"] = data["backbones"].pop("bb")
    with pytest.raises(SuiteError, match="backbones.R50 and backbones.r50 differ only in "
                                         "letter case; they would share one folder"):
        load_suite(write(tmp_path, data))


def test_a_key_written_twice_is_refused(tmp_path):
    """YAML keeps the second of two equal keys: a copied entry silently replaced the first."""
    text = yaml.safe_dump(suite_dict()).replace(
        "backbones:\n", "backbones:\n  bb:\n    arch: resnet50\n    source: random:1\n")
    with pytest.raises(SuiteError, match=r"key\(s\) written twice in one mapping: 'bb' "
                                         r"\(line \d+\)"):
        load_suite(write(tmp_path, {}, text))


def test_plain_names_still_load(tmp_path):
    suite = load_suite(write(tmp_path, suite_dict("vicregl_r50-2.x", "ours_r50_alpha0.75",
                                                  "voc12aug_linear")))
    assert suite.name == "vicregl_r50-2.x" and list(suite.backbones) == ["ours_r50_alpha0.75"]
