"""Segmentation networks: :func:`build_model`, the one factory for 2-D models (segmentation-models-pytorch, smp, here)
and 3-D ones (MONAI, in :mod:`raysweep.volume_models`), plus the heads a loss may need and the ``encoder_weights``
rules of both.

Usage::

    from raysweep.models import MODELS, build_model
    model = build_model("Unet", "resnet34", num_classes=9, in_channels=1)         # any smp arch / encoder by name
    model = build_model(**MODELS["transformer"], num_classes=9, in_channels=1)   # a named default
    out = model(x)            # x float32 (B, in_channels, H, W), H and W divisible by the encoder's output stride
    out["logits"]             # (B, num_classes, H, W), raw scores
    out["aux_logits"]         # (B, aux_channels, H, W), only when built with aux_channels (e.g. boundary_aware)
    out["features"]           # (B, D, h, w) decoder output before the segmentation head, only with return_features

The two named defaults in :data:`MODELS` are the survey's two families: a CNN (U-Net with a ResNet encoder) and a
Transformer (SegFormer with a Mix-Transformer encoder). ``UPerNet`` or ``DPT`` with a transformer encoder are
alternatives (``build_model("UPerNet", "mit_b0", ...)``, ``build_model("DPT", "tu-vit_small_patch16_224", ...)``).

Pretrained encoder weights are optional (``encoder_weights=None``, random initialisation, is the default):
``encoder_weights="imagenet"`` downloads through smp / the Hugging Face hub (or reads its cache), and a path to a
``.pth`` / ``.pt`` / ``.safetensors`` file loads a local state dict of the encoder -- the fix on offline machines.

3-D networks come from MONAI (``pip install 'raysweep[3d]'``): ``build_model("monai.UNet", None, ...)`` (also
``monai.DynUNet``, ``monai.SwinUNETR``) checks the names, counts and weights here and hands the building to
:mod:`raysweep.volume_models`, the home of :class:`~raysweep.volume_models.VolumeSegModel` (``dims == 3``),
:data:`~raysweep.volume_models.VOLUME_DEFAULTS` and the MONAI option checks; this module re-exports those names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model_heads import forward_with_heads
from .volume_models import (
    VOLUME_ARCHS,
    VOLUME_DEFAULTS,
    VolumeSegModel,
    build_volume_model,
    check_volume_encoder,
    check_volume_options,
    is_volume_arch,
    volume_architectures,
    volume_name,
)

__all__ = ["MODELS", "SegModel", "architectures", "build_model", "check_arch_options", "check_encoder",
           "check_volume_weights", "encoder_names", "local_weights_path",
           # re-exported from raysweep.volume_models, their home
           "VOLUME_DEFAULTS", "VolumeSegModel", "is_volume_arch", "volume_architectures"]

#: Named defaults used by the configs: keyword arguments of :func:`build_model` (besides classes and channels).
#: The CNN is U-Net/ResNet-34 as in most Synapse and Cityscapes baselines; the Transformer is SegFormer/MiT-B0, the
#: smallest MiT, which trains from scratch at CPU sizes too.
MODELS: dict[str, dict[str, str]] = {
    "cnn": {"arch": "Unet", "encoder": "resnet34"},
    "transformer": {"arch": "Segformer", "encoder": "mit_b0"},
}


def architectures() -> list[str]:
    """Architecture names accepted by :func:`build_model` (case-insensitive): smp's (``"unet"``, ``"segformer"``
    ...), then the MONAI 3-D networks (``"monai.unet"``, ``"monai.dynunet"``, ``"monai.swinunetr"``)."""
    import segmentation_models_pytorch as smp

    return [*smp.MODEL_ARCHITECTURES_MAPPING, *VOLUME_ARCHS]


def encoder_names() -> list[str]:
    """smp's native encoder names; any timm model is also accepted as ``"tu-<timm name>"``."""
    import segmentation_models_pytorch as smp

    return list(smp.encoders.get_encoder_names())


