"""Default albumentations pipelines, one per dataset, applied jointly to image and mask.

Every pipeline takes ``image`` (H, W, C) (float32 in [0, 1] for the grey-level datasets, uint8 RGB for Cityscapes) and
``mask`` (H, W) uint8 and returns them at the network size; the dataset then converts to tensors and computes the
target maps on the augmented mask. Geometric transforms use nearest-neighbour interpolation for the mask and fill
uncovered mask pixels with background (0) for the medical-style data, where the image border is background, and with
``ignore_index`` (255) for Cityscapes, where it is unknown.
"""

from __future__ import annotations

import albumentations as A
import cv2

from .base import IGNORE_INDEX

#: ImageNet statistics, as the smp encoders expect for RGB input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def synapse_transform(image_size: tuple[int, int], augment: bool) -> A.Compose:
    """TransUNet's ``RandomGenerator`` in albumentations, then resize to ``image_size`` (cubic image, nearest mask).

    Training: with p = 0.5 a random 90-degree rotation followed by a flip, otherwise with p = 0.5 (0.25 overall) a
    rotation in [-20, 20] degrees with zero fill. Evaluation: the resize only.
    """
    steps: list[A.BasicTransform] = []
    if augment:
        rot_flip = A.Compose([A.RandomRotate90(p=1.0), A.OneOf([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)])],
                             p=1.0)
        rotate = A.Rotate(limit=20, interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0,
                          fill_mask=0, p=0.5)
        # OneOf picks by weight (1 : 0.5 -> 2/3 : 1/3); with p = 0.75 that is 0.5 rot-flip and 0.25 rotate overall.
        steps.append(A.OneOf([rot_flip, rotate], p=0.75))
    steps.append(A.Resize(*image_size, interpolation=cv2.INTER_CUBIC, mask_interpolation=cv2.INTER_NEAREST))
    return A.Compose(steps)


def synthetic_transform(image_size: tuple[int, int], augment: bool) -> A.Compose:
    """Mild affine + intensity jitter for the synthetic data, then resize to ``image_size`` if it differs.

    No flips and no 90-degree rotations: ``bean_left`` and ``bean_right`` look alike and are told apart by side only
    (like the two kidneys), so a mirror would swap their labels.
    """
    steps: list[A.BasicTransform] = []
    if augment:
        steps += [
            A.Affine(rotate=(-15, 15), scale=(0.9, 1.1), translate_percent=(-0.05, 0.05),
                     interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.05, contrast_limit=0.1, p=0.5),
        ]
    steps.append(A.Resize(*image_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST))
    return A.Compose(steps)


def cityscapes_transform(image_size: tuple[int, int], crop_size: tuple[int, int] | None, augment: bool) -> A.Compose:
    """Resize to ``image_size`` (bilinear image, nearest mask), then for training a random ``crop_size`` crop
    (padded with ignore where the image is smaller), horizontal flip and colour jitter; ImageNet normalisation last.

    Evaluation uses the resize and normalisation only, so metrics are at ``image_size``.
    """
    steps: list[A.BasicTransform] = [
        A.Resize(*image_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)
    ]
    if augment:
        if crop_size is not None:
            steps.append(A.RandomCrop(*crop_size, pad_if_needed=True, border_mode=cv2.BORDER_CONSTANT, fill=0,
                                      fill_mask=IGNORE_INDEX))
        steps += [
            A.HorizontalFlip(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.RGBShift(p=0.5),
        ]
    steps.append(A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0))
    return A.Compose(steps)
