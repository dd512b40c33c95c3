import torch

from fercore.config import AugmentConfig
from fercore.data.loader import Augment, Loader, random_erasing


def test_each_epoch_visits_every_sample_once_in_a_seeded_order(synth_small):
    train, _ = synth_small
    loader = Loader(train, 50, "cpu", shuffle=True, seed=1)
    orders = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        idx = torch.cat([b["index"] for b in loader])
        assert torch.equal(idx.sort().values, torch.arange(len(train)))
        orders.append(idx)
    assert not torch.equal(orders[0], orders[1]) and torch.equal(orders[0], orders[2])


def test_batch_carries_labels_targets_and_normalised_images(synth_small):
    train, _ = synth_small
    labels = train.label.clone()
    b = next(iter(Loader(train, 32, "cpu", labels=labels)))
    assert set(b) >= {"index", "label", "image", "landmarks", "au", "au_mask", "va", "va_mask"}
    assert torch.equal(b["label"], labels[b["index"]])
    assert b["image"].shape == (32, 3, 48, 48) and b["image"].dtype == torch.float32
    assert abs(b["image"].mean().item()) < 1.0
    labels[b["index"][0]] = (labels[b["index"][0]] + 1) % 7     # relabels are seen by the next batch
    b2 = next(iter(Loader(train, 32, "cpu", labels=labels)))
    assert b2["label"][0] == labels[b["index"][0]]


def test_flip_moves_landmarks_with_the_pixels(synth_small):
    train, _ = synth_small
    aug = Augment(AugmentConfig(flip=1.0, erasing=0.0))
    x = train.images[:16].float() / 255
    y, lm, flipped = aug.spatial(x, train.landmarks[:16], torch.Generator().manual_seed(0))
    assert flipped.all() and torch.equal(y, x.flip(3))
    # left eye after the flip is the mirrored right eye
    assert torch.allclose(lm[:, 0, 0], 47 - train.landmarks[:16, 1, 0])
    assert torch.allclose(lm[:, 0, 1], train.landmarks[:16, 1, 1])
    assert torch.allclose(lm[:, 2, 0], 47 - train.landmarks[:16, 2, 0])


def test_shift_moves_landmarks_with_the_pixels():
    """A bright dot at a landmark stays under the landmark after a random translation."""
    x = torch.zeros(8, 3, 48, 48)
    lm = torch.full((8, 5, 2), 20.0)
    x[:, :, 20, 20] = 1.0
    aug = Augment(AugmentConfig(flip=0.0, shift=0.1, erasing=0.0))
    y, lm2, _ = aug.spatial(x, lm, torch.Generator().manual_seed(0))
    for i in range(8):
        py, px = divmod(int(y[i, 0].argmax()), 48)
        assert abs(px - lm2[i, 0, 0]) <= 1 and abs(py - lm2[i, 0, 1]) <= 1


def test_random_erasing_area_and_rate():
    x = torch.ones(2000, 3, 40, 40)
    y = random_erasing(x, 0.5, torch.Generator().manual_seed(0))
    erased = (y[:, 0] == 0).float().mean((1, 2))
    on = erased > 0
    assert abs(on.float().mean().item() - 0.5) < 0.05
    assert erased[on].min() >= 0.015 and erased[on].max() <= 0.26
