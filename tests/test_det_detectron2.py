"""The detectron2 side: feature equality, key coverage, registered modules, datasets, configs."""
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.synthetic import NUM_CLASSES  # noqa: E402
from transfer.extras import missing_reason  # noqa: E402

# absent, or hidden by VICREGL_HIDE_EXTRAS=detectron2: the reason says which and how to install
pytest.importorskip("detectron2",
                    reason=missing_reason("detectron2") or "detectron2 does not import")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.modeling.backbone.resnet import build_resnet_backbone  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec  # noqa: E402

from pretrain.backbones import build_backbone  # noqa: E402
from pretrain.checkpoint import export_backbone  # noqa: E402
from pretrain.synthetic import CLASS_NAMES  # noqa: E402
from transfer.detectron2_side import (  # noqa: E402
    Detectron2ConvNeXt, Detectron2ResNetNano, add_vicregl_config)
from transfer.detectron2_side.checkpoint import check_backbone_loaded  # noqa: E402
from transfer.detectron2_side.conversion import (  # noqa: E402
    DROPPED, convert_backbone, convert_resnet, write_pkl)
from transfer.detectron2_side.data import check_num_classes, register_datasets  # noqa: E402
from transfer.detectron2_side.solver import build_optimizer  # noqa: E402
from transfer.synthetic.detection import write_coco, write_voc_detection  # noqa: E402
from transfer.weights import read_backbone  # noqa: E402
from conftest import THREADS  # noqa: E402

torch.set_num_threads(THREADS)
ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "detection"
FPN = CONFIGS / "mask_rcnn_resnet50_fpn_1x_coco.yaml"
C4 = CONFIGS / "faster_rcnn_resnet50_c4_voc0712_24k.yaml"
CONVNEXT = CONFIGS / "mask_rcnn_convnext_small_fpn_1x_coco.yaml"
NANO = CONFIGS / "mask_rcnn_resnet_nano_sfp_1x_coco.yaml"


def tiny_checkpoint(path: Path, arch: str, seed: int = 0) -> Path:
    """An exported backbone (our format) whose norms are far from their init, so a missing or
    misplaced norm tensor changes the features."""
    torch.manual_seed(seed)
    model = build_backbone(arch)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", "bias")) or (key.endswith("weight") and value.ndim == 1):
            value.copy_(torch.randn_like(value) * 0.5 + (1.0 if key.endswith("weight") else 0.0))
        elif key.endswith("running_var"):
            value.copy_(torch.rand_like(value) + 0.5)
    model_state = {f"backbone.{k}": v for k, v in state.items()}
    export_backbone({"arch": arch, "model": model_state, "step": 7}, path, source="test")
    return path


def make_cfg(config: Path, *opts):
    cfg = get_cfg()
    add_vicregl_config(cfg)
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *map(str, opts)])
    return cfg


def resnet_opts(arch: str):
    depth = int(arch.removeprefix("resnet"))
    return ["MODEL.RESNETS.DEPTH", depth, "MODEL.RESNETS.RES2_OUT_CHANNELS",
            64 if depth < 50 else 256]


def converted(tmp_path, arch):
    weights = read_backbone(tiny_checkpoint(tmp_path / f"{arch}.pth", arch), arch)
    model_dict, _ = convert_backbone(weights)
    return weights, write_pkl(tmp_path / f"{arch}.pkl", model_dict, weights.info())


def ours(weights):
    model = build_backbone(weights.arch)
    model.load_state_dict(weights.state_dict)
    return model.eval()


def loaded_model(cfg, pkl):
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(pkl))
    return model.eval()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.slow
def test_converted_resnet_fpn_features_equal_ours(tmp_path, arch):
    weights, pkl = converted(tmp_path, arch)
    model = loaded_model(make_cfg(FPN, *resnet_opts(arch)), pkl)
    assert "all" in check_backbone_loaded(model, pkl)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        theirs = model.backbone.bottom_up(x)
        mine = ours(weights).forward_stages(x)
    for name, ref in zip(("res2", "res3", "res4", "res5"), mine):  # same ops: bit for bit
        torch.testing.assert_close(theirs[name], ref, rtol=0, atol=0)


