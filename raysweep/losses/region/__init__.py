"""Region-level losses: overlap scores and other statistics over whole regions."""

from . import (  # noqa: F401
    dice,
    focal_tversky,
    generalized_dice,
    gwdl,
    jaccard,
    log_cosh_dice,
    lovasz,
    rmi,
    sens_spec,
    t_loss,
    tversky,
)
