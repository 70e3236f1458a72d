"""What a loss may need from a network besides its logits, for 2-D (smp) and 3-D (MONAI) networks alike.

The decoder features are the input of the network's last layer (its *head*); a forward pre-hook captures them
whatever the network's own forward looks like, so no architecture's forward is written again here. An auxiliary head
(``boundary_aware``'s distance bins) reads those features and is resized to the input when they are coarser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def forward_with_heads(net: nn.Module, head: nn.Module, x: torch.Tensor, aux_head: nn.Module | None = None,
                       return_features: bool = False) -> dict[str, torch.Tensor]:
    """``{"logits": net(x)}`` plus ``"aux_logits"`` (``aux_head`` of the features, at the input's spatial size) and
    ``"features"`` (the input of ``head``, a submodule of ``net``) when asked; one forward pass.

    Shapes: ``x`` (B, C, H, W) or (B, C, D, H, W); logits and aux_logits the same spatial size; features
    (B, F, *spatial) at the head's resolution. The aux logits are resized bilinearly (trilinearly in 3-D).
    """
    if aux_head is None and not return_features:
        return {"logits": net(x)}
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        logits = net(x)
    finally:
        handle.remove()
    out = {"logits": logits}
    features = captured[0]
    if aux_head is not None:
        aux = aux_head(features)
        size = x.shape[2:]
        if aux.shape[2:] != size:
            mode = "trilinear" if x.ndim == 5 else "bilinear"
            aux = F.interpolate(aux, size=tuple(size), mode=mode, align_corners=False)
        out["aux_logits"] = aux
    if return_features:
        out["features"] = features
    return out
