"""transfer/datasets.py owns the dataset names and folders: the segmentation configs (which
cannot import it) agree with it, and it imports neither torch nor a framework."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from transfer.datasets import SEGMENTATION, cityscapes_annotation, coco_split

ROOT = Path(__file__).resolve().parent.parent
DATASET_CONFIGS = sorted((ROOT / "configs" / "segmentation" / "_base_" / "datasets").glob("*.py"))


def declared(path: Path) -> dict:
    """The constant top-level assignments of an mmengine config file, without mmengine."""
    values = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = node.value.value
    return values


def test_the_dataset_configs_exist():
    assert {p.stem for p in DATASET_CONFIGS} >= {"voc12aug", "cityscapes", "ade20k"}


@pytest.mark.parametrize("path", DATASET_CONFIGS, ids=[p.stem for p in DATASET_CONFIGS])
def test_config_declares_the_owners_name_and_folder(path):
    found = declared(path)
    assert found["dataset_name"] in SEGMENTATION, f"{path.name}: unknown dataset_name"
    assert found["dataset_subdir"] == SEGMENTATION[found["dataset_name"]].subdir
    # the header comment names the same folder a user will find under the data root
    assert f"ROOT/{found['dataset_subdir']}" in path.read_text() or "data_root" not in \
        path.read_text()


def test_every_owned_dataset_has_a_config():
    names = {declared(p)["dataset_name"] for p in DATASET_CONFIGS}
    assert names == set(SEGMENTATION)


def test_paths_built_from_the_owner(tmp_path):
    image = tmp_path / "cityscapes/leftImg8bit/val/lindau/lindau_000001_000019_leftImg8bit.png"
    assert cityscapes_annotation(tmp_path / "cityscapes", "val", image) == (
        tmp_path / "cityscapes/gtFine/val/lindau/lindau_000001_000019_gtFine_labelTrainIds.png")
    assert coco_split("val") == ("coco/val2017", "coco/annotations/instances_val2017.json")


def test_the_owner_imports_no_torch_and_no_framework():
    code = ("import sys; import transfer.datasets; "
            "bad = {'torch', 'numpy', 'mmseg', 'mmengine', 'detectron2'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