def test_stride_in_1x1_true_would_differ(tmp_path):
    """Why the configs say STRIDE_IN_1X1 False: the equality above is sensitive to it."""
    weights = read_backbone(tiny_checkpoint(tmp_path / "r50.pth", "resnet50"), "resnet50")
    model_dict, _ = convert_resnet(weights)
    cfg = make_cfg(FPN, "MODEL.RESNETS.STRIDE_IN_1X1", True)
    trunk = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    missing, unexpected = trunk.load_state_dict(
        {k: torch.from_numpy(v) for k, v in model_dict.items()}, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        diff = (trunk(x)["res5"] - ours(weights).forward_stages(x)[-1]).abs()
    assert diff.max() > 1e-2


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_converted_resnet_c4_features_equal_ours(tmp_path, arch):
    """C4: res2-res4 in the backbone, res5 in the RoI head (before its extra norm)."""
    weights, pkl = converted(tmp_path, arch)
    model = loaded_model(make_cfg(C4, *resnet_opts(arch)), pkl)
    check_backbone_loaded(model, pkl)
    assert isinstance(model.roi_heads.res5.norm, torch.nn.SyncBatchNorm)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        res4 = model.backbone(x)["res4"]
        res5 = model.roi_heads.res5[:-1](res4)
        mine = ours(weights).forward_stages(x)
    torch.testing.assert_close(res4, mine[2], rtol=0, atol=0)
    torch.testing.assert_close(res5, mine[3], rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_conversion_covers_detectron2_resnet_exactly(arch):
    model_dict, key_map = convert_resnet(read_backbone("random", arch))
    cfg = make_cfg(FPN, *resnet_opts(arch))
    expected = {k for k in build_resnet_backbone(cfg, ShapeSpec(channels=3)).state_dict()
                if not k.endswith("num_batches_tracked")}
    assert set(model_dict) == expected
    assert {dst for _, dst in key_map} - {DROPPED} == expected


def test_load_check_catches_wrong_depth_and_changed_weights(tmp_path):
    _, pkl = converted(tmp_path, "resnet18")
    model = loaded_model(make_cfg(FPN, *resnet_opts("resnet34")), pkl)  # 3-4-6-3 blocks
    with pytest.raises(RuntimeError, match=r"not in the file \(wrong depth\?\).*res2\.2\."):
        check_backbone_loaded(model, pkl)
    model = loaded_model(make_cfg(FPN, *resnet_opts("resnet18")), pkl)
    with torch.no_grad():
        model.backbone.bottom_up.res3[0].conv1.weight.add_(1)
    with pytest.raises(RuntimeError, match="differ from the file.*res3.0.conv1.weight"):
        check_backbone_loaded(model, pkl)


def test_convnext_backbone_features_equal_ours(tmp_path):
    """The ConvNeXt comes in as the ResNet does: a .pkl, detectron2's checkpointer, the check."""
    weights, pkl = converted(tmp_path, "convnext_mini")
    model = loaded_model(make_cfg(CONVNEXT, "MODEL.CONVNEXT.ARCH", "convnext_mini",
                                  "MODEL.CONVNEXT.OUT_NORM", False), pkl)
    assert "all 56 backbone tensors loaded" in check_backbone_loaded(model, pkl)  # 58 - norm.*
    bottom_up = model.backbone.bottom_up
    assert isinstance(bottom_up, Detectron2ConvNeXt)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        theirs = bottom_up(x)
        fpn = model.backbone(x)
        mine = ours(weights).forward_stages(x)
    for name, ref in zip(("res2", "res3", "res4", "res5"), mine):
        torch.testing.assert_close(theirs[name], ref, rtol=0, atol=0)
    assert {k: v.shape[-1] for k, v in fpn.items()} == {"p2": 24, "p3": 12, "p4": 6, "p5": 3,
                                                       "p6": 2}


def test_convnext_output_norm_and_freezing(tmp_path):
    weights, pkl = converted(tmp_path, "convnext_mini")
    net = Detectron2ConvNeXt("convnext_mini", out_norm=True, freeze_at=2).eval()
    DetectionCheckpointer(net).load(str(pkl))
    check_backbone_loaded(net, pkl)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = net(x)["res4"]
        ref = ours(weights).forward_stages(x)[2]
    expected = F.layer_norm(ref.permute(0, 2, 3, 1), (ref.shape[1],), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, expected)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("convnext.downsample_layers.0.", "convnext.stages.0."))
                          for n in frozen)
    assert not hasattr(net.convnext, "norm")  # pretraining's token norm is not used here


