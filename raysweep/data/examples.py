"""Small example datasets written to disk in the layouts of ``nnunet`` and ``folder``, from the ``synthetic`` generator.

For trying ``raysweep data inspect`` and a sweep on "your own data" without having any, for the docs, the tests and
the loader benchmark::

    from raysweep.data.examples import write_nnunet_example, write_folder_example
    write_nnunet_example("data/Dataset900_Toy", num_training=12, num_test=6)
    write_folder_example("data/toy_folder", num_images=20)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .synthetic import CLASS_NAMES, generate_volume

#: Colours of the example folder's palette masks, one per synthetic class.
PALETTE = {name: [int(v) for v in np.random.default_rng(i).integers(0, 256, 3)] if i else [0, 0, 0]
           for i, name in enumerate(CLASS_NAMES)}


def _volume(seed: int, size: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    return generate_volume(np.random.SeedSequence([seed, 7]), image_size=size, depth=depth)


def write_nnunet_example(root: str | Path, num_training: int = 12, num_test: int = 6, size: int = 64,
                         depth: int = 8, spacing: tuple[float, float, float] = (3.0, 0.8, 0.8),
                         channels: tuple[str, ...] = ("CT", "MR"), seed: int = 0) -> Path:
    """Write an nnU-Net v2 raw dataset of synthetic volumes: ``imagesTr``/``labelsTr`` (and ``imagesTs``/``labelsTs``
    when ``num_test``), one ``.nii.gz`` per channel, ``dataset.json``.

    Args:
        root: the dataset folder (created).
        num_training, num_test: cases.
        size, depth: in-plane size and slices of each volume.
        spacing: (z, y, x) voxel size in mm, written to the headers (nibabel's x, y, z order there).
        channels: modality names; a "CT" channel holds Hounsfield-like values (the generator's [0, 1] scaled to
            -200..300), others [0, 1] values scaled by 1000.

    Returns:
        the root as a Path.
    """
    import nibabel as nib

    root = Path(root)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    for split, count, offset in (("Tr", num_training, 0), ("Ts", num_test, 1000)):
        if not count:
            continue
        (root / f"images{split}").mkdir(parents=True, exist_ok=True)
        (root / f"labels{split}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            case = f"toy_{offset + i:03d}"
            image, label = _volume(seed * 100_000 + offset + i, size, depth)
            # (D, H, W) -> nibabel's (x, y, z)
            nib.save(nib.Nifti1Image(label.transpose(2, 1, 0).astype(np.uint8), affine),
                     root / f"labels{split}" / f"{case}.nii.gz")
            for c, modality in enumerate(channels):
                values = image * 500.0 - 200.0 if modality.lower() == "ct" else (image + 0.1 * c) * 1000.0
                nib.save(nib.Nifti1Image(values.transpose(2, 1, 0).astype(np.float32), affine),
                         root / f"images{split}" / f"{case}_{c:04d}.nii.gz")
    meta = {"channel_names": {str(i): m for i, m in enumerate(channels)},
            "labels": {name: i for i, name in enumerate(CLASS_NAMES)},
            "numTraining": num_training, "file_ending": ".nii.gz", "name": "Toy (raysweep synthetic)"}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return root


def write_folder_example(root: str | Path, num_images: int = 20, size: int = 64, palette: bool = True,
                         seed: int = 0) -> Path:
    """Write a ``folder`` dataset: ``images/NAME.png`` (grey slices of synthetic volumes as RGB) and
    ``masks/NAME.png`` (palette colours when ``palette``, else class ids), plus ``classes.json``.

    With ``palette``, pass ``palette=raysweep.data.examples.PALETTE`` as the dataset option.
    """
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    colours = np.array(list(PALETTE.values()), np.uint8)
    for i in range(num_images):
        image, label = _volume(seed * 100_000 + 5000 + i, size, 4)
        grey = (image[2] * 255).astype(np.uint8)
        Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2)).save(root / "images" / f"img_{i:03d}.png")
        mask = colours[label[2]] if palette else label[2].astype(np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"img_{i:03d}.png")
    (root / "classes.json").write_text(json.dumps(list(CLASS_NAMES)), encoding="utf-8")
    return root
