"""Command-line values checked where they are parsed: argparse ``type=`` functions that turn a
meaningless value into argparse's own error (``PROG: error: argument --k: 0: expected an
integer >= 1``, exit status 2) before any work, and ``usage_error`` for the same kind of error
found after parsing (a config key, a suite file). Standard library only.
"""
import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import NoReturn

# numpy's legacy seeding (np.random.seed, RandomState) takes seeds in [0, 2**32 - 1]
SEED_LIMIT = 2**32


class UsageError(SystemExit):
    """A bad argument or config value, found before any work: exit status 2, as for
    argparse's own errors; ``str()`` is the message. Raised by ``usage_error``, which prints
    the message first (SystemExit prints nothing when its code is a number)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = 2


def usage_error(message: str) -> NoReturn:
    """Print ``message`` (one line) to stderr and exit with status 2."""
    print(message, file=sys.stderr)
    raise UsageError(message)


def _fail(text: str, expected: str):
    raise argparse.ArgumentTypeError(f"{text}: expected {expected}")


def int_at_least(low: int):
    """``type=`` for an integer >= ``low``."""
    expected = f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            _fail(repr(text), expected)
        if value < low:
            _fail(str(value), expected)
        return value

    parse.__name__ = expected  # argparse names the type in some messages
    return parse


def seed(text: str) -> int:
    """``type=`` for a random seed: an integer in [0, 2**32 - 1]."""
    expected = f"an integer in [0, {SEED_LIMIT - 1}] (numpy seeds are 32-bit)"
    try:
        value = int(text)
    except ValueError:
        _fail(repr(text), expected)
    if not 0 <= value < SEED_LIMIT:
        _fail(str(value), expected)
    return value


def finite_number(low: float | None = None, high: float | None = None,
                  low_open: bool = False, high_open: bool = False):
    """``type=`` for a finite float within the bounds (None: unbounded on that side)."""
    if low is not None and high is not None:
        expected = (f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
                    f"{')' if high_open else ']'}")
    elif low is not None:
        expected = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        expected = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        expected = "a finite number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            _fail(repr(text), expected)
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            _fail(text, expected)
        return value

    parse.__name__ = expected
    return parse


def json_object(text: str) -> dict:
    """``type=`` for a JSON object (extra keyword arguments, e.g. submitit's)."""
    expected = "a JSON object, e.g. '{\"slurm_constraint\": \"volta32gb\"}'"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(repr(text), f"{expected} ({exc})")
    if not isinstance(value, dict):
        _fail(repr(text), f"{expected}, not a JSON {type(value).__name__}")
    return value


def random_seed(source: str | Path, default: int = 0) -> int | None:
    """The seed of a ``random`` (``default``) or ``random:SEED`` source; None for a file.
    ``ValueError`` names the source when ``random:`` is not followed by a 32-bit seed."""
    source = str(source)
    if source != "random" and not source.startswith("random:"):
        return None
    found = re.fullmatch(r"random(?::([0-9]+))?", source)
    if not found or (found[1] is not None and int(found[1]) >= SEED_LIMIT):
        raise ValueError(f"backbone source {source!r}: expected 'random' or 'random:SEED' with "
                         f"SEED an integer in [0, {SEED_LIMIT - 1}], or a checkpoint file")
    return default if found[1] is None else int(found[1])


def backbone_source(text: str) -> str:
    """argparse ``type=`` of ``--backbone`` / ``--source``: a malformed ``random:SEED`` is
    argparse's error (exit 2); a file is read later (``transfer.weights.read_backbone``)."""
    try:
        random_seed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_backbone_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--backbone SOURCE``: the one way every transfer tool (seg_train, det_train,
    dense_nn_eval, cls_eval, recalibrate_bn) is given a backbone, any source
    ``transfer.weights.read_backbone`` reads, checked by ``backbone_source``."""
    parser.add_argument(
        "--backbone", required=required, type=backbone_source, metavar="SOURCE",
        help="backbone weights, read strictly as the architecture the run builds: our "
             "backbone.pth or checkpoint.pth, an official VICRegL file (backbone or full "
             "checkpoint), a torchvision ResNet state dict, or random:SEED (the random-init "
             "floor)")
