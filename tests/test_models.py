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