class SegModel(nn.Module):
    """An smp model whose forward returns a dict, with an optional auxiliary head and decoder features.

    Args:
        net: an smp ``SegmentationModel`` (encoder -> decoder -> segmentation_head).
        aux_channels: channels K of an auxiliary 3x3-conv head on the decoder output, upsampled bilinearly to the
            input size (the distance-bin head of ``boundary_aware``); None for no head.
        return_features: also return the decoder output (the segmentation head's input).

    ``forward(x)`` with x float (B, C_in, H, W) returns ``{"logits": (B, num_classes, H, W)}`` plus
    ``"aux_logits": (B, K, H, W)`` and ``"features": (B, D, h, w)`` when asked; D and h depend on the architecture
    (U-Net: D = 16, h = H; SegFormer: D = 256, h = H / 4).
    """

    #: spatial dimensions of the input: (B, C, H, W)
    dims = 2

    def __init__(self, net: nn.Module, aux_channels: int | None = None, return_features: bool = False) -> None:
        super().__init__()
        self.net = net
        self.return_features = bool(return_features)
        self.feature_channels = _head_in_channels(net.segmentation_head)
        self.aux_head = None
        if aux_channels is not None:
            self.aux_head = nn.Conv2d(self.feature_channels, int(aux_channels), kernel_size=3, padding=1)

    @property
    def output_stride(self) -> int:
        """H and W of the input must be multiples of this."""
        return int(getattr(self.net.encoder, "output_stride", 32))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # The decoder output is the segmentation head's input (DPT's forward differs from the others: the hook of
        # forward_with_heads takes it whatever the forward looks like).
        return forward_with_heads(self.net, self.net.segmentation_head, x, self.aux_head, self.return_features)


def _head_in_channels(head: nn.Module) -> int:
    for module in head.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise TypeError(f"cannot find the input channels of segmentation head {type(head).__name__}")


