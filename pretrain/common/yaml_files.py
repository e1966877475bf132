"""Reading the project's YAML files (recipes, suite files) with errors that name the file."""
from pathlib import Path

import yaml


def read_yaml_mapping(path: Path, what: str, folder: str, sections: str) -> dict:
    """The YAML mapping in ``path`` (a recipe, a suite file); ``FileNotFoundError`` /
    ``ValueError`` / ``TypeError`` name ``what``, the path and what was expected."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist (see {folder})")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise TypeError(f"{what} {path}: expected a mapping of sections ({sections}), got a "
                        f"{type(loaded).__name__}")
    return loaded
