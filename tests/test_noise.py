import hashlib

import fixtures as fx
import pytest
import torch

from fercore.config import build_config
from fercore.data import noise
from fercore.data.datasets import load_dataset
from fercore.data.noise import (
    ASYM_PAIRS,
    NoiseSpec,
    asym_targets,
    asymmetric,
    confusion,
    inject,
    parse_spec,
    symmetric,
    write_label_file,
)
from fercore.errors import DataError

CLASSES7 = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")


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
    target = asym_targets(ASYM_PAIRS.items(), CLASSES7)
    assert torch.equal(asymmetric(labels, 0.2, target, 3), asymmetric(labels, 0.2, target, 3))


def test_asymmetric_flips_each_class_to_its_partner_at_the_rate():
    target = asym_targets(ASYM_PAIRS.items(), CLASSES7)
    # LA-Net's map: anger<->disgust, fear->surprise, happy->neutral, sad->neutral, surprise->anger, neutral->sad
    assert target.tolist() == [2, 0, 0, 6, 3, 6, 5]
    labels = torch.arange(7).repeat_interleave(3000)
    noisy = asymmetric(labels, 0.3, target, 0)
    flipped = noisy != labels
    assert torch.equal(noisy[flipped], target[labels[flipped]])
    for k in range(7):
        assert abs(flipped[labels == k].float().mean().item() - 0.3) < 0.03


def test_asymmetric_pairs_given_in_the_spec_and_classes_without_partner():
    spec = parse_spec("asym:0.5:happiness>surprise,sad>anger")
    assert spec == NoiseSpec("asym", 0.5, (("happy", "surprise"), ("sad", "anger")))
    classes = CLASSES7 + ("other",)
    target = asym_targets(spec.pairs, classes)
    assert target.tolist() == [-1, 3, 6, -1, -1, -1, -1, -1]
    labels = torch.tensor([7] * 500 + [0] * 500)
    assert torch.equal(asymmetric(labels, 1.0, asym_targets(ASYM_PAIRS.items(), classes), 0)[:500], labels[:500])
    with pytest.raises(ValueError, match=r"asym pair happy>neutral leaves the classes"):
        asym_targets(ASYM_PAIRS.items(), CLASSES7[1:] + ("contempt",))  # ckplus7 has no neutral


def test_spec_grammar_and_errors():
    assert parse_spec("none") == NoiseSpec("none") and parse_spec("sym:0.1") == NoiseSpec("sym", 0.1)
    assert parse_spec("asym:0.3") == NoiseSpec("asym", 0.3, tuple(ASYM_PAIRS.items()))
    assert parse_spec("eac30") == NoiseSpec("file", path="EmoLabel/noise03.txt", sha256=noise.EAC_NOISE["eac30"][1])
    assert parse_spec("file:/x/noise.txt") == NoiseSpec("file", path="/x/noise.txt")
    for bad, msg in (("sym", "expected none"), ("flip:0.3", "expected none"), ("sym:abc", "not a number"),
                     ("sym:1.5", r"must be in \[0, 1\]"), ("sym:0.3:a>b", "sym takes no class pairs"),
                     ("asym:0.3:happy", "must read <from>><to>"), ("asym:0.3:happy>smirk", "smirk"),
                     ("eac40", "expected none")):
        with pytest.raises(ValueError, match="data.noise"):
            parse_spec(bad)
        with pytest.raises(ValueError, match=msg):
            parse_spec(bad)


def test_inject_reports_realised_rate_and_confusion(synth_small):
    train, _ = synth_small
    noisy = inject(train, "sym:0.3", seed=0)
    rep = noisy.meta["noise"]
    flipped = noisy.label != train.label
    assert torch.equal(noisy.extras["flipped"], flipped)
    assert rep["n_flipped"] == int(flipped.sum())
    assert rep["rate_realised"] == pytest.approx(flipped.float().mean().item())
    assert torch.equal(noisy.clean_label, train.label)
    cm = torch.tensor(rep["confusion"])
    assert torch.equal(cm, confusion(train.label, noisy.label, 7)) and cm.sum() == len(train)
    assert cm.diag().sum() == len(train) - rep["n_flipped"]
    k = int(train.label[0])
    assert rep["rate_per_class"][k] == pytest.approx(flipped[train.label == k].float().mean().item())
    assert torch.equal(noisy.true_label, train.true_label)  # ground truth untouched
    asym = inject(train, "asym:0.4", seed=1).meta["noise"]
    assert asym["kind"] == "asym" and torch.tensor(asym["confusion"]).diag().sum() == len(train) - asym["n_flipped"]


