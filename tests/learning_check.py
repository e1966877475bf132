"""Does our pretraining learn? A short pretraining against random init, scored in process by
the suite's own evaluation functions (k-NN of transfer/evaluation/classification.py, dense
retrieval of transfer/evaluation/dense_retrieval.py) on synthetic scenes rendered in memory.

Used by tests/test_learning.py; run as a script to measure the seed spread the tests' margins
come from::

    python tests/learning_check.py --steps 300 --seeds 0 1 2 [loss.inv_coeff=0 ...]

Every backbone, random init included, gets its BatchNorm running statistics recomputed on
the same clean training scenes before it is scored (transfer/bn_recalibration.py): random init
would otherwise be scored with identity statistics.
"""
import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pretrain.backbones import build_backbone  # noqa: E402
from pretrain.synthetic import NUM_CLASSES, render_world_scene, semantic_map  # noqa: E402
from pretrain.transforms import MEAN, STD  # noqa: E402
from transfer.bn_recalibration import recalibrate_batchnorm  # noqa: E402
from transfer.evaluation.classification import knn_classify, topk_correct  # noqa: E402
from transfer.evaluation.dense_retrieval import (confusion, local_features,  # noqa: E402
                                                 memory_entries, predict)

RECIPE = ROOT / "configs" / "pretrain" / "vicregl_resnet_nano_2x64+2x32_25e_synthetic_cpu.yaml"
SIZE = 64


@dataclass
class Scenes:
    images: torch.Tensor  # (N, 3, S, S) normalised float
    labels: torch.Tensor  # (N,) image-level class
    maps: torch.Tensor  # (N, S, S) dense labels: 0 background, 1 + class inside objects


def scenes(world: str, count: int, seed: int) -> Scenes:
    rng = np.random.default_rng([seed, 7])
    images, labels, maps = [], [], []
    while len(images) < count:
        image, objects, label = render_world_scene(rng, SIZE, world)
        if label is None:
            continue
        images.append(torch.from_numpy(image).permute(2, 0, 1))
        labels.append(label)
        maps.append(torch.from_numpy(semantic_map(objects, SIZE, SIZE).astype(np.int64)))
    x = torch.stack(images).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return Scenes(x, torch.tensor(labels), torch.stack(maps))


@dataclass
class World:
    """The evaluation data, rendered once: the k-NN bank and queries (dominant world, the
    pretraining world's held-out scenes) and the dense memory and queries (mixed world)."""
    bank: Scenes
    queries: Scenes
    dense_memory: Scenes
    dense_queries: Scenes


def make_world(seed: int = 100) -> World:
    return World(scenes("dominant", 1000, seed), scenes("dominant", 300, seed + 1),
                 scenes("mixed", 150, seed + 2), scenes("mixed", 100, seed + 3))


def _batches(x: torch.Tensor, size: int = 200):
    return (x[i:i + size] for i in range(0, len(x), size))


@torch.no_grad()
def score(backbone: torch.nn.Module, world: World) -> dict[str, float]:
    """k-NN top-1 (k 20, T 0.07) and dense-retrieval mIoU (k 30, T 0.02, soft labels, last
    stage), percent; BatchNorm statistics recomputed on the bank's scenes first."""
    recalibrate_batchnorm(backbone, _batches(world.bank.images), torch.device("cpu"))
    backbone.eval()
    pooled = [torch.cat([backbone(x)[1] for x in _batches(s.images)])
              for s in (world.bank, world.queries)]
    scores = knn_classify(pooled[0], world.bank.labels, pooled[1], NUM_CLASSES)
    knn = 100.0 * topk_correct(scores, world.queries.labels, ks=(1,))[1] / len(pooled[1])
    classes = NUM_CLASSES + 1
    feats = local_features(backbone, world.dense_memory.images)
    entries = [memory_entries(f, m, classes, 255) for f, m in zip(feats, world.dense_memory.maps)]
    bank = torch.cat([e[0] for e in entries])
    bank_labels = torch.cat([e[1] for e in entries])
    conf = torch.zeros(classes, classes, dtype=torch.long)
    for f, m in zip(local_features(backbone, world.dense_queries.images), world.dense_queries.maps):
        conf += confusion(predict(f, bank, bank_labels, tuple(m.shape)), m, classes, 255)
    iou = conf.diag().double() / (conf.sum(0) + conf.sum(1) - conf.diag()).double()
    return {"knn": round(knn, 2), "dense": round(100.0 * float(iou.nanmean()), 2)}


def pretrain(out: Path, steps: int, seed: int, overrides: list[str] = ()) -> torch.nn.Module:
    """``steps`` of the demo recipe on 2000 in-memory dominant-world scenes (the schedule of a
    ``steps``-long run: warm-up over its first tenth; ``steps`` 0: the recipe's own schedule,
    800 steps), one thread; returns the backbone."""
    from pretrain.config import load_config
    from pretrain.engine import train

    per_epoch = 2000 // 64
    schedule = [] if steps == 0 else [
        f"optim.epochs={max(1, -(-steps // per_epoch))}",
        f"optim.warmup_epochs={max(1, steps // per_epoch // 10)}", f"optim.max_steps={steps}"]
    cfg = load_config(RECIPE, [
        "data.kind=synthetic", "data.world=dominant", "data.num_images=2000",
        f"data.image_size={SIZE}", *schedule, f"run.seed={seed}", f"run.output_dir={out}",
        "run.log_every_steps=50", "run.checkpoint_every_steps=1000", "run.export_backbone=false",
        "run.probe=false", *overrides])
    checkpoint = train(cfg)
    model_state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    backbone = build_backbone("resnet_nano")
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in model_state.items()
                              if k.startswith("backbone.")})
    return backbone


def random_backbone(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone("resnet_nano")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300,
                        help="pretraining steps; 0: the recipe's own schedule (the demo's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("/tmp/learning_check"))
    parser.add_argument("overrides", nargs="*", help="pretraining config overrides")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    world = make_world()
    for seed in args.seeds:
        print(f"random init {seed}: {score(random_backbone(seed), world)}", flush=True)
    for seed in args.seeds:
        start = time.time()
        backbone = pretrain(args.out / f"seed{seed}", args.steps, seed, args.overrides)
        took = time.time() - start
        print(f"pretrained {seed} ({args.steps} steps, {took:.0f} s): {score(backbone, world)}",
              flush=True)


if __name__ == "__main__":
    main()
