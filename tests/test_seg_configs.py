"""Every segmentation experiment parses, states its protocol, builds and runs; the command-line
overrides edit the config as documented."""
import copy
import functools
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402

import transfer.mmseg_side.register  # noqa: E402,F401
from transfer.mmseg_side import overrides  # noqa: E402
from pretrain.backbones import CONVNEXT_SPECS  # noqa: E402
from transfer.datasets import SEGMENTATION  # noqa: E402
from transfer.mmseg_side.checkpoint import arch_of_backbone_cfg  # noqa: E402
from conftest import THREADS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted((ROOT / "configs" / "segmentation").glob("*.py"))
NUM_CLASSES = {name: d.num_classes for name, d in SEGMENTATION.items()}
init_default_scope("mmseg")
torch.set_num_threads(THREADS)


@functools.lru_cache(maxsize=None)
def _parsed(path: Path) -> Config:
    return Config.fromfile(path)


def load(path: Path) -> Config:
    return copy.deepcopy(_parsed(path))


def test_the_protocol_grid_is_complete():
    names = {p.stem for p in EXPERIMENTS}
    for arch in ("resnet50", "convnext_small", "convnext_base"):
        for data in ("voc12aug_40k", "cityscapes_40k", "ade20k_160k"):
            assert f"linear_{arch}_{data}" in names
    assert {"fcn_resnet50_d8_voc12aug_20k", "fcn_resnet50_d8_cityscapes_769x769_40k",
            "upernet_resnet50_ade20k_160k", "upernet_convnext_small_ade20k_160k",
            "upernet_convnext_base_ade20k_160k"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_is_consistent(path):
    header = path.read_text().split("_base_")[0]
    assert header.startswith("#") and "protocol" in header.lower(), "a header cites the protocol"
    cfg = load(path)
    name = path.stem
    assert cfg.dataset_name in name and cfg.dataset_name in NUM_CLASSES
    assert cfg.model.decode_head.num_classes == NUM_CLASSES[cfg.dataset_name]
    if cfg.model.get("auxiliary_head"):
        assert cfg.model.auxiliary_head.num_classes == NUM_CLASSES[cfg.dataset_name]
    assert cfg.model.pretrained is None and cfg.model.backbone.init_cfg is None
    assert arch_of_backbone_cfg(cfg.model.backbone) in name.replace("_d8", "")
    iters = int(name.rsplit("_", 1)[1].removesuffix("k")) * 1000
    assert cfg.train_cfg.max_iters == iters
    assert max(s.get("end", 0) for s in cfg.param_scheduler) == iters
    assert cfg.val_evaluator.type == "PerClassIoUMetric"
    assert cfg.custom_imports.imports == ["transfer.mmseg_side.register"]
    assert {"type": "VerifyPretrainedHook"} in cfg.custom_hooks
    assert list(cfg.model.data_preprocessor.size) == list(cfg.crop_size)
    if name.startswith("linear_"):
        assert cfg.protocol == "linear_frozen" and cfg.model.backbone.frozen_stages == 4
        assert cfg.model.decode_head.type == "LinearProbeHead"
        if "resnet50" in name:
            assert cfg.model.backbone.strides == (1, 2, 1, 1)
            assert cfg.model.backbone.dilations == (1, 1, 2, 4)
            assert cfg.model.backbone.contract_dilation is True
            assert cfg.model.decode_head.in_index == 3
        else:
            assert cfg.model.decode_head.input_transform == "resize_concat"
            assert cfg.optim_wrapper.optimizer.type == "AdamW"
    else:
        assert cfg.model.backbone.get("frozen_stages", -1) == -1
    if cfg.model.backbone.type == "ResNet":
        assert cfg.model.backbone.get("deep_stem", False) is False


def stage_channels(arch: str) -> tuple[int, ...]:
    if arch in CONVNEXT_SPECS:
        return tuple(CONVNEXT_SPECS[arch][1])
    return {"resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}[arch]


def heads(model_cfg) -> list:
    return [h for h in (model_cfg.decode_head, model_cfg.get("auxiliary_head")) if h]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_heads_take_the_backbone_channels(path):
    cfg = load(path)
    channels = stage_channels(arch_of_backbone_cfg(cfg.model.backbone))
    for head in heads(cfg.model):
        index = head.in_index
        expected = [channels[i] for i in index] if isinstance(index, (list, tuple)) \
            else channels[index]
        assert (list(head.in_channels) if isinstance(expected, list)
                else head.in_channels) == expected


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_builds_and_runs(path):
    """Each model builds and runs on a small input. ResNet experiments run at full size on
    the meta device (shapes only, no initialisation cost); ConvNeXt ones on the CPU with the
    tiny convnext_mini (the test above checks the real channels)."""
    cfg = load(path)
    device = "meta"
    if cfg.model.backbone.type == "VICRegLConvNeXt":
        device = "cpu"  # the pretraining ConvNeXt computes its drop-path rates on the host
        real = stage_channels(cfg.model.backbone.arch)
        cfg.model.backbone.arch = "convnext_mini"
        mini = stage_channels("convnext_mini")
        for head in heads(cfg.model):
            head.in_channels = ([mini[real.index(c)] for c in head.in_channels]
                                if isinstance(head.in_channels, (list, tuple))
                                else mini[real.index(head.in_channels)])
    with torch.device(device), torch.no_grad():
        model = MODELS.build(cfg.model)
        model.eval()
        x = torch.randn(1, 3, 64, 64)
        features = model.extract_feat(x)
        for head in [model.decode_head] + ([model.auxiliary_head] if model.with_auxiliary_head
                                           else []):
            assert head(features).shape == (1, cfg.model.decode_head.num_classes, *(
                features[0].shape[-2:] if head.input_transform else
                features[head.in_index].shape[-2:]))


def test_crop_size_scales_every_input_size():
    cfg = load(ROOT / "configs/segmentation/linear_convnext_small_cityscapes_40k.py")
    overrides.set_crop_size(cfg, 64)
    assert tuple(cfg.crop_size) == (64, 128)
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert tuple(train["RandomResize"].scale) == (256, 128)
    assert tuple(train["RandomCrop"].crop_size) == (64, 128)
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert tuple(test["Resize"].scale) == (256, 128)
    assert tuple(cfg.model.data_preprocessor.size) == (64, 128)
    assert tuple(cfg.model.test_cfg.crop_size) == (64, 128)
    assert tuple(cfg.model.test_cfg.stride) == (43, 85)


def test_crop_size_scales_a_shared_pipeline_once():
    cfg = load(ROOT / "configs/segmentation/linear_resnet50_voc12aug_40k.py")
    overrides.set_crop_size(cfg, 64)
    for dataset in cfg.train_dataloader.dataset.datasets:  # VOC train + SBD aug
        crop = [t for t in dataset.pipeline if t.type == "RandomCrop"][0]
        assert tuple(crop.crop_size) == (64, 64)


def test_max_iters_keeps_the_schedule_shape():
    cfg = load(ROOT / "configs/segmentation/linear_convnext_small_voc12aug_40k.py")
    overrides.set_max_iters(cfg, 400)
    warmup, poly = cfg.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 15) and (poly.begin, poly.end) == (15, 400)
    assert cfg.train_cfg.val_interval == 40 and cfg.default_hooks.checkpoint.interval == 40


def lr_curve(cfg, base_lr: float = 0.01) -> list[float]:
    """The lr of every iteration, from mmengine's own schedulers stepped as its
    ParamSchedulerHook steps them (each scheduler after each iteration)."""
    import torch
    from mmengine.registry import PARAM_SCHEDULERS

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer))
                  for s in cfg.param_scheduler]
    curve = []
    for _ in range(cfg.train_cfg.max_iters):
        curve.append(optimizer.param_groups[0]["lr"])
        for scheduler in schedulers:
            scheduler.step()
    return curve


