"""The 3-D segmentation networks: MONAI's ``UNet``, ``DynUNet`` and ``SwinUNETR`` (``pip install 'raysweep[3d]'``)
wrapped as :class:`VolumeSegModel`, their default options, their option and encoder checks, and building one (with a
local state dict of the whole network).

Build them through :func:`raysweep.models.build_model`, the one entry point for 2-D and 3-D models, which checks the
names, counts and ``encoder_weights`` first and hands ``monai.*`` architectures (case-insensitive after the prefix)
to :func:`build_volume_model`::

    model = build_model("monai.UNet", None, num_classes=9, in_channels=1)      # a VolumeSegModel, model.dims == 3
    out = model(x)            # x float32 (B, in_channels, D, H, W), D, H and W divisible by model.size_divisors
    out["logits"]             # (B, num_classes, D, H, W)
    out["aux_logits"]         # (B, aux_channels, D, H, W), only when built with aux_channels
    out["features"]           # (B, F, d, h, w) the input of the network's last layer, only with return_features

Their options (``channels``, ``strides``, ``feature_size`` ...) are the MONAI constructors' keywords, over the small
defaults in :data:`VOLUME_DEFAULTS`; ``encoder_weights`` is None or a local state dict of the whole network. MONAI is
imported only when a network is checked or built.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model_heads import forward_with_heads

__all__ = ["VOLUME_ARCHS", "VOLUME_DEFAULTS", "VolumeSegModel", "build_volume_model", "check_volume_encoder",
           "check_volume_options", "is_volume_arch", "volume_architectures", "volume_name"]


#: The MONAI networks :func:`raysweep.models.build_model` takes: lower-case key -> class name in
#: ``monai.networks.nets``.
VOLUME_ARCHS: dict[str, str] = {"monai.unet": "UNet", "monai.dynunet": "DynUNet", "monai.swinunetr": "SwinUNETR"}

#: Constructor keywords each MONAI network starts from (``options`` override them), small enough for CPU-sized
#: volumes. UNet and DynUNet downsample three times (sizes divisible by 8); SwinUNETR always needs multiples of 32
#: (``patch_size ** 5``). Overriding one of a network's per-level lists derives the others' defaults from its length.
VOLUME_DEFAULTS: dict[str, dict[str, Any]] = {
    "monai.unet": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 2},
    "monai.dynunet": {"kernel_size": (3, 3, 3, 3), "strides": (1, 2, 2, 2), "upsample_kernel_size": (2, 2, 2),
                      "filters": (16, 32, 64, 128)},
    "monai.swinunetr": {"feature_size": 24},
}

#: Constructor keywords :func:`raysweep.models.build_model` sets itself; DynUNet's deep supervision would return
#: stacked logits.
_VOLUME_RESERVED = {"spatial_dims": "build_model sets spatial_dims=3",
                    "in_channels": "the dataset gives in_channels", "out_channels": "the dataset's classes give it",
                    "deep_supervision": "the trainer takes one logits tensor (no deep supervision)",
                    "deep_supr_num": "the trainer takes one logits tensor (no deep supervision)"}

_INSTALL_3D = "pip install 'raysweep[3d]'"


def volume_architectures() -> list[str]:
    """The MONAI 3-D architectures as spelt in configs: ``["monai.UNet", "monai.DynUNet", "monai.SwinUNETR"]``."""
    return [f"monai.{name}" for name in VOLUME_ARCHS.values()]


def is_volume_arch(arch: Any) -> bool:
    """Whether ``arch`` names a MONAI 3-D network (``"monai.UNet"`` ..., case-insensitive): it takes no encoder."""
    return isinstance(arch, str) and arch.lower() in VOLUME_ARCHS


def volume_name(key: str) -> str:
    """The network as spelt in configs (``"monai.UNet"``) for its lower-case key (``"monai.unet"``)."""
    return f"monai.{VOLUME_ARCHS[key]}"


class VolumeSegModel(nn.Module):
    """A MONAI 3-D network whose forward returns a dict, with an optional auxiliary head and decoder features.

    Args:
        net: a ``monai.networks.nets`` ``UNet``, ``DynUNet`` (without deep supervision) or ``SwinUNETR`` built with
            ``spatial_dims=3``.
        aux_channels: channels K of an auxiliary 1x1x1-conv head on the decoder's last features, upsampled
            trilinearly to the input size where they are coarser (UNet); None for no head.
        return_features: also return those features.

    ``forward(x)`` with x float (B, C_in, D, H, W), each of D, H and W divisible by the matching entry of
    :attr:`size_divisors` (:meth:`check_input_size`), returns ``{"logits": (B, num_classes, D, H, W)}`` plus
    ``"aux_logits": (B, K, D, H, W)`` and ``"features": (B, F, d, h, w)`` when asked. The features are the input of
    the network's last layer (its *head*, :attr:`head_name`), so ``head(features) == logits``: DynUNet's and
    SwinUNETR's 1x1x1 output convolution (F = ``filters[0]`` / ``feature_size``, d = D), UNet's last transposed
    convolution (F = ``channels[0] + channels[1]``, 2 ``channels[0]`` past two levels; d = D / ``strides[0]``).

    Attributes:
        dims: 3 (the input is (B, C, D, H, W)); :class:`~raysweep.models.SegModel` has 2.
        size_divisors: (D, H, W) factors the input's sides must be multiples of (products of the strides;
            ``patch_size ** 5`` = 32 for SwinUNETR). :attr:`output_stride` is their least common multiple.
        feature_channels: F above. head_name: the head's name inside ``net``.

    Raises:
        ValueError: ``net`` is none of those networks, or DynUNet with deep supervision.
    """

    #: spatial dimensions of the input: (B, C, D, H, W)
    dims = 3

    def __init__(self, net: nn.Module, aux_channels: int | None = None, return_features: bool = False) -> None:
        super().__init__()
        self.net = net
        self.return_features = bool(return_features)
        # The head stays registered inside net only (by name), so the state dict holds it once.
        self.head_name, self.size_divisors = _volume_layout(net)
        self.feature_channels = _conv_in_channels(net.get_submodule(self.head_name))
        self._instance_norm = any(isinstance(m, nn.InstanceNorm3d) for m in net.modules())
        self.aux_head = None
        if aux_channels is not None:
            self.aux_head = nn.Conv3d(self.feature_channels, int(aux_channels), kernel_size=1)

    @property
    def output_stride(self) -> int:
        """D, H and W of the input must be multiples of this (the least common multiple of :attr:`size_divisors`,
        stricter than needed for anisotropic strides)."""
        return math.lcm(*self.size_divisors)

    def check_input_size(self, spatial_shape: tuple[int, ...]) -> None:
        """ValueError unless a (D, H, W) volume fits: each side divisible by its entry of :attr:`size_divisors` and,
        where the network uses instance normalisation (the default of all three), more than one voxel at the
        coarsest level (D H W / prod(size_divisors) >= 2: SwinUNETR needs e.g. 32 x 32 x 64, not 32 x 32 x 32)."""
        shape = tuple(int(s) for s in spatial_shape)
        name = type(self.net).__name__
        if len(shape) != 3:
            raise ValueError(f"{name} takes (D, H, W) volumes, got spatial shape {shape}")
        if any(size % div for size, div in zip(shape, self.size_divisors)):
            raise ValueError(f"{name} needs D, H, W divisible by {self.size_divisors}, got {shape} (crop or pad "
                             "the patches, e.g. dataset.options.image_size / depth)")
        if self._instance_norm and math.prod(s // d for s, d in zip(shape, self.size_divisors)) < 2:
            raise ValueError(f"{name} sees one voxel at its coarsest level for volumes of {shape} (divided by "
                             f"{self.size_divisors}), which instance normalisation cannot normalise; make one side "
                             "twice as large")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 5:
            raise ValueError(f"a 3-D network takes (B, C, D, H, W) volumes, got shape {tuple(x.shape)}")
        self.check_input_size(x.shape[-3:])
        return forward_with_heads(self.net, self.net.get_submodule(self.head_name), x, self.aux_head,
                                  self.return_features)


def _volume_layout(net: nn.Module) -> tuple[str, tuple[int, int, int]]:
    """The name of ``net``'s last layer and the (D, H, W) factors its input sizes must be multiples of."""
    nets = _monai_nets()

    def per_axis(strides: Any) -> tuple[int, int, int]:
        out = [1, 1, 1]
        for s in strides:
            for axis, value in enumerate(s if isinstance(s, (list, tuple)) else (s,) * 3):
                out[axis] *= int(value)
        return tuple(out)

    if isinstance(net, nets.DynUNet):
        if net.deep_supervision:
            raise ValueError("DynUNet with deep_supervision returns stacked logits; build it without")
        return "output_block", per_axis(net.strides)
    if isinstance(net, nets.SwinUNETR):
        return "out", (int(net.patch_size) ** 5,) * 3  # MONAI's own check (SwinUNETR._check_input_size)
    if isinstance(net, nets.UNet):
        # model = Sequential(down, SkipConnection(...), up); only len(channels) - 1 strides are used
        return "model.2", per_axis(list(net.strides)[:len(net.channels) - 1])
    raise ValueError(f"VolumeSegModel wraps MONAI's UNet, DynUNet or SwinUNETR, got {type(net).__name__}")


