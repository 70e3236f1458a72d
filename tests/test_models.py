"""The model factory: smp architectures and encoders by name, the heads a loss needs, weights and their errors."""

import pytest
import torch

from raysweep.models import MODELS, SegModel, architectures, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_named_defaults_output_logits_at_input_size(name):
    torch.manual_seed(0)
    model = build_model(**MODELS[name], num_classes=5, in_channels=1)
    out = model(torch.randn(2, 1, 32, 32))
    assert isinstance(model, SegModel)
    assert set(out) == {"logits"}
    assert out["logits"].shape == (2, 5, 32, 32) and out["logits"].dtype == torch.float32


@pytest.mark.parametrize("name", sorted(MODELS))
def test_aux_head_and_features_are_added_on_request(name):
    torch.manual_seed(0)
    model = build_model(**MODELS[name], num_classes=4, in_channels=3, aux_channels=6, return_features=True)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out["logits"].shape == (2, 4, 32, 32)
    assert out["aux_logits"].shape == (2, 6, 32, 32)  # full resolution whatever the decoder's stride
    f = out["features"]
    assert f.shape[:2] == (2, model.feature_channels) and 32 % f.shape[-1] == 0
    # The features are the segmentation head's input: the head applied to them gives the logits.
    assert torch.allclose(model.net.segmentation_head(f), out["logits"], atol=1e-5)
    # Both extras are differentiable and reach the network's parameters.
    (out["aux_logits"].mean() + out["features"].mean()).backward()
    assert model.aux_head.weight.grad is not None
    assert next(model.net.encoder.parameters()).grad is not None


def test_any_smp_architecture_by_name_case_insensitive():
    assert {"unet", "segformer", "upernet", "dpt"} <= set(architectures())
    torch.manual_seed(0)
    for arch, encoder in (("FPN", "resnet18"), ("upernet", "mit_b0")):
        out = build_model(arch, encoder, num_classes=3, in_channels=1)(torch.randn(2, 1, 32, 32))
        assert out["logits"].shape == (2, 3, 32, 32)


@pytest.mark.parametrize("kwargs, match", [
    ({"arch": "Unet3000", "encoder": "resnet18"}, "unknown architecture 'Unet3000'"),
    ({"arch": "Unet", "encoder": "resnet19"}, "unknown encoder 'resnet19'.*resnet18"),
    ({"arch": "Unet", "encoder": "tu-not_a_timm_model"}, "timm has no model"),
    ({"arch": "Unet", "encoder": "resnet18", "decoder_chanels": (8,)}, "Unet has no option.*decoder_chanels"),
    ({"arch": "Unet", "encoder": "resnet18", "encoder_weights": "imagenet21k"}, "Wrong pretrained weights"),
    ({"arch": "Unet", "encoder": "resnet18", "num_classes": 0}, "num_classes must be a positive integer"),
])
def test_bad_names_raise_value_error_naming_them(kwargs, match):
    kwargs = {"num_classes": 3, "in_channels": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_local_weights_file_loads_the_encoder(tmp_path):
    torch.manual_seed(1)
    source = build_model("Unet", "resnet18", num_classes=3, in_channels=3)
    torch.save(source.net.state_dict(), tmp_path / "whole_model.pth")  # 'encoder.'-prefixed keys
    torch.manual_seed(2)
    model = build_model("Unet", "resnet18", num_classes=7, in_channels=1,
                        encoder_weights=str(tmp_path / "whole_model.pth"))
    assert torch.equal(model.net.encoder.layer1[0].conv1.weight, source.net.encoder.layer1[0].conv1.weight)
    # The RGB stem is adapted to one channel the way smp does for its own weights: summed over RGB.
    assert model.net.encoder.conv1.weight.shape[1] == 1
    assert torch.allclose(model.net.encoder.conv1.weight, source.net.encoder.conv1.weight.sum(1, keepdim=True))


def test_missing_weights_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder weights file not found"):
        build_model("Unet", "resnet18", 3, 1, encoder_weights=str(tmp_path / "nope.pth"))


def test_offline_pretrained_weights_give_a_clear_fix(monkeypatch):
    import segmentation_models_pytorch as smp
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the Hub and the file is not in the local cache")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", offline)  # no network here: what an offline node sees
    with pytest.raises(FileNotFoundError, match=r"(?s)could not fetch pretrained weights 'imagenet'.*encoder_weights="
                                                r"PATH.*HF_HUB_OFFLINE"):
        build_model("Unet", "resnet18", 3, 1, encoder_weights="imagenet")


