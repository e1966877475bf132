"""BatchNorm recalibration: the statistics computed by hand (one layer, two stacked layers,
unequal batches), what is left as it was, the refusals; tools/recalibrate_bn.py end to end on
a tiny synthetic ImageFolder; the suite's ``recalibrate_bn:`` key (plan, runner, table note)."""
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import load_tool
from transfer.bn_recalibration import recalibrate_batchnorm

ROOT = Path(__file__).resolve().parent.parent


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased variance over every other dimension."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    return flat.mean(1), flat.var(1, unbiased=True)


def test_one_layer_gets_the_mean_and_unbiased_var_of_all_its_inputs():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=0.3)
    bn.running_mean.fill_(5.0)  # stale statistics: must not leak into the result
    net = nn.Sequential(bn).eval()
    batches = [torch.randn(4, 3, 5, 5) * 2 + 1, torch.randn(3, 3, 5, 5) - 4]  # unequal sizes
    assert recalibrate_batchnorm(net, batches, "cpu") == 7
    mean, var = _channel_stats(torch.cat(batches))
    assert torch.allclose(bn.running_mean.double(), mean, atol=1e-5)
    assert torch.allclose(bn.running_var.double(), var, atol=1e-4)
    assert bn.momentum == 0.3 and not net.training and not bn.training
    assert int(bn.num_batches_tracked) == 2


def test_stacked_layers_see_batch_normalised_inputs_and_dropout_stays_off():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                        nn.Conv2d(4, 3, 1), nn.BatchNorm2d(3))
    net.train()
    batches = [torch.randn(5, 2, 6, 6), torch.randn(2, 2, 6, 6) * 3]
    assert recalibrate_batchnorm(net, [(b, torch.zeros(len(b))) for b in batches]) == 7
    conv1, bn1, _, _, conv2, bn2 = net
    with torch.no_grad():
        first = [conv1(b) for b in batches]
        # in training each batch is normalised with its own statistics; dropout is off
        second = [conv2(F.relu(F.batch_norm(x, None, None, bn1.weight, bn1.bias, training=True,
                                            eps=bn1.eps))) for x in first]
    for bn, inputs in ((bn1, first), (bn2, second)):
        mean, var = _channel_stats(torch.cat(inputs))
        assert torch.allclose(bn.running_mean.double(), mean, atol=1e-5)
        assert torch.allclose(bn.running_var.double(), var, rtol=1e-4, atol=1e-5)
    assert all(m.training for m in net.modules())  # every flag as it was


def test_no_batchnorm_reads_nothing_and_bad_statistics_are_refused():
    def never():
        raise AssertionError("a backbone without BatchNorm must not read the images")
        yield

    assert recalibrate_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1), nn.LayerNorm(4)), never()) == 0
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    before = net[1].running_var.clone()
    with pytest.raises(ValueError, match=r"non-finite BatchNorm statistics .* 1"):
        recalibrate_batchnorm(net, [torch.full((2, 3, 2, 2), float("inf"))])
    assert torch.equal(net[1].running_var, before) and int(net[1].num_batches_tracked) == 0
    with pytest.raises(ValueError, match="no images"):
        recalibrate_batchnorm(net, [])


# ---- tools/recalibrate_bn.py --------------------------------------------------------------

@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    from transfer.synthetic.image_folder import write_image_folder

    root = tmp_path_factory.mktemp("bn")
    write_image_folder(root / "imagenet", 12, size=32, seed=0)
    return root


@pytest.mark.slow  # two runs of the tool on a ResNet-18 (~10 s on 2 busy cores)
def test_tool_writes_a_recalibrated_export(image_root, tmp_path, capsys):
    from pretrain.backbones import build_backbone
    from pretrain.weight_files import load_state_file
    from transfer.weights import read_backbone

    tool = load_tool("recalibrate_bn")
    out = tmp_path / "r18_bn.pth"
    common = ["--arch", "resnet18", "--data-root", str(image_root), "--image-size", "32",
              "--batch-size", "3", "--images", "6", "--seed", "3"]
    assert tool.main(common + ["--backbone", "random:0", "--out", str(out)]) == 0
    assert "statistics recomputed on 6 images" in capsys.readouterr().out
    weights, random = read_backbone(out, "resnet18"), read_backbone("random:0", "resnet18")
    assert weights.kind == "ours-export" and weights.sha256 != random.sha256
    bns = [n for n, m in build_backbone("resnet18").named_modules()
           if isinstance(m, nn.BatchNorm2d)]
    for key, value in weights.state_dict.items():
        layer, _, buffer = key.rpartition(".")
        if layer in bns and buffer in ("running_mean", "running_var"):
            identity = torch.zeros_like(value) if buffer == "running_mean" else torch.ones_like(value)
            assert not torch.allclose(value, identity), key
        elif buffer != "num_batches_tracked":
            assert torch.equal(value, random.state_dict[key]), key  # weights untouched
    recorded = load_state_file(out)["provenance"]
    done = recorded["bn_recalibration"]
    assert (done["images"], done["image_size"], done["seed"], done["from"]) == (6, 32, 3,
                                                                                "random:0")
    assert done["data"].endswith("imagenet/train") and recorded["sha256"] == weights.sha256
    assert weights.info()["bn_recalibration"]["images"] == 6  # what every metrics.json says
    # recalibrating our export again keeps its provenance; --out onto the input is refused
    again = tmp_path / "again.pth"
    assert tool.main(common + ["--backbone", str(out), "--out", str(again)]) == 0
    assert load_state_file(again)["provenance"]["bn_recalibration"]["from"] == str(out)
    with pytest.raises(SystemExit, match="is the input file"):
        tool.main(common + ["--backbone", str(out), "--out", str(out)])
    with pytest.raises(SystemExit, match="missing image folder"):
        tool.main(common + ["--backbone", "random:0", "--out", str(again), "--dataset", "nope"])


