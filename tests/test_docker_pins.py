"""docker/: the image's pins are the project's pins (no Docker engine is needed to check it).

The Dockerfile builds its environment with tools/setup_env.sh and tools/install_detectron2.sh,
so the Python pins come from requirements/*.txt by construction; these tests check the pins
the Dockerfile and the compose file state themselves (CUDA image, torch, torchvision, mmcv,
mmseg, the detectron2 commit, the image tag) against requirements/*.txt, setup_env.sh and
transfer/detectron2_pin.py, from the files alone (whatever torch is installed here),
and that a disagreement is reported; then the compose file's volumes, GPU access and commands."""
import re
from pathlib import Path

import pytest
import yaml
from conftest import load_tool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
COMPOSE = (ROOT / "docker" / "compose.yaml").read_text()

# torch pin -> the CUDA its Linux wheels on PyPI are built with (what setup_env.sh installs).
# A new torch pin needs its entry here; the Dockerfile's CUDA image must then follow it.
PYPI_TORCH_CUDA = {"2.9.1": "12.8"}


def arg(name: str, dockerfile: str = DOCKERFILE) -> str:
    found = re.search(rf"^ARG {name}=(\S+)$", dockerfile, re.M)
    assert found, f"docker/Dockerfile has no 'ARG {name}=...'"
    return found.group(1).strip('"')


def pin(requirements: str, package: str) -> str:
    text = (ROOT / "requirements" / requirements).read_text()
    found = re.search(rf"^{re.escape(package)}==(\S+)", text, re.M)
    assert found, f"requirements/{requirements} does not pin {package}"
    return found.group(1)


def package_commit() -> str:
    """DETECTRON2_COMMIT as tools/install_detectron2.sh reads it: from the file's text (no
    import, so the check does not depend on what is installed)."""
    text = (ROOT / "transfer" / "detectron2_pin.py").read_text()
    found = re.search(r'^DETECTRON2_COMMIT = "([0-9a-f]{40})"', text, re.M)
    assert found, "transfer/detectron2_pin.py has no DETECTRON2_COMMIT = \"<40 hex>\""
    return found.group(1)


def pin_problems(dockerfile: str, compose: str) -> list[str]:
    """Every pin of the Dockerfile / compose text that disagrees with the project's files."""
    setup = (ROOT / "tools" / "setup_env.sh").read_text()
    torch = pin("pretrain.txt", "torch")
    cuda = PYPI_TORCH_CUDA.get(torch)
    expected = {
        "TORCH_VERSION": torch, "TORCHVISION_VERSION": pin("pretrain.txt", "torchvision"),
        "MMSEG_VERSION": pin("transfer.txt", "mmsegmentation"),
        "MMCV_VERSION": re.search(r"^mmcv_version=(\S+)$", setup, re.M).group(1),
        "DETECTRON2_COMMIT": package_commit(), "CUDA_VERSION": cuda}
    problems = [] if cuda else [f"torch {torch} (requirements/pretrain.txt) has no CUDA in "
                                "PYPI_TORCH_CUDA: add the CUDA of its PyPI wheels"]
    problems += [f"ARG {name}={arg(name, dockerfile)}, the project pins {value}"
                 for name, value in expected.items() if arg(name, dockerfile) != value]
    image = arg("CUDA_IMAGE", dockerfile)
    found = re.fullmatch(r"nvidia/cuda:(\d+\.\d+)\.\d+-cudnn-devel-ubuntu\d+\.\d+", image)
    if not found:
        problems.append(f"CUDA_IMAGE {image} is not a pinned nvidia/cuda x.y.z-cudnn-devel tag")
    elif found.group(1) != cuda:
        problems.append(f"CUDA_IMAGE {image} is CUDA {found.group(1)}; torch {torch} is {cuda}")
    tag = f"vicregl-suite:torch{torch}-cu{(cuda or '').replace('.', '')}"
    if f"image: {tag}\n" not in compose:
        problems.append(f"docker/compose.yaml does not name the image {tag}")
    return problems


def test_docker_pins_match_the_project():
    assert pin_problems(DOCKERFILE, COMPOSE) == []
    # the CUDA image is the default base; the CPU variant only swaps it (see below)
    assert "ARG BASE_IMAGE=${CUDA_IMAGE}\nFROM ${BASE_IMAGE}\n" in DOCKERFILE


