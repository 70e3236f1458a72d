"""What Ray runs for each sweep trial, and with which resources: the function trainable (one trial, or a pack of
them) and the per-trial CPU/GPU request with the concurrency it allows."""

from __future__ import annotations

from ..config import SweepConfig

__all__ = ["sweep_trainable", "trial_resources"]


def sweep_trainable(config: dict) -> None:
    """The function trainable: runs :func:`raysweep.trial.train_trial` on a sweep trial's envelope, or
    :func:`raysweep.trial.pack.train_pack` on a pack's (``{"members": [envelope, ...]}``), reporting to Tune
    through :class:`~raysweep.sweep.packing.TunePackSink`."""
    from .packing import TunePackSink, is_pack

    if is_pack(config):
        from ..trial.pack import train_pack

        train_pack([m["trial"] for m in config["members"]],
                   sink=TunePackSink(len(config["members"]), stops=config.get("stops")))
        return
    from ..trial import train_trial

    train_trial(config["trial"])


def trial_resources(cfg: SweepConfig, cluster: dict[str, float]) -> tuple[dict[str, float], int]:
    """Per-trial resources and the concurrency they allow on ``cluster`` (``ray.cluster_resources()``).

    A GPU is requested only when the cluster has one (a GPU request on a CPU cluster would wait forever), so one
    config runs on a laptop and on a GPU cluster; fractional GPUs let several trials share one. A config that insists
    on CUDA (``trial.train.device: cuda``) on a cluster without GPUs is an error, raised before any trial starts.
    """
    cpus = float(cfg.resources.cpus_per_trial)
    total_cpu = float(cluster.get("CPU", 1))
    total_gpu = float(cluster.get("GPU", 0))
    if cpus > total_cpu:
        raise ValueError(f"resources.cpus_per_trial={cpus:g} but the cluster has {total_cpu:g} CPUs; lower it")
    device = str((cfg.trial.get("train") or {}).get("device", "auto"))
    if device.startswith("cuda") and total_gpu == 0:
        raise ValueError(f"trial.train.device is {device!r} but the Ray cluster has no GPU: set it to 'auto' (GPU "
                         "where the cluster has one, else CPU) or 'cpu', or run on a cluster with GPUs")
    gpus = float(cfg.resources.gpus_per_trial) if total_gpu > 0 else 0.0
    res = {"cpu": cpus, "gpu": gpus}
    slots = int(total_cpu // cpus)
    if gpus > 0:
        slots = min(slots, int(total_gpu // gpus + 1e-9))
    if cfg.resources.max_concurrent:
        slots = min(slots, int(cfg.resources.max_concurrent))
    return res, max(1, slots)
