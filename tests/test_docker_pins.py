"""docker/: the image's pins are the project's pins (no Docker engine is needed to check it).

The Dockerfile builds its environment with tools/setup_env.sh and tools/install_detectron2.sh,
so the Python pins come from requirements/*.txt by construction; these tests check the pins
the Dockerfile states itself (CUDA image, torch, mmcv, mmseg, the detectron2 commit) against
requirements/*.txt, setup_env.sh, transfer/detectron2_side/__init__.py and the installed torch,
and the compose file's volumes, GPU access and commands."""
import re
from pathlib import Path

import pytest
import yaml
from conftest import load_tool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def arg(name: str) -> str:
    found = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    assert found, f"docker/Dockerfile has no 'ARG {name}=...'"
    return found.group(1).strip('"')


def pin(requirements: str, package: str) -> str:
    text = (ROOT / "requirements" / requirements).read_text()
    found = re.search(rf"^{re.escape(package)}==(\S+)", text, re.M)
    assert found, f"requirements/{requirements} does not pin {package}"
    return found.group(1)


def test_python_pins_match_requirements():
    assert arg("TORCH_VERSION") == pin("pretrain.txt", "torch")
    assert arg("TORCHVISION_VERSION") == pin("pretrain.txt", "torchvision")
    assert arg("MMSEG_VERSION") == pin("transfer.txt", "mmsegmentation")
    setup = (ROOT / "tools" / "setup_env.sh").read_text()
    assert arg("MMCV_VERSION") == re.search(r"^mmcv_version=(\S+)$", setup, re.M).group(1)


def test_detectron2_commit_matches_the_package():
    from transfer.detectron2_side import DETECTRON2_COMMIT

    assert arg("DETECTRON2_COMMIT") == DETECTRON2_COMMIT
    assert re.fullmatch(r"[0-9a-f]{40}", DETECTRON2_COMMIT)
    # the image installs it with the project's script, which reads the same file
    assert "bash tools/install_detectron2.sh /opt/venv" in DOCKERFILE
    assert "COPY transfer/detectron2_side/__init__.py" in DOCKERFILE


def test_cuda_image_matches_the_torch_build():
    """The CUDA of the devel image (nvcc for mmcv's and detectron2's ops) is the CUDA torch was
    built with: torch 2.9.1 from PyPI is a CUDA 12.8 build."""
    image = arg("CUDA_IMAGE")
    found = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn-devel-ubuntu(\d+\.\d+)", image)
    assert found, f"CUDA_IMAGE {image} is not a pinned nvidia/cuda x.y.z-cudnn-devel tag"
    assert f"{found.group(1)}.{found.group(2)}" == arg("CUDA_VERSION") == "12.8"
    assert "FROM ${CUDA_IMAGE}" in DOCKERFILE
    torch = pytest.importorskip("torch")
    if torch.__version__.split("+")[0] == arg("TORCH_VERSION") and torch.version.cuda:
        assert torch.version.cuda == arg("CUDA_VERSION")  # this machine's wheel, same pin


def test_environment_is_built_by_the_project_scripts_and_checked():
    assert "RUN bash tools/setup_env.sh" in DOCKERFILE
    assert "COPY requirements/ requirements/" in DOCKERFILE
    # CUDA ops without a GPU at build time, for the listed architectures
    assert "FORCE_CUDA=1" in DOCKERFILE
    archs = arg("TORCH_CUDA_ARCH_LIST").split(";")
    assert {"7.0", "8.0", "8.6", "9.0+PTX"} <= set(archs)
    # the build fails unless the installed versions are the pinned ones
    for name in ("TORCH_VERSION", "TORCHVISION_VERSION", "CUDA_VERSION", "MMCV_VERSION",
                 "MMSEG_VERSION"):
        assert "${" + name + "}" in DOCKERFILE.split("RUN bash tools/setup_env.sh", 1)[1]
    assert "VICREGL_VENV=/opt/venv" in DOCKERFILE and "PATH=/opt/venv/bin" in DOCKERFILE


def test_compose_runs_a_suite_with_gpus_and_volumes():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    suite, demo = compose["services"]["suite"], compose["services"]["demo"]
    assert suite["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    # "${VAR:-host}:/container[:ro]"
    mounts = {re.sub(r":ro$", "", v).rsplit(":", 1)[1]: v for v in suite["volumes"]}
    assert set(mounts) == {"/data", "/checkpoints", "/work_dirs"}
    assert mounts["/data"].endswith(":ro") and not mounts["/work_dirs"].endswith(":ro")
    device = suite["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    command = suite["command"]
    assert command[:3] == ["python", "tools/run_suite.py", "configs/suites/vicregl_resnet50.yaml"]
    assert (ROOT / command[2]).is_file()
    assert command[command.index("--data-root") + 1] == "/data"
    assert "checkpoints=/checkpoints" in command
    assert command[command.index("--work-dir") + 1].startswith("/work_dirs/")
    assert demo["command"][:2] == ["python", "tools/demo.py"] and "deploy" not in demo



def test_compose_commands_parse_and_are_documented():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    args = load_tool("run_suite").parse_args(compose["services"]["suite"]["command"][2:])
    assert args.gpus == 8 and args.set == ["checkpoints=/checkpoints"]
    demo = load_tool("demo").parse_args(compose["services"]["demo"]["command"][2:])
    assert str(demo.out) == "/work_dirs/demo"
    documented = (ROOT / "docs" / "suites.md").read_text()
    for command in ("docker compose -f docker/compose.yaml build",
                    "docker compose -f docker/compose.yaml run --rm suite",
                    "docker compose -f docker/compose.yaml run --rm demo"):
        assert command in documented