def _conv_in_channels(head: nn.Module) -> int:
    for module in head.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            return module.in_channels
    raise TypeError(f"cannot find the input channels of the last layer {type(head).__name__}")


def _monai_nets():
    """``monai.networks.nets``, or a ValueError naming the extra that installs it."""
    try:
        return importlib.import_module("monai.networks.nets")
    except ImportError as exc:
        raise ValueError(f"the 3-D networks ({', '.join(volume_architectures())}) need MONAI, which is not "
                         f"installed: {_INSTALL_3D}") from exc


def build_volume_model(key: str, num_classes: int, in_channels: int, weights: Path | None = None, *,
                       aux_channels: int | None = None, return_features: bool = False,
                       options: dict[str, Any] | None = None) -> VolumeSegModel:
    """The MONAI half of :func:`raysweep.models.build_model`, after its checks (names, counts, ``encoder_weights``):
    the network ``key`` (lower case) with ``spatial_dims=3`` over :data:`VOLUME_DEFAULTS`, loaded from the local state
    dict ``weights`` when given, as a :class:`VolumeSegModel`.

    Raises:
        ValueError: MONAI not installed, a value MONAI refuses, or weights that do not match the network.
    """
    options = {} if options is None else options
    name = volume_name(key)
    cls = getattr(_monai_nets(), VOLUME_ARCHS[key])
    try:
        net = cls(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, **_volume_kwargs(key, options))
    except (TypeError, ValueError, AssertionError, IndexError) as exc:  # MONAI's checks raise all of these
        raise ValueError(f"{name}: bad value in option(s) {options}: {type(exc).__name__}: {exc}") from exc
    if weights is not None:
        _load_volume_weights(net, weights, name)
    return VolumeSegModel(net, aux_channels=aux_channels, return_features=return_features)