def build_model(arch: str, encoder: str | None, num_classes: int, in_channels: int, encoder_weights: str | None = None,
                *, aux_channels: int | None = None, return_features: bool = False, **arch_options: Any
                ) -> SegModel | VolumeSegModel:
    """Build a segmentation model by name: an smp 2-D model, or a MONAI 3-D network (``"monai.<name>"``).

    Args:
        arch: architecture, case-insensitive: one of :func:`architectures`; smp's (``"Unet"``, ``"Segformer"``,
            ``"UPerNet"``, ``"DPT"``, ``"FPN"``, ``"DeepLabV3Plus"`` ...) or ``"monai.UNet"``, ``"monai.DynUNet"``,
            ``"monai.SwinUNETR"`` (:func:`volume_architectures`; needs ``pip install 'raysweep[3d]'``).
        encoder: smp encoder name (:func:`encoder_names`, e.g. ``"resnet34"``, ``"mit_b0"``) or ``"tu-<timm name>"``;
            None (or ``""``) for a MONAI network, which has no separate encoder.
        num_classes: output channels of the logits.
        in_channels: image channels (1 for CT, 3 for RGB).
        encoder_weights: smp: None (random init, the default), an smp weight name such as ``"imagenet"``
            (downloaded by smp through the Hugging Face hub, or read from its cache), or a path to a local ``.pth``/
            ``.pt``/``.safetensors`` state dict of the encoder (keys optionally prefixed ``encoder.``, i.e. a whole smp
            model's state dict works too). With ``in_channels != 3`` the first convolution is adapted as smp does.
            MONAI: None, or a path to a local state dict of the whole network as built here (keys optionally
            prefixed ``net.``: a :class:`VolumeSegModel`'s state dict works too); there are no weight names.
        aux_channels: add an auxiliary head with this many output channels (see :class:`SegModel`,
            :class:`VolumeSegModel`).
        return_features: also return the decoder output as ``"features"``.
        **arch_options: passed to the smp architecture (``decoder_channels``, ``decoder_segmentation_channels`` ...)
            or to the MONAI constructor over :data:`VOLUME_DEFAULTS` (``channels``, ``strides``, ``filters``,
            ``feature_size`` ...).

    Returns:
        a :class:`SegModel` (``dims == 2``, input (B, in_channels, H, W)) for smp, a :class:`VolumeSegModel`
        (``dims == 3``, input (B, in_channels, D, H, W)) for MONAI; parameters are float32 on the CPU, initialised
        from torch's global RNG.

    Raises:
        ValueError: unknown architecture, encoder, weight name or option, an encoder for a MONAI network, MONAI not
            installed, or a bad number.
        FileNotFoundError: a weights path that does not exist, or pretrained weights that cannot be fetched.
    """
    import segmentation_models_pytorch as smp

    key = str(arch).lower()
    if key in VOLUME_ARCHS:
        name = volume_name(key)
        check_encoder(encoder, name)
        check_arch_options(key, encoder, arch_options)
        _check_counts(num_classes, in_channels, aux_channels)
        return build_volume_model(key, num_classes, in_channels, check_volume_weights(name, encoder_weights),
                                  aux_channels=aux_channels, return_features=return_features, options=arch_options)
    if key not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ValueError(f"unknown architecture {arch!r}{_arch_hint(key)}; choose one of "
                         f"{', '.join(architectures())} (case-insensitive)")
    check_encoder(encoder)
    check_arch_options(key, encoder, arch_options)
    _check_counts(num_classes, in_channels, aux_channels)

    local = local_weights_path(encoder_weights)
    # A local file is loaded into a 3-channel encoder first, then the stem is adapted like smp does for its own
    # pretrained weights (so in_channels=1 keeps the pretrained filters, summed over RGB).
    build_channels = 3 if local is not None else in_channels
    hub_weights = None if local is not None else encoder_weights
    try:
        net = smp.create_model(key, encoder_name=encoder, encoder_weights=hub_weights, in_channels=build_channels,
                               classes=num_classes, **arch_options)
    except TypeError as exc:
        raise ValueError(f"{arch}: bad value in option(s) {sorted(arch_options)}: {exc}") from exc
    except KeyError as exc:  # smp reports unknown weight names (and encoders) as KeyError
        raise ValueError(f"{arch}/{encoder}: {exc.args[0] if exc.args else exc}") from exc
    except (OSError, RuntimeError) as exc:
        if hub_weights is None:
            raise
        raise FileNotFoundError(
            f"could not fetch pretrained weights {hub_weights!r} for encoder {encoder!r} (offline?): "
            f"{type(exc).__name__}: {exc}\nFix: download them on a machine with internet access and pass "
            "encoder_weights=PATH to the encoder's state-dict file (.pth or .safetensors); or copy the Hugging Face "
            "cache (HF_HOME) over and set HF_HUB_OFFLINE=1; or train from scratch with encoder_weights=None."
        ) from exc
    if local is not None:
        _load_encoder_weights(net.encoder, local, encoder)
        if in_channels != 3:
            net.encoder.set_in_channels(in_channels, pretrained=True)
    return SegModel(net, aux_channels=aux_channels, return_features=return_features)


def _check_counts(num_classes: Any, in_channels: Any, aux_channels: Any) -> None:
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if aux_channels is not None and (not isinstance(aux_channels, int) or aux_channels < 1):
        raise ValueError(f"aux_channels must be a positive integer or None, got {aux_channels!r}")


def _arch_hint(key: str) -> str:
    """`` (did you mean 'monai.dynunet'?)`` for a misspelt architecture, the MONAI one first where only the prefix
    is missing (``"DynUNet"``), or ``""``."""
    from .checks import did_you_mean

    known = architectures()
    return did_you_mean("monai." + key if "monai." + key in known else key, known)