def test_a_disagreeing_pin_is_reported():
    torch, commit = pin("pretrain.txt", "torch"), package_commit()
    cuda = PYPI_TORCH_CUDA[torch]
    edits = {f"ARG TORCH_VERSION={torch}\n": "ARG TORCH_VERSION=0.0.1\n",
             f"ARG DETECTRON2_COMMIT={commit}\n": f"ARG DETECTRON2_COMMIT={'0' * 40}\n",
             f"nvidia/cuda:{cuda}.": "nvidia/cuda:11.0."}
    dockerfile = DOCKERFILE
    for old, new in edits.items():
        assert old in dockerfile, old
        dockerfile = dockerfile.replace(old, new)
    tag = f"vicregl-suite:torch{torch}-cu{cuda.replace('.', '')}"
    problems = pin_problems(dockerfile, COMPOSE.replace(tag, tag + "0"))
    assert problems == [
        f"ARG TORCH_VERSION=0.0.1, the project pins {torch}",
        f"ARG DETECTRON2_COMMIT={'0' * 40}, the project pins {commit}",
        f"CUDA_IMAGE {arg('CUDA_IMAGE', dockerfile)} is CUDA 11.0; torch {torch} is {cuda}",
        f"docker/compose.yaml does not name the image {tag}"]


def test_the_image_installs_the_package_commit_with_the_project_script():
    assert "bash tools/install_detectron2.sh /opt/venv" in DOCKERFILE
    assert "COPY transfer/detectron2_pin.py transfer/detectron2_pin.py" in DOCKERFILE
    script = (ROOT / "tools" / "install_detectron2.sh").read_text()
    assert "transfer/detectron2_pin.py" in script and "DETECTRON2_COMMIT = " in script


def test_installed_torch_is_the_cuda_build_the_table_says():
    """Where this machine has the pinned torch, its CUDA is the one PYPI_TORCH_CUDA states."""
    torch = pytest.importorskip("torch")
    version = torch.__version__.split("+")[0]
    if version != pin("pretrain.txt", "torch") or not torch.version.cuda:
        pytest.skip(f"installed torch {torch.__version__} (CUDA {torch.version.cuda}) is not "
                    "the pinned CUDA build; the pins are checked from the files above")
    assert torch.version.cuda == PYPI_TORCH_CUDA[version]


def test_environment_is_built_by_the_project_scripts_and_checked():
    assert 'bash tools/setup_env.sh \\\n' in DOCKERFILE
    assert "COPY requirements/ requirements/" in DOCKERFILE
    # CUDA ops without a GPU at build time, for the listed architectures
    assert "FORCE_CUDA=1" in DOCKERFILE
    archs = arg("TORCH_CUDA_ARCH_LIST").split(";")
    assert {"7.0", "8.0", "8.6", "9.0+PTX"} <= set(archs)
    # the build fails unless the installed versions are the pinned ones
    for name in ("TORCH_VERSION", "TORCHVISION_VERSION", "CUDA_VERSION", "MMCV_VERSION",
                 "MMSEG_VERSION"):
        assert "${" + name + "}" in DOCKERFILE.split("bash tools/setup_env.sh \\\n", 1)[1]
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


def test_the_cpu_variant_is_the_same_dockerfile_with_two_build_arguments():
    """tools/docker_check.sh builds docker/Dockerfile itself, changing only the base image and
    the ops; the OPS switch decides FORCE_CUDA and nothing else."""
    assert sorted(p.name for p in (ROOT / "docker").iterdir()) == [
        "Dockerfile", "Dockerfile.dockerignore", "compose.yaml"]
    assert arg("OPS") == "cuda"
    check = (ROOT / "tools" / "docker_check.sh").read_text()
    assert '-f "$root/docker/Dockerfile"' in check
    build_args = re.findall(r"--build-arg \"?(\w+)=", check)
    assert set(build_args) == {"BASE_IMAGE", "OPS", "MAX_JOBS", "DETECTRON2_SRC"}
    assert "--build-arg OPS=cpu" in check
    uses = [line for line in DOCKERFILE.splitlines() if "${OPS}" in line and "FORCE_CUDA" in line]
    assert len(uses) == 2 and all('if [ "${OPS}" = cuda ]; then export FORCE_CUDA=1; fi' in u
                                  for u in uses)


def test_the_image_runs_as_a_non_root_user():
    user_lines = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert user_lines == ["vicregl"], user_lines
    after = DOCKERFILE.split("USER vicregl", 1)[1]
    assert "RUN " not in after  # nothing is built as the user: the environment stays root's
    assert int(arg("USER_UID")) >= 1000
    assert '--uid "${USER_UID}"' in DOCKERFILE and "COPY --chown=vicregl:vicregl . ." in DOCKERFILE
    check = (ROOT / "tools" / "docker_check.sh").read_text()
    assert "ARG USER_UID=" in check and '--user "$uid:$uid"' in check


def test_docker_check_refuses_an_unknown_check_before_doing_anything(tmp_path):
    import subprocess
    run = subprocess.run(["bash", str(ROOT / "tools" / "docker_check.sh")], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "CHECKS": "test-fast lint",
                                         "VICREGL_DOCKER_OUT": str(tmp_path / "out")})
    assert run.returncode == 1
    assert "CHECKS: unknown check 'lint' (test-fast, demo)" in run.stderr
    assert not (tmp_path / "out").exists()


def test_docker_check_is_documented():
    for doc in ("README.md", "docs/suites.md"):
        assert "bash tools/docker_check.sh" in (ROOT / doc).read_text(), doc
