import torch

from fercore.data.synthfer import AU_NAMES, SynthFERConfig, generate, load_synthfer
from fercore.data.synthfer.dataset import RAFDB_TRAIN_COUNTS, class_prior, sample_expressions
from fercore.data.synthfer.facs import AU_INDEX


def test_shapes_and_ground_truth_fields(synth_small):
    train, test = synth_small
    assert train.images.shape == (256, 3, 48, 48) and train.images.dtype == torch.uint8
    assert len(test) == 96 and train.classes == test.classes and len(train.classes) == 7
    assert train.au.shape == (256, len(AU_NAMES)) and train.au_mask.all()
    assert train.va.shape == (256, 2) and train.va.abs().max() <= 1
    assert train.landmarks.shape == (256, 5, 2)
    votes = train.extras["votes"]
    assert (votes.sum(1) == 10).all()
    assert torch.allclose(train.soft_label.sum(1), torch.ones(256))
    # the annotated label is the plurality of the votes
    assert (votes[torch.arange(256), train.label] == votes.max(1).values).all()


def test_same_seed_same_faces_other_seed_other_faces():
    a, _ = generate(SynthFERConfig(seed=1), 40, 8, 32)
    b, _ = generate(SynthFERConfig(seed=1), 40, 8, 32)
    c, _ = generate(SynthFERConfig(seed=2), 40, 8, 32)
    assert torch.equal(a.images, b.images) and torch.equal(a.label, b.label)
    assert not torch.equal(a.images, c.images)


def test_eye_landmarks_land_on_the_dark_iris(synth_small):
    """Landmarks go through the same pose as the pixels: the pixel under each eye landmark is
    darker than the face's skin (iris and pupil), whatever the rotation, scale and shift."""
    train, _ = synth_small
    keep = (train.extras["occluded"] == 0) & (train.extras["glasses"] == 0)
    img = train.images[keep].float().mean(1)                      # (n, H, W) brightness
    lm = train.landmarks[keep].round().long().clamp(0, 47)
    n = len(img)
    eyes = torch.stack([img[torch.arange(n), lm[:, j, 1], lm[:, j, 0]] for j in (0, 1)], 1).mean(1)
    nose_x = lm[:, 2, 0]
    cheek_y = ((lm[:, 2, 1] + lm[:, 0, 1]) // 2)
    cheek = img[torch.arange(n), cheek_y, nose_x]                 # skin between eyes and nose
    assert (eyes < cheek).float().mean() > 0.9


def test_mouth_corners_follow_the_smile():
    """AU12 pulls the mouth corners up (y decreases) relative to a neutral face."""
    cfg = SynthFERConfig(blend_fraction=0.0, intensity=(1.0, 1.0), p_occluder=0.0)
    train, _ = generate(cfg, 400, 1, 64)
    lm = train.landmarks
    rel = ((lm[:, 3, 1] + lm[:, 4, 1]) / 2) - lm[:, 2, 1]         # corners below the nose tip
    happy, neutral, sad = (train.true_label == k for k in (1, 0, 2))
    assert rel[happy].mean() < rel[neutral].mean() < rel[sad].mean()


def test_majority_vote_differs_from_true_emotion_on_a_realistic_fraction():
    fs, _ = generate(SynthFERConfig(), 3000, 1, 16)
    wrong = (fs.label != fs.true_label).float().mean().item()
    assert 0.05 <= wrong <= 0.15, wrong
    blended = fs.extras["blend_weight"] < 1
    assert (fs.label != fs.true_label)[blended].float().mean() > (fs.label != fs.true_label)[~blended].float().mean()


def test_class_prior_mimics_rafdb():
    cfg = SynthFERConfig()
    expr = sample_expressions(20000, cfg, torch.Generator().manual_seed(0))
    freq = torch.bincount(expr["true"], minlength=7).float() / 20000
    counts = torch.tensor([RAFDB_TRAIN_COUNTS[c] for c in ("neutral", "happy", "sad", "surprise", "fear",
                                                           "disgust", "anger")], dtype=torch.float)
    assert torch.allclose(freq, counts / counts.sum(), atol=0.01)
    assert torch.allclose(class_prior(SynthFERConfig(prior="uniform")), torch.full((7,), 1 / 7))


def test_prototype_aus_are_present_in_labels():
    """Pure, strong happy faces carry AU6 and AU12; anger faces AU4 and AU23."""
    expr = sample_expressions(4000, SynthFERConfig(blend_fraction=0, intensity=(1, 1)),
                              torch.Generator().manual_seed(0))
    au, true = expr["au"] >= 0.25, expr["true"]
    assert au[true == 1][:, [AU_INDEX[6], AU_INDEX[12]]].float().mean() > 0.95
    assert au[true == 6][:, [AU_INDEX[4], AU_INDEX[23]]].float().mean() > 0.95
    assert au[true == 0].float().mean() < 0.05


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path))
    a = load_synthfer(SynthFERConfig(seed=5), 30, 10, 24)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.startswith("synthfer-") for f in files)
    b = load_synthfer(SynthFERConfig(seed=5), 30, 10, 24)
    for x, y in zip(a, b):
        assert x.fingerprint() == y.fingerprint() and torch.equal(x.landmarks, y.landmarks)
        assert x.meta == y.meta and x.extras.keys() == y.extras.keys()