def test_tool_leaves_a_layernorm_backbone_unchanged(image_root, tmp_path, capsys):
    from transfer.weights import read_backbone

    out = tmp_path / "cx.pth"
    assert load_tool("recalibrate_bn").main(
        ["--arch", "convnext_mini", "--backbone", "random:0", "--data-root", str(image_root),
         "--image-size", "32", "--out", str(out)]) == 0
    assert "no BatchNorm: statistics unchanged" in capsys.readouterr().out
    weights = read_backbone(out, "convnext_mini")
    assert weights.sha256 == read_backbone("random:0", "convnext_mini").sha256
    assert weights.info()["bn_recalibration"]["images"] == 0


# ---- the suite key ------------------------------------------------------------------------

def write_suite(tmp: Path) -> Path:
    (tmp / "weights.pth").write_bytes(b"pretend")
    suite = tmp / "suite.yaml"
    suite.write_text(textwrap.dedent(f'''
        name: bn_suite
        variables: {{pretrain_size: "96"}}
        backbones:
          ours:
            arch: resnet50
            pretrain: {{config: configs/pretrain/vicregl_resnet50_2x224_100e_in1k.yaml, gpus: 0}}
            recalibrate_bn: {{images: 800, image_size: "{{pretrain_size}}", dataset: imagenet}}
          rand:
            arch: resnet50
            source: random:0
            recalibrate_bn: {{images: 16, gpus: 0}}
          plain: {{arch: resnet50, source: "{tmp / 'weights.pth'}"}}
        experiments:
          voc: {{task: segmentation, config: configs/segmentation/linear_resnet50_voc12aug_40k.py,
                 metric: mIoU}}
          knn: {{task: classification, metric: top1, gpus: 0}}
    '''))
    return suite


def test_plan_reads_the_recalibrated_file_everywhere(tmp_path):
    from transfer.suite.plan import make_plan, select
    from transfer.suite.spec import load_suite

    plan = make_plan(load_suite(write_suite(tmp_path)), tmp_path / "w", tmp_path / "d")
    work = tmp_path / "w"
    step = plan.get("recalibrate:ours")
    out = str(work / "backbones/ours/backbone.pth")
    assert (step.kind, str(step.output), step.needs) == ("recalibrate", out, ["pretrain:ours"])
    assert step.argv[1:] == ["tools/recalibrate_bn.py", "--arch", "resnet50", "--backbone",
                             str(work / "pretrain/ours/backbone.pth"), "--data-root",
                             str(tmp_path / "d"), "--out", out, "--images", "800",
                             "--image-size", "96", "--dataset", "imagenet"]
    for row in ("ours/knn", "ours/voc"):  # classification and segmentation alike
        assert plan.get(row).source == out
        argv = plan.get(row).argv
        assert argv[argv.index("--backbone") + 1] == out
    assert plan.get("ours/voc").needs == ["pretrain:ours", "recalibrate:ours"]
    rand = plan.get("recalibrate:rand")
    assert rand.argv[rand.argv.index("--backbone") + 1] == "random:0" and rand.needs == []
    assert rand.argv[-2:] == ["--device", "cpu"] and rand.gpus == 0
    assert plan.get("rand/knn").source == str(work / "backbones/rand/backbone.pth")
    assert plan.get("plain/knn").source == str(tmp_path / "weights.pth")
    assert not any(s.id == "recalibrate:plain" for s in plan.steps)
    assert [s.id for s in select(plan, ["ours/voc"])] == [
        "pretrain:ours", "recalibrate:ours", "ours/voc"]


def test_bad_recalibrate_key_names_the_entry(tmp_path):
    from transfer.suite.spec import SuiteError, load_suite

    suite = write_suite(tmp_path)
    suite.write_text(suite.read_text().replace("images: 16", "imgs: 16"))
    with pytest.raises(SuiteError, match=r"backbones.rand.recalibrate_bn: unknown key\(s\) imgs"):
        load_suite(suite)


def test_stale_recalibration_is_rewritten_in_place(tmp_path):
    from transfer.suite.plan import make_plan
    from transfer.suite.scheduler import set_aside_reruns_and_stale
    from transfer.suite.spec import load_suite
    from transfer.suite.state import step_state
    from transfer.suite.status_file import write_status

    plan = make_plan(load_suite(write_suite(tmp_path)), tmp_path / "w", tmp_path / "d")
    step = plan.get("recalibrate:rand")
    step.folder.mkdir(parents=True)
    step.output.write_bytes(b"old")
    write_status(step, fingerprint={"source": "random:9"}, command=step.argv[1:])
    assert step_state(step)[0] == "stale"
    set_aside_reruns_and_stale([step], rerun=[])
    assert step.output.is_file()  # not moved aside: the tool rewrites it


def test_table_note_says_whose_statistics_were_recomputed():
    from transfer.suite.tables import recalibration_note

    done = {"bn_recalibration": {"images": 800, "image_size": 96}}
    rows = [{"backbone_label": "A", "backbone_record": done},
            {"backbone_label": "B", "seeds": [{"backbone_record": None},
                                              {"backbone_record": done}]},
            {"backbone_label": "C"}]  # nothing finished: left out
    note = recalibration_note([{"rows": rows}])
    assert note.startswith("BatchNorm statistics of every backbone recomputed on 800 clean")
    rows.append({"backbone_label": "D", "backbone_record": {"arch": "x"}})
    assert recalibration_note([{"rows": rows}]).endswith("; not for D.")
    assert recalibration_note([{"rows": rows[2:]}]) is None
