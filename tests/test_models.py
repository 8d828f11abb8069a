"""Models: shapes, feature taps, the official SimpleBaseline key layout, checkpoint loading."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ikd_edu.errors import UserError
from ikd_edu.models import TAP_NAMES, PoseModel, build_model, list_models
from ikd_edu.models.checkpoints import load_pose_checkpoint

CHEAP = ["quick-teacher", "quick-student", "student", "student-r18-128", "student-mobilenetv3", "simplebaseline-r18"]


@pytest.fixture(scope="module")
def r50() -> PoseModel:
    return build_model("simplebaseline-r50")


# ---------------------------------------------------------------------------------------
# The official SimpleBaseline-ResNet-50 layout, written from the paper's architecture
# (NOT read from our model): bottleneck ResNet-50 [3, 4, 6, 3], widths 64..512, expansion 4,
# deconvs 2048 -> 256 -> 256 -> 256 (4x4), final 1x1 256 -> K.
# ---------------------------------------------------------------------------------------
def official_r50_shapes(num_joints: int = 17, counters: bool = True) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        if counters:
            shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, (n_blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(n_blocks):
            p = f"layer{stage}.{b}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    for index in (0, 3, 6):  # ConvTranspose2d weight is (in, out, kH, kW)
        shapes[f"deconv_layers.{index}.weight"] = (inplanes, 256, 4, 4)
        bn(f"deconv_layers.{index + 1}", 256)
        inplanes = 256
    shapes["final_layer.weight"] = (num_joints, 256, 1, 1)
    shapes["final_layer.bias"] = (num_joints,)
    return shapes


def make_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


def test_reference_layout_is_34m_params():
    shapes = official_r50_shapes()
    learnable = [k for k in shapes if k.endswith(("weight", "bias")) and "running" not in k]
    total = sum(torch.Size(shapes[k]).numel() for k in learnable)
    assert abs(total / 1e6 - 34.00) < 0.05


def test_official_layout_loads_strictly(r50):
    state = make_state(official_r50_shapes())
    report = load_pose_checkpoint(r50, state, strict=True)
    assert report.ok and report.loaded == len(state)
    ours = r50.state_dict()
    assert set(ours) == set(state)
    for key in ("conv1.weight", "layer3.5.bn3.running_var", "deconv_layers.6.weight", "final_layer.bias"):
        assert torch.equal(ours[key], state[key])


def test_old_checkpoint_without_bn_counters_loads(r50):
    state = make_state(official_r50_shapes(counters=False), seed=1)
    report = load_pose_checkpoint(r50, state)
    assert report.ok
    assert torch.equal(r50.state_dict()["layer4.2.conv3.weight"], state["layer4.2.conv3.weight"])


def test_wrong_shape_names_the_keys(r50):
    state = make_state(official_r50_shapes(num_joints=16))
    with pytest.raises(UserError) as err:
        load_pose_checkpoint(r50, state)
    msg = str(err.value)
    assert "2 wrong-shape keys" in msg and "final_layer.weight" in msg and "final_layer.bias" in msg
    assert "[16, 256, 1, 1]" in msg and "[17, 256, 1, 1]" in msg


def test_missing_and_unexpected_keys_listed_with_counts(r50):
    state = make_state(official_r50_shapes())
    for key in [k for k in state if k.startswith("layer4.")]:
        del state[key]
    state["fc.weight"] = torch.zeros(1000, 2048)
    state["fc.bias"] = torch.zeros(1000)
    with pytest.raises(UserError) as err:
        load_pose_checkpoint(r50, state)
    msg = str(err.value)
    assert "missing keys" in msg and "layer4.0.conv1.weight" in msg and "more)" in msg
    assert "2 unexpected keys: fc.weight, fc.bias" in msg


def test_non_strict_loads_what_fits():
    model = build_model("quick-student", num_joints=5)
    other = build_model("quick-student", num_joints=17)
    report = load_pose_checkpoint(model, other.state_dict(), strict=False)
    assert [k for k, _, _ in report.mismatched] == ["final_layer.weight", "final_layer.bias"]
    assert torch.equal(model.state_dict()["layer4.0.conv2.weight"], other.state_dict()["layer4.0.conv2.weight"])


@pytest.mark.parametrize("wrap", ["module", "state_dict", "model", "both"])
def test_wrappers_and_module_prefix_from_file(tmp_path, wrap):
    source = build_model("quick-student")
    target = build_model("quick-student")
    state = source.state_dict()
    if wrap in ("module", "both"):
        state = {f"module.{k}": v for k, v in state.items()}
    if wrap in ("state_dict", "both"):
        state = {"state_dict": state, "epoch": 3}
    if wrap == "model":
        state = {"model": state, "optimizer": {"lr": 1e-3}}
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    report = load_pose_checkpoint(target, path)
    assert report.ok and report.source == str(path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_corrupt_or_missing_file_is_user_error(tmp_path):
    model = build_model("quick-student")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_pose_checkpoint(model, bad)
    with pytest.raises(UserError, match="not found"):
        load_pose_checkpoint(model, tmp_path / "absent.pth")
    with pytest.raises(UserError, match="holds no tensors"):
        load_pose_checkpoint(model, {"epoch": 3})


# ---------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------
def test_names_and_reference_init():
    model = build_model("simplebaseline-r18")  # fresh (the r50 fixture gets overwritten)
    keys = list(model.state_dict())
    assert not any(k.startswith(("fc.", "avgpool")) for k in keys)
    deconv = [m for m in model.deconv_layers]
    assert [type(m) for m in deconv] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU] * 3
    for m in deconv[0::3]:
        assert m.bias is None and m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1)
        assert abs(m.weight.std().item() - 0.001) < 2e-4
    assert abs(model.final_layer.weight.std().item() - 0.001) < 3e-4
    assert torch.count_nonzero(model.final_layer.bias) == 0
    assert torch.all(model.deconv_layers[1].weight == 1) and torch.all(model.deconv_layers[1].bias == 0)


def test_list_models_and_unknown_name():
    names = list_models()
    for name in ("simplebaseline-r18", "simplebaseline-r152", "teacher-r50", "student", "student-r18-128",
                 "student-mobilenetv3", "quick-teacher", "quick-student"):
        assert name in names
    with pytest.raises(UserError, match="known models: .*quick-student"):
        build_model("resnet-9000")
    with pytest.raises(UserError, match="no option"):
        build_model("student", deconv_width=3)


def test_overrides():
    model = build_model("quick-student", num_joints=16, deconv_channels=(48, 40, 32))
    assert model.name == "quick-student"
    assert model.tap_channels("deconv3") == 32 and model.tap_channels("heatmaps") == 16
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 16, 16, 16)


@pytest.mark.parametrize("name", CHEAP)
def test_forward_and_taps(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    assert isinstance(model, PoseModel) and model.tap_names == TAP_NAMES
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        heatmaps = model(x)
        taps = model.forward_taps(x, TAP_NAMES)
    assert heatmaps.shape == (2, 17, 32, 24)
    assert list(taps) == list(TAP_NAMES)
    for tap, tensor in taps.items():
        s = model.tap_stride(tap)
        assert tensor.shape == (2, model.tap_channels(tap), 128 // s, 96 // s), tap
    assert model.tap_stride("layer4") == 32 and model.tap_stride("deconv3") == 4
    torch.testing.assert_close(taps["heatmaps"], heatmaps)


def test_forward_taps_stops_after_last_requested():
    model = build_model("quick-student").eval()
    called = []
    model.layer3.register_forward_hook(lambda *a: called.append("layer3"))
    model.deconv_layers[0].register_forward_hook(lambda *a: called.append("deconv"))
    with torch.no_grad():
        taps = model.forward_taps(torch.zeros(1, 3, 64, 64), ["layer2", "stem"])
    assert list(taps) == ["stem", "layer2"] and called == []
    with torch.no_grad():
        model.forward_taps(torch.zeros(1, 3, 64, 64), "deconv1")
    assert called == ["layer3", "deconv"]


def test_unknown_tap_is_value_error():
    model = build_model("quick-student")
    with pytest.raises(ValueError, match="valid taps: stem, layer1"):
        model.forward_taps(torch.zeros(1, 3, 64, 64), ["layer5"])
    with pytest.raises(ValueError, match="unknown feature tap"):
        model.tap_channels("logits")


def test_forward_heatmaps_match_taps_in_train_mode_too():
    model = build_model("quick-teacher").train()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.forward_taps(x, ["heatmaps"])["heatmaps"], model(x))


# ---------------------------------------------------------------------------------------
# ImageNet trunk weights: only from a local file / the hub cache, never downloaded
# ---------------------------------------------------------------------------------------
def test_imagenet_missing_from_cache_is_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError, match=r"never downloads.*resnet18-f37072fd\.pth"):
        build_model("student", pretrained="imagenet")
    with pytest.raises(UserError, match="custom trunk"):
        build_model("quick-student", pretrained="imagenet")


def test_imagenet_from_cache_and_from_path(tmp_path, monkeypatch):
    import torchvision

    classifier = torchvision.models.resnet18(weights=None)
    (tmp_path / "checkpoints").mkdir()
    torch.save(classifier.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = build_model("student", pretrained="imagenet")
    assert torch.equal(model.layer2[0].conv1.weight, classifier.layer2[0].conv1.weight)
    model = build_model("student-r18-128", pretrained=tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    assert torch.equal(model.conv1.weight, classifier.conv1.weight)
    wrong = torchvision.models.resnet34(weights=None).state_dict()
    torch.save(wrong, tmp_path / "r34.pth")
    with pytest.raises(UserError, match="do not fit"):
        build_model("student", pretrained=tmp_path / "r34.pth")


def test_mobilenet_imagenet_from_path(tmp_path):
    import torchvision

    classifier = torchvision.models.mobilenet_v3_large(weights=None)
    torch.save(classifier.state_dict(), tmp_path / "mnv3.pth")
    model = build_model("student-mobilenetv3", pretrained=tmp_path / "mnv3.pth")
    assert torch.equal(model.features[5].block[0][0].weight, classifier.features[5].block[0][0].weight)


def test_forward_traces_as_one_graph():
    """``forward`` has no hooks or Python-side dict building: torch.compile sees one graph."""
    model = build_model("quick-student").eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