def test_convnext_load_check_catches_wrong_arch_and_missing_tensors(tmp_path):
    weights, pkl = converted(tmp_path, "convnext_mini")
    small = make_cfg(CONVNEXT, "MODEL.CONVNEXT.ARCH", "convnext_small")  # other widths, depth
    with pytest.raises(RuntimeError, match="matched no model key.*not in the file"):
        check_backbone_loaded(loaded_model(small, pkl), pkl)
    model_dict, _ = convert_backbone(weights)
    del model_dict["convnext.stages.1.0.pwconv1.weight"]
    partial = write_pkl(tmp_path / "partial.pkl", model_dict, weights.info())
    mini = make_cfg(CONVNEXT, "MODEL.CONVNEXT.ARCH", "convnext_mini")
    with pytest.raises(RuntimeError, match=r"1 backbone tensors .* not in the file .*"
                                           r"convnext\.stages\.1\.0\.pwconv1\.weight"):
        check_backbone_loaded(loaded_model(mini, partial), partial)
    # a checkpoint of another architecture never reaches a .pkl: the reader refuses it
    r18 = tiny_checkpoint(tmp_path / "r18.pth", "resnet18")
    with pytest.raises(ValueError, match="resnet18 backbone, not convnext_mini"):
        read_backbone(r18, "convnext_mini")


@pytest.mark.parametrize("source", ["random:0", "export"])
def test_resnet_nano_sfp_features_equal_ours(tmp_path, source):
    """resnet_nano comes in as ConvNeXt does (.pkl, detectron2's checkpointer, the check); the
    demo's random:0, and an export whose norms are far from their init."""
    if source == "export":
        weights, pkl = converted(tmp_path, "resnet_nano")
    else:
        weights = read_backbone(source, "resnet_nano")
        pkl = write_pkl(tmp_path / "nano.pkl", convert_backbone(weights)[0], weights.info())
    model = loaded_model(make_cfg(NANO, "MODEL.FPN.OUT_CHANNELS", 64), pkl)
    assert "all 60 backbone tensors loaded" in check_backbone_loaded(model, pkl)  # 72 - counters
    net = model.backbone.net
    assert isinstance(net, Detectron2ResNetNano)
    assert isinstance(net.trunk.bn1, torch.nn.SyncBatchNorm)  # MODEL.RESNETS.NORM
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        theirs = net(x)
        pyramid = model.backbone(x)
        mine = ours(weights).forward_stages(x)
    assert list(theirs) == ["res5"]
    torch.testing.assert_close(theirs["res5"], mine[-1], rtol=0, atol=0)
    assert {k: (v.shape[1], v.shape[-1]) for k, v in pyramid.items()} == {
        "p2": (64, 24), "p3": (64, 12), "p4": (64, 6), "p5": (64, 3), "p6": (64, 2)}
    assert {k: s.stride for k, s in model.backbone.output_shape().items()} == {
        "p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}


def test_resnet_nano_freezing_and_load_check(tmp_path):
    weights, pkl = converted(tmp_path, "resnet_nano")
    net = Detectron2ResNetNano(freeze_at=2).eval()  # stem and res2 (layer1)
    assert {k: (s.channels, s.stride) for k, s in net.output_shape().items()} == {
        "res2": (8, 2), "res3": (16, 4), "res4": (32, 8), "res5": (64, 8)}
    DetectionCheckpointer(net).load(str(pkl))
    check_backbone_loaded(net, pkl)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = net(x)
        ref = ours(weights).forward_stages(x)
    for name, expected in zip(("res2", "res3", "res4", "res5"), ref):
        torch.testing.assert_close(out[name], expected)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"resnet_nano.conv1.weight", "resnet_nano.layer1.0.conv1.weight",
                      "resnet_nano.layer1.0.conv2.weight"}  # the norms became FrozenBN buffers
    assert isinstance(net.trunk.layer1[0].bn2, FrozenBatchNorm2d)
    assert type(net.trunk.layer2[0].bn1) is torch.nn.BatchNorm2d
    model_dict, _ = convert_backbone(weights)
    del model_dict["resnet_nano.layer3.0.downsample.1.running_var"]
    partial = write_pkl(tmp_path / "partial.pkl", model_dict, weights.info())
    net = Detectron2ResNetNano()
    DetectionCheckpointer(net).load(str(partial))
    with pytest.raises(RuntimeError, match=r"1 backbone tensors .* not in the file .*"
                                           r"resnet_nano\.layer3\.0\.downsample\.1\.running_var"):
        check_backbone_loaded(net, partial)