@pytest.mark.parametrize("config", ["linear_convnext_small_ade20k_160k.py",
                                    "linear_convnext_small_voc12aug_40k.py"])
def test_a_shortened_schedule_still_warms_up_to_the_full_lr(config):
    """80 iterations of the 160k ADE20k schedule scaled the 1500-iteration warm-up to one
    iteration, after which mmengine's LinearLR never raised the lr from 1e-6 x lr: the demo's
    ADE20k head did not train (mIoU ~0 for every backbone)."""
    cfg = load(ROOT / "configs/segmentation" / config)
    overrides.set_max_iters(cfg, 80)
    curve = lr_curve(cfg)
    assert curve[0] < 1e-7  # the warm-up starts at 1e-6 x lr, as in the protocol
    assert max(curve) > 0.9 * 0.01, max(curve)  # ... and reaches the full lr
    assert curve[-1] < 0.01 * 0.05  # poly decay to ~0 at the end


def test_data_root_and_batch(tmp_path):
    cfg = load(ROOT / "configs/segmentation/linear_resnet50_voc12aug_40k.py")
    root = overrides.set_data_root(cfg, tmp_path)
    assert root == tmp_path / "VOCdevkit/VOC2012"
    datasets = overrides.dataset_cfgs(cfg)
    assert len(datasets) == 4  # train + aug, val, test
    assert all(d.data_root == str(root) for d in datasets)
    assert overrides.set_batch(cfg, 16, 8) == 2
    with pytest.raises(ValueError, match="does not split over 3"):
        overrides.set_batch(cfg, 16, 3)