# MONAI's 3-D networks: (B, C, D, H, W) in, the same dict out. SwinUNETR needs sides in multiples of 32 and, with its
# instance norms, more than one voxel at 1/32: 32 x 32 x 64 is its smallest training volume (one Swin block per
# stage keeps it quick). Single-threaded: on a busy 2-core machine a second thread mostly waits.
VOLUMES = [("monai.UNet", {}, (32, 32, 32), 32, (16, 16, 16)),  # features: 2 x channels[0] at 1 / strides[0]
           ("monai.dynunet", {}, (32, 32, 32), 16, (32, 32, 32)),  # filters[0] at full size
           ("MONAI.SwinUNETR", {"feature_size": 12, "depths": (1, 1, 1, 1)}, (32, 32, 64), 12, (32, 32, 64))]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("arch, options, size, feature_channels, feature_size", VOLUMES, ids=[v[0] for v in VOLUMES])
def test_monai_networks_output_logits_aux_and_features(arch, options, size, feature_channels, feature_size):
    from raysweep.volume_models import VolumeSegModel

    torch.manual_seed(0)
    model = build_model(arch, None, num_classes=3, in_channels=1, aux_channels=2, return_features=True, **options)
    assert isinstance(model, VolumeSegModel) and model.dims == 3
    out = model(torch.randn(1, 1, *size))
    assert out["logits"].shape == (1, 3, *size) and out["logits"].dtype == torch.float32
    assert out["aux_logits"].shape == (1, 2, *size)  # upsampled where the features are coarser (UNet)
    assert out["features"].shape == (1, feature_channels, *feature_size) == (1, model.feature_channels, *feature_size)
    # The features are the last layer's input: that layer applied to them gives the logits.
    head = model.net.get_submodule(model.head_name)
    assert torch.allclose(head(out["features"]), out["logits"], atol=1e-5)
    (out["logits"].mean() + out["aux_logits"].mean() + out["features"].mean()).backward()
    assert model.aux_head.weight.grad is not None and model.aux_head.weight.grad.abs().sum() > 0
    first = next(model.net.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.usefixtures("one_torch_thread")
def test_monai_defaults_sizes_and_logits_only():
    torch.manual_seed(0)
    unet = build_model("monai.UNet", "", 2, 1)
    assert unet.size_divisors == (8, 8, 8) and unet.output_stride == 8
    out = unet(torch.randn(2, 1, 16, 16, 8 * 3))
    assert set(out) == {"logits"} and out["logits"].shape == (2, 2, 16, 16, 24)
    assert build_model("monai.SwinUNETR", None, 2, 1, feature_size=12).output_stride == 32
    with pytest.raises(ValueError, match=r"divisible by \(8, 8, 8\), got \(16, 16, 20\)"):
        unet(torch.randn(1, 1, 16, 16, 20))
    with pytest.raises(ValueError, match="one voxel at its coarsest level"):
        unet.check_input_size((8, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        unet(torch.randn(1, 1, 16, 16))
    # One per-level list sets the levels; the others' defaults follow (anisotropic nnU-Net-style strides here).
    dyn = build_model("monai.DynUNet", None, 2, 1, strides=[1, [1, 2, 2], 2, 2, 2])
    assert dyn.size_divisors == (8, 16, 16) and dyn.output_stride == 16
    assert list(dyn.net.filters) == [16, 32, 64, 128, 256] and len(dyn.net.kernel_size) == 5
    assert dyn(torch.randn(1, 1, 16, 32, 32))["logits"].shape == (1, 2, 16, 32, 32)
    # UNet: channels alone give strides of 2.
    assert build_model("monai.UNet", None, 2, 1, channels=[8, 16, 32]).size_divisors == (4, 4, 4)


@pytest.mark.parametrize("kwargs, match", [
    ({"arch": "monai.UNet", "encoder": "resnet34"}, r"monai.UNet takes no encoder.*remove the encoder"),
    ({"arch": "monai.UNet", "chanels": (8, 16)}, r"monai.UNet has no option\(s\) chanels \(did you mean 'channels'"
                                                 r"\?\); valid: .*num_res_units"),
    ({"arch": "monai.DynUNet", "spatial_dims": 2}, r"option spatial_dims cannot be set \(build_model sets"),
    ({"arch": "monai.DynUNet", "deep_supervision": True}, "deep_supervision cannot be set.*one logits tensor"),
    ({"arch": "monai.SwinUNETR", "feature_size": 10}, r"monai.SwinUNETR: bad value in option.*feature_size"),
    ({"arch": "monai.SwinUNETR", "encoder_weights": "imagenet"}, "no pretrained weights by name"),
    ({"arch": "monai.UNett"}, r"unknown architecture 'monai.UNett' \(did you mean 'monai.unet'\?\)"),
    ({"arch": "SwinUNETR"}, r"unknown architecture 'SwinUNETR' \(did you mean 'monai.swinunetr'\?\)"),
    ({"arch": "monai.UNet", "in_channels": 0}, "in_channels must be a positive integer"),
])
def test_monai_mistakes_raise_value_error_naming_the_fix(kwargs, match):
    kwargs = {"encoder": None, "num_classes": 3, "in_channels": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_monai_missing_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "monai.networks.nets", None)  # what a machine without MONAI sees
    with pytest.raises(ValueError, match=r"need MONAI, which is not installed: pip install 'raysweep\[3d\]'"):
        build_model("monai.UNet", None, 3, 1)


def test_monai_local_weights_load_the_whole_network(tmp_path):
    torch.manual_seed(1)
    source = build_model("monai.UNet", None, 3, 1, channels=[8, 16], aux_channels=2)
    torch.save(source.state_dict(), tmp_path / "volume.pt")  # 'net.'-prefixed keys and an aux head
    torch.manual_seed(2)
    model = build_model("monai.UNet", None, 3, 1, encoder_weights=str(tmp_path / "volume.pt"), channels=[8, 16])
    for (name, a), b in zip(model.net.state_dict().items(), source.net.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="does not match monai.UNet"):
        build_model("monai.UNet", None, 4, 1, encoder_weights=str(tmp_path / "volume.pt"), channels=[8, 16])
    with pytest.raises(FileNotFoundError, match="encoder weights file not found"):
        build_model("monai.UNet", None, 3, 1, encoder_weights=str(tmp_path / "nope.pt"))


def test_sweep_config_takes_monai_architectures():
    from raysweep.config import parse

    base = {"datasets": ["synthetic"], "losses": ["dice"]}
    cfg = parse({**base, "architectures": {"unet3d": {"arch": "monai.UNet", "options": {"channels": [8, 16, 32]}},
                                           "cnn": {}}})
    assert cfg.architectures["unet3d"]["arch"] == "monai.UNet" and "encoder" not in cfg.architectures["unet3d"]
    for entry, match in [({"arch": "monai.DynUnett"}, r"unet3d.arch: unknown architecture.*'monai.dynunet'"),
                         ({"arch": "monai.UNet", "encoder": "resnet34"}, "unet3d.encoder: monai.UNet takes no encoder"),
                         ({"arch": "monai.UNet", "options": {"strieds": [2]}}, r"unet3d.options:.*'strides'"),
                         ({"arch": "monai.UNet", "encoder_weights": "imagenet"}, "unet3d.encoder_weights: .*null")]:
        with pytest.raises(ValueError, match=match):
            parse({**base, "architectures": {"unet3d": entry}})