def check_volume_weights(arch: str, weights: str | None) -> Path | None:
    """``encoder_weights`` of a MONAI network: None, or the local state-dict file it names (returned). Here, beside
    :func:`local_weights_path`, as :mod:`raysweep.volume_models` imports nothing of this module.

    Raises:
        ValueError: a weight name such as ``"imagenet"`` (MONAI's networks have none here). FileNotFoundError: a
            path that is not a file.
    """
    if weights is None:
        return None
    path = local_weights_path(weights)
    if path is None:
        raise ValueError(f"{arch} has no pretrained weights by name ({weights!r}); set encoder_weights to null "
                         "(random initialisation) or to a local .pt/.pth/.safetensors state dict of the network")
    return path


def check_encoder(encoder: str | None, arch: str | None = None) -> None:
    """ValueError unless ``encoder`` names an smp encoder or ``tu-<timm model>`` (names only; nothing is built).

    With ``arch`` a MONAI network (:func:`is_volume_arch`), ``encoder`` must be None or ``""`` instead: those
    networks are built whole.
    """
    if is_volume_arch(arch):
        check_volume_encoder(arch, encoder)
        return
    import segmentation_models_pytorch as smp

    if not isinstance(encoder, str) or not encoder:
        raise ValueError(f"encoder must be a name such as 'resnet34' or 'mit_b0', got {encoder!r}")
    if encoder.startswith("tu-"):
        import timm

        name = encoder[3:].split(".")[0]
        if not timm.list_models(name):
            raise ValueError(f"unknown timm encoder {encoder!r}: timm has no model {name!r} (see timm.list_models())")
        return
    if encoder not in smp.encoders.encoders:
        close = [n for n in smp.encoders.encoders if n.startswith(encoder[:4])][:8]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown encoder {encoder!r}{hint}; see raysweep.models.encoder_names(), or use "
                         "'tu-<timm name>' for any timm model")


def check_arch_options(key: str, encoder: str | None, options: dict[str, Any]) -> None:
    """ValueError for ``options`` the architecture ``key`` (lower case) does not take: an smp architecture's keywords
    (timm encoders: any), or a MONAI network's constructor keywords (``"monai.unet"`` ...; those raysweep sets
    itself, ``spatial_dims``, ``in_channels``, ``out_channels``, and DynUNet's deep supervision, refused too).
    Names only: the values are checked when the model is built."""
    import inspect

    if key in VOLUME_ARCHS:
        check_volume_options(key, options)
        return
    # smp forwards unknown keyword arguments to the encoder, where native encoders silently drop them; a typo in a
    # config would then go unnoticed. Only timm ('tu-') encoders take extra keywords.
    import segmentation_models_pytorch as smp

    cls = smp.MODEL_ARCHITECTURES_MAPPING[key]
    own = {name for name, p in inspect.signature(cls.__init__).parameters.items()
           if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    own -= {"self", "encoder_name", "encoder_weights", "in_channels", "classes"}
    unknown = sorted(set(options) - own)
    if unknown and not encoder.startswith("tu-"):
        raise ValueError(f"{cls.__name__} has no option(s) {', '.join(unknown)}; valid: {', '.join(sorted(own))}")


def local_weights_path(weights: str | None) -> Path | None:
    """The state-dict file ``encoder_weights`` names, or None for a weight name (``"imagenet"``) or None.

    Raises:
        ValueError: not a string, path or None. FileNotFoundError: a path that is not a file.
    """
    if weights is None:
        return None
    if not isinstance(weights, (str, Path)):
        raise ValueError(f"encoder_weights must be None, a weight name such as 'imagenet' or a file path, "
                         f"got {weights!r}")
    text = str(weights)
    looks_like_path = any(sep in text for sep in ("/", "\\")) or text.endswith((".pth", ".pt", ".safetensors"))
    if not looks_like_path:
        return None
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path} (encoder_weights must name an existing "
                                ".pth/.pt/.safetensors state dict, a weight name such as 'imagenet', or None)")
    return path


def _load_encoder_weights(encoder_module: nn.Module, path: Path, encoder: str) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        from .safe_load import load_tensors

        state = load_tensors(path, "encoder weights file")
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    try:
        encoder_module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match encoder {encoder!r} (3 input channels): {exc}") from exc