def test_one_import_registers_everything_for_a_users_train_net():
    """As detectron2's projects: `import transfer.detectron2_side` alone, in a fresh process,
    registers the backbones and the RoI head that our configs name."""
    code = """if True:
        import sys
        import transfer.detectron2_side as vicregl_d2
        from detectron2.config import get_cfg
        from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY, build_model
        names = ("build_vicregl_convnext_backbone", "build_vicregl_convnext_fpn_backbone",
                 "build_vicregl_resnet_nano_sfp_backbone")
        assert all(n in BACKBONE_REGISTRY for n in names), list(BACKBONE_REGISTRY)
        assert "Res5ROIHeadsExtraNorm" in ROI_HEADS_REGISTRY
        cfg = vicregl_d2.add_vicregl_config(get_cfg())
        cfg.merge_from_file(sys.argv[1])
        cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.CONVNEXT.ARCH", "convnext_mini"])
        model = build_model(cfg)
        assert isinstance(model.backbone.bottom_up, vicregl_d2.Detectron2ConvNeXt)
        print("registered")
    """
    run = subprocess.run([sys.executable, "-c", code, str(CONVNEXT)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.split() == ["registered"], run.stderr[-3000:]


def test_adamw_groups(tmp_path):
    cfg = make_cfg(CONVNEXT, "MODEL.CONVNEXT.ARCH", "convnext_mini")
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    norm = model.backbone.bottom_up.convnext.stages[0][0].norm
    conv = model.backbone.bottom_up.convnext.stages[0][0].pwconv1
    assert decay[id(norm.weight)] == 0.0 and decay[id(conv.bias)] == 0.0
    assert decay[id(conv.weight)] == 0.05
    r18 = make_cfg(FPN, *resnet_opts("resnet18"))
    assert isinstance(build_optimizer(r18, build_model(r18)), torch.optim.SGD)


def test_synthetic_sets_through_detectron2_loaders(tmp_path):
    write_coco(tmp_path, 3, 2, 64, seed=0)
    write_voc_detection(tmp_path, 4, 2, 64, seed=0)
    names = ["synthetic_coco_train", "synthetic_coco_val", "synthetic_voc_2007_trainval",
             "synthetic_voc_2012_trainval", "synthetic_voc_2007_test"]
    assert register_datasets(tmp_path, names) == names
    for name in names:
        records = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(CLASS_NAMES)
        assert meta.evaluator_type == ("coco" if "coco" in name else "pascal_voc")
        assert records and all(Path(r["file_name"]).is_file() for r in records)
        anns = [a for r in records for a in r["annotations"]]
        assert anns and all(0 <= a["category_id"] < len(CLASS_NAMES) for a in anns)
        if "coco" in name:
            assert all(isinstance(a["segmentation"], list) for a in anns)  # polygons
    cfg = make_cfg(C4, "DATASETS.TRAIN", '("synthetic_voc_2007_trainval",)',
                   "DATASETS.TEST", '("synthetic_voc_2007_test",)')
    with pytest.raises(ValueError, match=f"NUM_CLASSES is 20 but dataset .* has {NUM_CLASSES}"):
        check_num_classes(cfg)


def test_builtin_names_are_rerooted(tmp_path):
    write_coco(tmp_path, 1, 1, 32, seed=0)  # registration only checks that the files exist
    write_voc_detection(tmp_path, 4, 2, 32, seed=0)
    register_datasets(tmp_path, ["coco_2017_val", "voc_2007_test", "voc_2012_trainval"])
    coco = MetadataCatalog.get("coco_2017_val")
    assert coco.json_file == str(tmp_path / "coco/annotations/instances_val2017.json")
    assert coco.evaluator_type == "coco" and len(coco.thing_classes) == 80
    voc = MetadataCatalog.get("voc_2007_test")
    assert voc.dirname == str(tmp_path / "VOC2007") and voc.split == "test" and voc.year == 2007
    assert voc.evaluator_type == "pascal_voc" and len(voc.thing_classes) == 20
    assert MetadataCatalog.get("voc_2012_trainval").dirname == str(tmp_path / "VOC2012")


def test_registration_names_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="coco_2017_val: .*instances_val2017.json"):
        register_datasets(tmp_path, ["coco_2017_val"])
    with pytest.raises(KeyError, match="no_such_set"):
        register_datasets(tmp_path, ["no_such_set"])


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_configs_follow_the_protocol_and_build(config):
    cfg = make_cfg(config)
    assert cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.PIXEL_MEAN == [123.675, 116.28, 103.53]
    assert cfg.MODEL.PIXEL_STD == [58.395, 57.12, 57.375]
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.TEST.PRECISE_BN.ENABLED
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.VICREGL.PROTOCOL
    name = config.stem
    if "convnext" in name:
        assert cfg.MODEL.BACKBONE.NAME == "build_vicregl_convnext_fpn_backbone"
        assert cfg.MODEL.CONVNEXT.ARCH == "convnext_" + name.split("_")[3]
        assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.SOLVER.BASE_LR == 1e-4
    elif "resnet_nano" in name:  # the CPU demo's: R50-FPN recipe, resnet_nano trunk under SFP
        assert cfg.MODEL.BACKBONE.NAME == "build_vicregl_resnet_nano_sfp_backbone"
        assert cfg.MODEL.RESNET_NANO.ARCH == "resnet_nano" and cfg.MODEL.RESNETS.NORM == "SyncBN"
        assert cfg.SOLVER.OPTIMIZER == "SGD" and cfg.SOLVER.BASE_LR == 0.02
    else:
        assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.MODEL.RESNETS.NORM == "SyncBN"
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.SOLVER.BASE_LR == 0.02
    if "_c4_" in name:
        assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    if "_fpn_" in name or "_sfp_" in name:
        assert cfg.MODEL.FPN.NORM == "SyncBN" and cfg.MODEL.ROI_BOX_HEAD.NORM == "SyncBN"
        assert (cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC) == (4, 1)
    schedule = {"24k": (24000, (18000, 22000)), "1x": (90000, (60000, 80000)),
                "2x": (180000, (120000, 160000))}
    key = next(k for k in schedule if f"_{k}" in name)
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == schedule[key]
    if "voc" in name:
        assert cfg.DATASETS.TRAIN == ("voc_2007_trainval", "voc_2012_trainval")
        assert cfg.DATASETS.TEST == ("voc_2007_test",) and not cfg.MODEL.MASK_ON
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 20 and cfg.SOLVER.WARMUP_ITERS == 100
    else:
        assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.MODEL.MASK_ON
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80
    model = build_model(cfg)  # the registered names resolve and the shapes fit
    assert sum(p.numel() for p in model.parameters()) > 10_000_000
