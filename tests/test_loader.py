import torch

from fercore.config import AugmentConfig
from fercore.data.augment import Augment, random_erasing
from fercore.data.loader import Loader


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


# --- landmark-consistent affine, colour jitter, grayscale, residency ------------------------------

import pytest  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

from fercore.data.augment import color_jitter, grayscale  # noqa: E402
from fercore.data.faceset import FaceSet  # noqa: E402
from fercore.errors import ConfigError  # noqa: E402


def blob_faces(n: int = 16, size: int = 48) -> FaceSet:
    """Grey images with one Gaussian blob (sigma 1.5 px) centred on landmark 0 (the left eye)."""
    g = torch.Generator().manual_seed(0)
    lm = 12 + torch.rand(n, 5, 2, generator=g) * (size - 24)
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    d2 = (xs - lm[:, 0, 0].view(-1, 1, 1)) ** 2 + (ys - lm[:, 0, 1].view(-1, 1, 1)) ** 2
    img = (255 * torch.exp(-d2 / (2 * 1.5 ** 2))).round().to(torch.uint8)
    return FaceSet(images=img.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), label=torch.zeros(n, dtype=torch.long),
                   classes=("neutral",), ids=[str(i) for i in range(n)], landmarks=lm)


def centroid(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, 2) intensity centroid (x, y) of the brightest region."""
    w = (x - 0.5 * x.amax((1, 2), keepdim=True)).clamp_min(0)
    ys, xs = torch.meshgrid(torch.arange(x.shape[1]).float(), torch.arange(x.shape[2]).float(), indexing="ij")
    return torch.stack([(w * xs).sum((1, 2)), (w * ys).sum((1, 2))], 1) / w.sum((1, 2)).view(-1, 1)


def test_loader_moves_landmarks_with_crop_rotation_zoom_shift_and_flip():
    fs = blob_faces()
    aug = Augment(AugmentConfig(flip=0.5, shift=0.08, erasing=0.0, crop_scale=(0.6, 1.0), rotate=25.0,
                                scale=(0.9, 1.1)))
    b = next(iter(Loader(fs, 16, "cpu", augment=aug, shuffle=True, normalize="half")))
    img = b["image"][:, 0] * 0.5 + 0.5
    eye = torch.where(b["flipped"].view(-1, 1), b["landmarks"][:, 1], b["landmarks"][:, 0])  # the blob's point
    assert not torch.allclose(b["landmarks"], fs.landmarks[b["index"]], atol=0.5)  # something moved
    assert (centroid(img) - eye).norm(dim=1).max() < 0.2  # sub-pixel; unmoved landmarks are off by up to 30 px


def test_random_resized_crop_magnifies_by_the_crop_side():
    lm = torch.tensor([[[10.0, 20.0], [30.0, 20.0], [20.0, 30.0], [12.0, 40.0], [28.0, 40.0]]])
    aug = Augment(AugmentConfig(flip=0.0, erasing=0.0, crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0)))
    _, lm2, _ = aug.spatial(torch.zeros(1, 3, 48, 48), lm, torch.Generator().manual_seed(3))
    assert torch.allclose((lm2[0, 1] - lm2[0, 0]).norm(), 2 * (lm[0, 1] - lm[0, 0]).norm(), atol=1e-4)
    aug = Augment(AugmentConfig(flip=0.0, erasing=0.0, rotate=90.0, scale=(1.0, 1.0)))
    _, lm3, _ = aug.spatial(torch.zeros(64, 3, 48, 48), lm.expand(64, -1, -1), torch.Generator().manual_seed(0))
    centre = torch.tensor([23.5, 23.5])  # rotation about the image centre keeps distances to it
    assert torch.allclose((lm3 - centre).norm(dim=-1), (lm - centre).norm(dim=-1).expand(64, -1), atol=1e-4)


def test_color_jitter_matches_torchvision_per_image():
    x = torch.rand(6, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    f = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4, 0.9])
    h = torch.tensor([-0.4, -0.1, 0.0, 0.05, 0.25, 0.5])
    for name, fn, factors in (("brightness", TF.adjust_brightness, f), ("contrast", TF.adjust_contrast, f),
                              ("saturation", TF.adjust_saturation, f), ("hue", TF.adjust_hue, h)):
        y = color_jitter(x, **{name: factors})
        for i in range(6):
            assert torch.allclose(y[i], fn(x[i], float(factors[i])), atol=1e-5), (name, i)
    assert torch.allclose(grayscale(x)[:, 0], TF.rgb_to_grayscale(x)[:, 0], atol=1e-6)


def test_grayscale_probability_and_jitter_leave_landmarks_alone(synth_small):
    train, _ = synth_small
    aug = Augment(AugmentConfig(flip=0.0, erasing=0.0, grayscale=0.5, brightness=0.2, contrast=0.2,
                                saturation=0.2, hue=0.05))
    x = train.images[:200].float() / 255
    _, lm, _ = aug.spatial(x, train.landmarks[:200], torch.Generator().manual_seed(0))
    y = aug.photometric(x, torch.Generator().manual_seed(0))
    gray = (y[:, 0] == y[:, 1]).flatten(1).all(1) & (y[:, 1] == y[:, 2]).flatten(1).all(1)
    assert torch.equal(lm, train.landmarks[:200]) and abs(gray.float().mean().item() - 0.5) < 0.1
    assert y.min() >= 0 and y.max() <= 1 and not torch.allclose(y[~gray], x[~gray])


def test_augment_config_errors_name_the_key():
    for kw, key in ((dict(hue=0.7), "hue"), (dict(grayscale=1.5), "grayscale"),
                    (dict(crop_scale=(0.5, 0.2)), "crop_scale"),
                    (dict(rotate=-1.0), "rotate"), (dict(scale=(0.0, 1.0)), "scale")):
        with pytest.raises(ConfigError, match=f"data.augment.{key}"):
            Augment(AugmentConfig(**kw))


def test_host_residency_streams_the_same_batches(synth_small):
    train = synth_small[0].subset(range(100))
    aug = Augment(AugmentConfig(shift=0.1, rotate=10.0, brightness=0.2, grayscale=0.2))
    dev = Loader(train, 32, "cpu", augment=aug, shuffle=True, seed=3)
    host = Loader(train, 32, "cpu", augment=aug, shuffle=True, seed=3, residency="host")
    assert dev.residency == "device" and host.residency == "host"
    assert Loader(train, 32, "cpu", residency="auto").residency == "device"
    for epoch in (0, 1):
        dev.set_epoch(epoch)
        host.set_epoch(epoch)
        batches = list(host)
        for a, b in zip(dev, batches):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # two buffers are reused, yet a batch held by the caller is never overwritten
    first = host.images[torch.arange(4)]
    host.images[torch.arange(4, 8)]
    host.images[torch.arange(8, 12)]
    assert torch.equal(first, train.images[:4])
    with pytest.raises(ConfigError, match="data.residency"):
        Loader(train, 32, "cpu", residency="disk")


def test_second_view_is_the_mirrored_first_view_without_erasing(synth_small):
    train, _ = synth_small
    aug = Augment(AugmentConfig(erasing=0.0, shift=0.1, brightness=0.3))
    b = next(iter(Loader(train, 32, "cpu", augment=aug, shuffle=True, second_view=True)))
    assert torch.equal(b["image2"], b["image"].flip(3))