def test_load_dataset_never_touches_test_labels(synth_small):
    cfg = build_config("smoke", overrides=["data.n_train=256", "data.n_test=96", "data.image_size=48",
                                           "data.noise=sym:0.5"])
    train, test = load_dataset(cfg.data)
    assert torch.equal(test.label, synth_small[1].label) and torch.equal(test.clean_label, synth_small[1].label)
    assert (train.label != train.clean_label).any() and "noise" not in test.meta


# --- files: EAC's RAF-DB noise files by hash, fercore's own files by name ---------------------

@pytest.fixture
def raf(tmp_path, synth_small):
    train, test = synth_small[0].subset(range(40)), synth_small[1].subset(range(8))
    fx.write_rafdb(tmp_path, train, test)
    noisy = fx.write_eac_noise(tmp_path, "noise03.txt", train)
    return tmp_path, noisy


def read(root, *overrides):
    cfg = build_config("smoke", overrides=["data.dataset=rafdb", f"data.data_root={root}", "data.image_size=48",
                                           *overrides])
    return load_dataset(cfg.data)


def test_eac_file_is_refused_unless_its_hash_is_the_published_one(raf, monkeypatch):
    root, noisy = raf
    with pytest.raises(DataError, match=r"noise03.txt: sha256 [0-9a-f]{64} differs from the published bb2f536c"):
        read(root, "data.noise=eac30")
    digest = hashlib.sha256((root / "EmoLabel" / "noise03.txt").read_bytes()).hexdigest()
    monkeypatch.setitem(noise.EAC_NOISE, "eac30", ("EmoLabel/noise03.txt", digest))
    train, test = read(root, "data.noise=eac30")
    assert [train.classes[int(k)] for k in train.label] == [noisy[i] for i in train.ids]
    rep = train.meta["noise"]
    assert rep["sha256"] == digest and rep["n_flipped"] == 10 and rep["rate_realised"] == pytest.approx(0.25)
    assert torch.equal(test.label, read(root)[1].label)  # test labels from the clean file
    sub, _ = read(root, "data.noise=eac30", "data.n_train=9")  # applies by name to a subsample
    assert [sub.classes[int(k)] for k in sub.label] == [noisy[i] for i in sub.ids]


def test_noise_file_with_wrong_row_count_or_names(raf, monkeypatch):
    root, _ = raf
    path = root / "EmoLabel" / "noise03.txt"
    lines = path.read_text().split("\n")
    path.write_text("\n".join(lines[:-1]))
    with pytest.raises(DataError, match=r"noise03.txt:40: 39 label lines, the training split has 40 rows"):
        read(root, f"data.noise=file:{path}")
    path.write_text("\n".join(lines + ["train_00041.jpg 3"]))
    with pytest.raises(DataError, match=r"noise03.txt:41: 41 label lines, the training split has 40 rows"):
        read(root, f"data.noise=file:{path}")
    path.write_text("\n".join(lines[:-1] + ["train_09999.jpg 3"]))
    with pytest.raises(DataError, match=r"noise03.txt: no line for training image 'train_00040.jpg'"):
        read(root, f"data.noise=file:{path}")
    path.write_text("\n".join(lines[:-1] + ["train_00040.jpg 9"]))
    with pytest.raises(DataError, match=r"noise03.txt:40: label '9' out of range"):
        read(root, f"data.noise=file:{path}")
    with pytest.raises(DataError, match="eac30 is EAC's RAF-DB file; dataset is 'synthfer'"):
        load_dataset(build_config("smoke", overrides=["data.noise=eac30", "data.n_train=16", "data.n_test=8"]).data)


def test_generated_noise_written_in_raf_coding_reads_back(raf, tmp_path):
    root, _ = raf
    clean, _ = read(root)
    noisy = inject(clean, "sym:0.3", seed=5)
    out = tmp_path / "gen" / "noise_sym30_s5.txt"
    digest = write_label_file(out, noisy.ids, noisy.label, noisy)
    raw = out.read_bytes()
    assert digest == hashlib.sha256(raw).hexdigest() and not raw.endswith(b"\n") and b"\r" not in raw
    first = raw.decode().split("\n")[0].split(" ")
    assert first[0] == "train_00001.jpg" and int(first[1]) == fx.RAF_CODE[noisy.classes[int(noisy.label[0])]]
    back, _ = read(root, f"data.noise=file:{out}")
    assert torch.equal(back.label, noisy.label) and back.meta["noise"]["sha256"] == digest
    assert back.meta["noise"]["n_flipped"] == noisy.meta["noise"]["n_flipped"]