def _volume_kwargs(key: str, options: dict[str, Any]) -> dict[str, Any]:
    """:data:`VOLUME_DEFAULTS` under ``options``; a per-level list in ``options`` sets the number of levels, and the
    other per-level defaults follow it (so ``strides: [1, 2, 2, 2, 2]`` alone gives a 5-level DynUNet)."""
    kwargs = {**VOLUME_DEFAULTS[key], **options}

    def levels(*names: str, offset: tuple[int, ...]) -> int | None:
        for name, extra in zip(names, offset):
            if isinstance(options.get(name), (list, tuple)):
                return len(options[name]) + extra
        return None

    if key == "monai.unet":
        n = levels("channels", "strides", offset=(0, 1))
        if n is not None:
            if "strides" not in options:
                kwargs["strides"] = (2,) * (n - 1)
            if "channels" not in options:
                kwargs["channels"] = tuple(16 * 2 ** i for i in range(n))
    elif key == "monai.dynunet":
        n = levels("strides", "kernel_size", "filters", "upsample_kernel_size", offset=(0, 0, 0, 1))
        if n is not None:
            derived = {"strides": (1,) + (2,) * (n - 1), "kernel_size": (3,) * n,
                       "filters": tuple(min(16 * 2 ** i, 320) for i in range(n))}
            for name, value in derived.items():
                if name not in options:
                    kwargs[name] = value
            if "upsample_kernel_size" not in options:
                kwargs["upsample_kernel_size"] = tuple(kwargs["strides"])[1:]  # nnU-Net: up-kernel = stride
    return kwargs


def check_volume_encoder(arch: str, encoder: str | None) -> None:
    """ValueError unless ``encoder`` is None or ``""``: a MONAI network (:func:`is_volume_arch`) is built whole."""
    if encoder not in (None, ""):
        raise ValueError(f"{volume_name(arch.lower())} takes no encoder (a MONAI network is built whole), got "
                         f"encoder={encoder!r}; remove the encoder (leave it unset or null)")


def check_volume_options(key: str, options: dict[str, Any]) -> None:
    """ValueError for ``options`` the MONAI network ``key`` (lower case, ``"monai.unet"`` ...) does not take: its
    constructor's keywords, less those raysweep sets itself (``spatial_dims``, ``in_channels``, ``out_channels``,
    and DynUNet's deep supervision, refused too). Names only: the values are checked when the network is built."""
    import inspect

    from .checks import did_you_mean

    cls = getattr(_monai_nets(), VOLUME_ARCHS[key])
    params = inspect.signature(cls.__init__).parameters
    own = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
    reserved = sorted(set(options) & set(_VOLUME_RESERVED))
    if reserved:
        raise ValueError(f"{volume_name(key)}: option {reserved[0]} cannot be set "
                         f"({_VOLUME_RESERVED[reserved[0]]})")
    valid = sorted(own - set(_VOLUME_RESERVED))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"{volume_name(key)} has no option(s) {', '.join(unknown)}"
                         f"{did_you_mean(unknown[0], valid)}; valid: {', '.join(valid)}")


def _load_volume_weights(net: nn.Module, path: Path, arch: str) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        from .safe_load import load_tensors

        state = load_tensors(path, "network weights file")
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    if any(k.startswith("net.") for k in state):  # a VolumeSegModel's own state dict: its aux head is not loaded
        state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match {arch} as configured (in_channels, classes, options): {exc}") \
            from exc
