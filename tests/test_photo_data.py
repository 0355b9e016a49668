"""Offline RGB training data: scikit-image sample photographs cut into crops (dataloaders.PhotoCrops)."""

import pytest
import torch

from dataloaders import HELDOUT_PHOTOS, TRAIN_PHOTOS, PhotoCrops, load_photograph, sample_photographs


def test_photographs_are_rgb_and_splits_share_no_source():
    assert set(TRAIN_PHOTOS).isdisjoint(HELDOUT_PHOTOS)
    assert sample_photographs() == TRAIN_PHOTOS + HELDOUT_PHOTOS
    img = load_photograph("coffee", short_side=64)
    assert img.shape[0] == 3 and min(img.shape[1:]) == 64
    assert img.min() >= -1 and img.max() <= 1
    # Colour matters for colorisation: the channels must differ.
    assert (img[0] - img[2]).abs().mean() > 0.05
    with pytest.raises(ValueError):
        sample_photographs("test")


def test_crops_shapes_range_and_split_sources():
    train = PhotoCrops(16, "train", length=64, short_side=64)
    held = PhotoCrops(16, "heldout", length=64, short_side=64)
    assert set(train.source_names()) == set(TRAIN_PHOTOS)
    assert set(held.source_names()) == set(HELDOUT_PHOTOS)
    batch = train.batch(range(32))
    assert batch.shape == (32, 3, 16, 16) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1 and batch.std() > 0.05
    used = {train.crop_params(i)[0] for i in range(64)}
    assert len(used) == len(TRAIN_PHOTOS)  # every training photo gets drawn
    assert held[0].shape == (3, 16, 16)
    with pytest.raises(IndexError):
        train[64]


def test_crops_are_seeded_and_deterministic():
    a = PhotoCrops(8, "train", length=16, seed=3, short_side=48)
    b = PhotoCrops(8, "train", length=16, seed=3, short_side=48)
    c = PhotoCrops(8, "train", length=16, seed=4, short_side=48)
    assert torch.equal(a.batch(range(16)), b.batch(range(16)))
    assert not torch.equal(a.batch(range(16)), c.batch(range(16)))
    assert torch.equal(a[5], a[5])
    no_flip = PhotoCrops(8, "train", length=16, seed=3, short_side=48, flip=False)
    assert not any(no_flip.crop_params(i)[4] for i in range(16))
