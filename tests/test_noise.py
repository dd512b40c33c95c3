import pytest
import torch

from fercore.data.noise import confusion, inject, parse_spec, symmetric


def test_symmetric_rate_within_one_point_over_ten_seeds():
    labels = torch.randint(0, 7, (10000,), generator=torch.Generator().manual_seed(0))
    for seed in range(10):
        noisy = symmetric(labels, 0.3, 7, seed)
        assert abs((noisy != labels).float().mean().item() - 0.3) < 0.01


def test_flips_never_keep_the_original_and_cover_every_other_class():
    labels = torch.zeros(20000, dtype=torch.long)
    noisy = symmetric(labels, 1.0, 7, 0)
    assert (noisy != 0).all()
    counts = torch.bincount(noisy, minlength=7)[1:].float()
    assert (counts / counts.sum() - 1 / 6).abs().max() < 0.02


def test_same_seed_same_flips():
    labels = torch.arange(1000) % 7
    assert torch.equal(symmetric(labels, 0.2, 7, 3), symmetric(labels, 0.2, 7, 3))
    assert not torch.equal(symmetric(labels, 0.2, 7, 3), symmetric(labels, 0.2, 7, 4))


def test_inject_reports_realised_rate_and_confusion(synth_small):
    train, _ = synth_small
    noisy = inject(train, "sym:0.3", seed=0)
    rep = noisy.meta["noise"]
    flipped = noisy.label != train.label
    assert torch.equal(noisy.extras["flipped"], flipped)
    assert rep["n_flipped"] == int(flipped.sum()) and rep["rate_realised"] == pytest.approx(flipped.float().mean().item())
    assert torch.equal(noisy.clean_label, train.label)
    cm = torch.tensor(rep["confusion"])
    assert torch.equal(cm, confusion(train.label, noisy.label, 7)) and cm.sum() == len(train)
    assert cm.diag().sum() == len(train) - rep["n_flipped"]
    assert torch.equal(noisy.true_label, train.true_label)  # ground truth untouched


def test_spec_errors():
    assert parse_spec("none") == ("none", 0.0) and parse_spec("sym:0.1") == ("sym", 0.1)
    for bad in ("sym", "flip:0.3", "sym:abc"):
        with pytest.raises(ValueError, match="data.noise"):
            parse_spec(bad)
