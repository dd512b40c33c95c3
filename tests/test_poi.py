"""POI: subregion boxes, prior tables, KL terms, the ramp, the uncertainty regulariser, the method."""
import math
import sys
from pathlib import Path

import pytest
import torch

from fercore.config import AugmentConfig
from fercore.data.augment import Augment
from fercore.data.landmarks import (
    ARCFACE_112,
    TEMPLATE,
    mean_template,
    mirror_template,
    mtcnn_available,
    template_landmarks,
    with_landmarks,
)
from fercore.errors import ConfigError, DataError
from fercore.methods.poi.mutual import ensemble_mutual_loss, kl_div, pairwise_mutual_loss
from fercore.methods.poi.prior import AUPrior, au_vocabulary, load_tables, prior_matrix
from fercore.methods.poi.regions import MIRROR, REGIONS, check_regions, crop_regions, crop_size, region_boxes
from fercore.methods.poi.soft_label import objective_soft_label
from fercore.methods.poi.trn import transfer_loss
from fercore.methods.poi.uncertainty import log_penalty, ramp, rank_penalty

ROOT = Path(__file__).resolve().parents[1]
PATCH = 10 / 28


# --- facial subregions -------------------------------------------------------------------------

def _landmarks(*points):
    return torch.tensor([points], dtype=torch.float)


def test_landmark_box_is_centred_on_the_landmark_cell():
    # 48 px face, stride-8 map 6x6. Left eye at pixel (11.5, 19.5): continuous (12, 20) -> map (1.5, 2.5),
    # the centre of cell (column 1, row 2). Patch side 6 * 10/28 = 2.142857 cells.
    lmk = _landmarks((11.5, 19.5), (35.5, 19.5), (23.5, 27.5), (15.5, 35.5), (31.5, 35.5))
    boxes = region_boxes(lmk, (48, 48), (6, 6), ("left_eye", "right_eye", "glabella", "mouth_left"), PATCH)
    half = 6 * PATCH / 2
    assert torch.allclose(boxes[0, 0], torch.tensor([1.5 - half, 2.5 - half, 1.5 + half, 2.5 + half]))
    assert torch.allclose(boxes[0, 1], torch.tensor([4.5 - half, 2.5 - half, 4.5 + half, 2.5 + half]))
    assert torch.allclose(boxes[0, 2, [0, 2]], torch.tensor([3 - half, 3 + half]))  # eye midpoint x = 3.0
    # covered cells: columns 0..2 and rows 1..3 around the left eye's cell (1, 2)
    x0, y0, x1, y1 = boxes[0, 0].tolist()
    assert (math.floor(x0), math.ceil(x1) - 1, math.floor(y0), math.ceil(y1) - 1) == (0, 2, 1, 3)
    # the mouth corner at continuous (16, 36) -> (2.0, 4.5), box rows 3..5
    assert torch.allclose(boxes[0, 3], torch.tensor([2 - half, 4.5 - half, 2 + half, 4.5 + half]))


def test_crop_reads_the_cells_under_the_box():
    # a map whose channels hold each cell's centre coordinate: a crop's mean is its box centre
    lmk = _landmarks((11.5, 19.5), (35.5, 19.5), (23.5, 27.5), (15.5, 35.5), (31.5, 35.5))
    ys, xs = torch.meshgrid(torch.arange(6.0) + 0.5, torch.arange(6.0) + 0.5, indexing="ij")
    fmap = torch.stack([xs, ys]).unsqueeze(0)
    regions = ("left_eye", "right_eye", "glabella", "mouth_left", "mouth_right")
    boxes = region_boxes(lmk, (48, 48), (6, 6), regions, PATCH)
    crops = crop_regions(fmap, boxes, regions, PATCH)
    for r, crop in enumerate(crops):
        assert crop.shape == (1, 2, 2, 2)
        centre = ((boxes[0, r, :2] + boxes[0, r, 2:]) / 2)
        assert torch.allclose(crop.mean((2, 3))[0], centre, atol=1e-5), regions[r]
    assert crop_size("left_eye", (28, 28), PATCH) == (10, 10)  # AMP-Net's 10x10 patches at 224 px


def test_bf16_maps_are_cropped_at_float32_box_precision():
    lmk = _landmarks((11.3, 19.7), (35.5, 19.5), (23.5, 27.5), (15.5, 35.5), (31.1, 35.9))
    ys, xs = torch.meshgrid(torch.arange(28.0) + 0.5, torch.arange(28.0) + 0.5, indexing="ij")
    fmap = torch.stack([xs, ys]).unsqueeze(0)
    boxes = region_boxes(lmk * 224 / 48, (224, 224), (28, 28), ("left_eye", "mouth_right"), PATCH)
    fmap = fmap.bfloat16()
    exact = crop_regions(fmap.float(), boxes, ("left_eye", "mouth_right"), PATCH)  # same values, float32
    half = crop_regions(fmap, boxes, ("left_eye", "mouth_right"), PATCH)
    for e, h in zip(exact, half):
        assert h.dtype == torch.bfloat16 and torch.equal(h, e.bfloat16())


def test_boxes_stay_inside_the_map_by_shifting():
    lmk = _landmarks((0.0, 0.0), (47.0, 0.0), (23.5, 23.5), (0.0, 47.0), (47.0, 47.0))
    boxes = region_boxes(lmk, (48, 48), (6, 6), ("left_eye", "mouth_right"), PATCH)
    side = 6 * PATCH
    assert torch.allclose(boxes[0, 0], torch.tensor([0, 0, side, side]))
    assert torch.allclose(boxes[0, 1], torch.tensor([6 - side, 6 - side, 6, 6]))


def test_crops_follow_a_flip_of_the_image():
    """Flipping image and landmarks with the Loader's augmentation mirrors every box, and the crop
    of the mirrored map is the mirrored crop of the mirror region."""
    torch.manual_seed(0)
    regions = REGIONS
    lmk = torch.tensor([[[14.2, 17.0], [31.7, 18.4], [23.0, 26.1], [16.9, 35.2], [30.3, 34.0]],
                        [[12.0, 20.0], [33.0, 19.0], [22.0, 28.0], [15.0, 37.0], [32.0, 36.0]]])
    images = torch.rand(2, 3, 48, 48)
    aug = Augment(AugmentConfig(flip=1.0, shift=0.0, erasing=0.0))
    flipped_images, flipped_lmk, flipped = aug.spatial(images, lmk, torch.Generator().manual_seed(0))[:3]
    assert flipped.all() and torch.equal(flipped_images, images.flip(3))
    boxes = region_boxes(lmk, (48, 48), (6, 6), regions, PATCH)
    fboxes = region_boxes(flipped_lmk, (48, 48), (6, 6), regions, PATCH)
    fmap = torch.randn(2, 4, 6, 6)
    crops = crop_regions(fmap, boxes, regions, PATCH)
    fcrops = crop_regions(fmap.flip(3), fboxes, regions, PATCH)
    for r, name in enumerate(regions):
        m = regions.index(MIRROR.get(name, name))
        x0, y0, x1, y1 = boxes[:, m].unbind(1)
        assert torch.allclose(fboxes[:, r], torch.stack([6 - x1, y0, 6 - x0, y1], 1), atol=1e-5), name
        assert torch.allclose(fcrops[r], crops[m].flip(3), atol=1e-5), name


def test_region_names_are_checked():
    assert check_regions(["left_eye", "global"]) == ("left_eye", "global")
    with pytest.raises(ConfigError, match="nose_tip"):
        check_regions(["nose_tip"])
    with pytest.raises(ConfigError, match="twice"):
        check_regions(["left_eye", "left_eye"])


# --- the AU-to-emotion prior -------------------------------------------------------------------

# Transcribed independently from the sources (see au_emotion_priors.yaml for the citations).
EMFACS = {"neutral": {}, "happy": {6: 1, 12: 1}, "sad": {1: 1, 4: 1, 15: 1}, "surprise": {1: 1, 2: 1, 5: 1, 26: 1},
          "fear": {1: 1, 2: 1, 4: 1, 5: 1, 7: 1, 20: 1, 26: 1}, "disgust": {9: 1, 15: 1, 16: 1},
          "anger": {4: 1, 5: 1, 7: 1, 23: 1}, "contempt": {12: 1, 14: 1}}
DU2014 = {"neutral": {}, "happy": {12: 1, 25: 1, 6: .51}, "sad": {4: 1, 15: 1, 1: .60, 6: .50, 11: .26, 17: .67},
          "fear": {1: 1, 4: 1, 20: 1, 25: 1, 2: .57, 5: .63, 26: .33},
          "anger": {4: 1, 7: 1, 24: 1, 10: .26, 17: .52, 23: .29}, "surprise": {1: 1, 2: 1, 25: 1, 26: 1, 5: .66},
          "disgust": {9: 1, 10: 1, 17: 1, 4: .31, 24: .26}}


@pytest.mark.parametrize("table,expected", [("emfacs", EMFACS), ("du2014", DU2014)])
def test_prior_rows_match_the_cited_tables(table, expected):
    classes = tuple(expected)
    aus = au_vocabulary(classes)
    m = prior_matrix(table, classes, aus, normalize=False)
    for k, name in enumerate(classes):
        row = {aus[a]: round(float(v), 2) for a, v in enumerate(m[k]) if v != 0}
        assert row == expected[name], f"{table}/{name}"
    norm = prior_matrix(table, classes, aus)
    sums = norm.sum(1)
    assert torch.allclose(sums[1:], torch.ones(len(classes) - 1)) and sums[0] == 0  # neutral: empty row


def test_prior_tables_carry_their_citations():
    tables = load_tables()
    assert "EMFACS" in tables["emfacs"]["citation"] and "Ekman" in tables["emfacs"]["citation"]
    assert "Du, S., Tao, Y. & Martinez, A. M. (2014)" in tables["du2014"]["citation"]
    assert "E1454" in tables["du2014"]["citation"]


def test_prior_errors_name_the_key():
    classes = ("neutral", "happy", "contempt")
    with pytest.raises(ConfigError, match="no row for class 'contempt'"):
        prior_matrix("du2014", classes, au_vocabulary(classes))
    with pytest.raises(ConfigError, match="poi.prior"):
        prior_matrix("facs99", classes, au_vocabulary(classes))


def test_prior_layer_scores_a_full_prototype_highest():
    classes = ("neutral", "happy", "sad")
    aus = au_vocabulary(classes)
    layer = AUPrior(prior_matrix("emfacs", classes, aus), 3, len(aus), 8, residual="matrix", scale=8.0)
    a = torch.zeros(1, len(aus))
    a[0, [aus.index(6), aus.index(12)]] = 1.0              # AU6 + AU12: EMFACS happiness
    z = layer(a, torch.zeros(1, 8))
    assert torch.allclose(z, torch.tensor([[0.0, 8.0, 0.0]]))  # scale * 1 for happy, nothing for sad


def test_prior_files_are_package_data():
    import tomllib
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.yaml" in data["fercore.methods.poi"]


# --- KL terms on hand-computed distributions ---------------------------------------------------

L3 = math.log(3)


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_kl_div_by_hand():
    assert math.isclose(float(kl_div(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]).log())), math.log(2),
                        rel_tol=1e-6)
    assert float(kl_div(torch.tensor([0.2, 0.8]), torch.tensor([0.2, 0.8]).log())) == pytest.approx(0, abs=1e-7)


def test_mutual_learning_losses_by_hand():
    # two regions, two classes: s1 = (0, 0) -> p1 = (1/2, 1/2); s2 = (ln 3, 0) -> p2 = (3/4, 1/4)
    s = torch.tensor([[[0.0, 0.0], [L3, 0.0]]])
    p1, p2 = (0.5, 0.5), (0.75, 0.25)
    q = (math.sqrt(3) / (1 + math.sqrt(3)), 1 / (1 + math.sqrt(3)))  # softmax of the mean logits (ln3/2, 0)
    assert torch.allclose(objective_soft_label(s), torch.tensor([q]))
    assert float(ensemble_mutual_loss(s, 1.0)) == pytest.approx(_kl(q, p1) + _kl(q, p2), rel=1e-5)
    assert float(pairwise_mutual_loss(s, 1.0)) == pytest.approx(_kl(p1, p2) + _kl(p2, p1), rel=1e-5)
    # temperature 2: the logits halve and the loss is scaled by T^2 = 4
    p2t = (math.sqrt(3) / (1 + math.sqrt(3)), 1 / (1 + math.sqrt(3)))
    qt = (3 ** 0.25 / (1 + 3 ** 0.25), 1 / (1 + 3 ** 0.25))
    assert float(ensemble_mutual_loss(s, 2.0)) == pytest.approx(4 * (_kl(qt, p1) + _kl(qt, p2t)), rel=1e-5)


def test_mutual_learning_pulls_only_the_regions():
    s = torch.tensor([[[0.0, 0.0], [L3, 0.0]]], requires_grad=True)
    ensemble_mutual_loss(s, 4.0).backward()
    assert s.grad.abs().sum() > 0  # gradients reach the regions; the target q is detached
    g = s.grad.clone()
    s.grad = None
    q = objective_soft_label(s.detach(), 4.0).unsqueeze(1)
    (16 * kl_div(q.expand(1, 2, 2), (s / 4).log_softmax(-1)).sum(1).mean()).backward()
    assert torch.allclose(g, s.grad)


def test_transfer_loss_by_hand():
    logits = torch.tensor([[L3, 0.0]])                       # p = (3/4, 1/4)
    q = torch.tensor([[0.5, 0.5]])
    loss, terms = transfer_loss(logits, torch.tensor([0]), q, torch.tensor([0.25]), 1.0)
    ce, kd = -math.log(0.75), _kl((0.5, 0.5), (0.75, 0.25))
    assert float(terms["trn_ce"]) == pytest.approx(ce, rel=1e-6)
    assert float(terms["trn_kd"]) == pytest.approx(kd, rel=1e-5)
    assert float(loss) == pytest.approx(0.75 * ce + 0.25 * kd, rel=1e-5)
    loss0, _ = transfer_loss(logits, torch.tensor([0]), q, torch.tensor([0.0]), 1.0)
    assert float(loss0) == pytest.approx(ce, rel=1e-6)     # w = 0: the annotation alone


# --- the ramp and the dynamic weight -------------------------------------------------------------

def test_ramp_follows_the_sigmoid_schedule():
    # 60 epochs, length 1/6: t = epoch / 10
    for e in range(0, 10):
        assert ramp(e, 60) == pytest.approx(math.exp(-5 * (1 - e / 10) ** 2))
    assert ramp(10, 60) == 1.0 and ramp(59, 60) == 1.0
    assert [ramp(e, 60, start=0.1) for e in range(6)] == [0.0] * 6   # PIN warm-up: 6 epochs of w = 0
    assert ramp(6, 60, start=0.1) == pytest.approx(math.exp(-5))
    assert ramp(11, 60, start=0.1) == pytest.approx(math.exp(-5 * (1 - 0.5) ** 2))
    assert ramp(0, 10, length=0) == 1.0


@pytest.fixture(scope="module")
def poi_setup(synth_small):
    from fercore.config import build_config

    def make(*overrides, data=None):
        cfg = build_config("smoke", overrides=["method=poi", "model.backbone=resnet10t", "data.image_size=48",
                                               *overrides])
        from fercore.methods import get_method
        torch.manual_seed(0)
        return get_method("poi")(cfg, data or synth_small[0])
    return make


def _batch(fs, n=8, flipped=False):
    from fercore.data.loader import Loader
    batch = next(iter(Loader(fs, n, "cpu")))
    batch["flipped"] = torch.full((n,), flipped)
    return batch


@pytest.mark.parametrize("transfer,expected", [("dynamic", "u"), ("fixed", 0.5), ("none", 0.0)])
def test_w_follows_the_ramp(poi_setup, synth_small, transfer, expected):
    from fercore.methods.base import TrainState

    method = poi_setup(f"poi.transfer={transfer}")
    batch = _batch(synth_small[0])
    for epoch in (0, 1, 5):
        state = TrainState(epoch=epoch, epochs=12, labels=synth_small[0].label.clone())
        out = method(batch)
        method.loss(batch, out, state)
        w = method.diagnostics()["w"][batch["index"]]
        r = ramp(epoch, 12, 0.0, 1 / 6)
        want = out["u"].detach() * r if expected == "u" else torch.full_like(w, expected * r)
        assert torch.allclose(w, want, atol=1e-6), (transfer, epoch)
        assert ("u" in method.diagnostics()) == (transfer == "dynamic")


# --- the uncertainty regulariser ---------------------------------------------------------------

def _toy_uncertainty(reg: str, lam: float = 0.5, steps: int = 1500):
    """Per-sample free u = sigmoid(z); fixed per-sample CE (clean 0.3, flipped 3.0) and KD (0.2 for
    all): the TRN loss alone prefers u = 1 everywhere, because the soft-label term is always cheaper."""
    ce = torch.tensor([0.3] * 12 + [3.0] * 4)
    kd = torch.full((16,), 0.2)
    z = torch.zeros(16, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(steps):
        u = torch.sigmoid(z)
        loss = ((1 - u) * ce + u * kd).mean()
        if reg == "log":
            loss = loss + lam * log_penalty(u)
        elif reg == "rank":
            loss = loss + lam * 10 * rank_penalty(u, beta=0.25, margin=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.sigmoid(z).detach()


def test_uncertainty_collapses_without_a_regulariser():
    u = _toy_uncertainty("none")
    assert u.min() > 0.95  # every sample, clean or flipped, hands its label to the soft label


def test_log_regulariser_prevents_collapse():
    u = _toy_uncertainty("log", lam=0.5)
    # stationary point: CE - KD = lambda / (1 - u) -> flipped u = 1 - 0.5 / 2.8; clean (0.1 < lambda) -> 0
    assert u[12:].sub(1 - 0.5 / 2.8).abs().max() < 0.02
    assert u[:12].max() < 0.05


def test_rank_regulariser_keeps_a_gap():
    u = _toy_uncertainty("rank")
    s = u.sort(descending=True).values
    assert s[:4].mean() - s[4:].mean() >= 0.49
    assert rank_penalty(torch.tensor([0.9, 0.1, 0.1, 0.1]), beta=0.25, margin=0.5) == 0
    assert float(rank_penalty(torch.tensor([0.5, 0.4, 0.4, 0.4]), beta=0.25, margin=0.5)) == pytest.approx(0.4)


# --- the method ----------------------------------------------------------------------------------

def test_poi_forward_loss_backward_and_outputs(poi_setup, synth_small):
    from fercore.methods.base import TrainState

    method = poi_setup("poi.au_weight=1.0")
    batch = _batch(synth_small[0])
    out = method(batch)
    assert out["region_logits"].shape == (8, 5, 7) and out["logits"].shape == (8, 7)
    loss, logs = method.loss(batch, out, TrainState(epoch=3, epochs=6, labels=synth_small[0].label.clone()))
    loss.backward()
    assert torch.isfinite(loss) and {"pin_ce", "ml", "trn_ce", "trn_kd", "u_mean", "w_mean", "au_bce"} <= set(logs)
    assert method.pin.stem.net.conv1[0].weight.grad is not None and method.uncertainty.mlp[0].weight.grad is not None
    groups = method.param_groups(method.cfg.optim)
    stem_ids = {id(p) for p in method.pin.stem.parameters()}
    assert stem_ids <= {id(p) for p in groups[0]["params"]}
    pred = method.eval().predict(batch)
    assert pred["region_prob"].shape == (8, 5, 7) and pred["au_prob"].shape == (8, len(method.aus))
    assert torch.allclose(pred["pin_prob"].sum(1), torch.ones(8)) and ((pred["u"] > 0) & (pred["u"] < 1)).all()
    # the synthetic set annotates every AU of the vocabulary except AU11, AU16 and AU24
    missing = [a for a, c in zip(method.aus, method.au_cols.tolist()) if c < 0]
    assert missing == [11, 16, 24]


def test_label_aware_uncertainty_reads_the_annotation(poi_setup, synth_small):
    method = poi_setup("poi.u_input=feature+label").eval()
    batch = _batch(synth_small[0])
    u = method(batch)["u"]
    other = dict(batch, label=(batch["label"] + 1) % 7)
    assert not torch.allclose(u, method(other)["u"])           # another annotation, another u
    bare = {k: v for k, v in batch.items() if k != "label"}
    out = method(bare)                                         # a raw photo: the predicted class stands in
    want = method(dict(batch, label=out["logits"].argmax(1)))["u"]
    assert torch.allclose(out["u"], want)
    assert poi_setup()(bare)["u"].shape == (8,)                # the default u reads the face only


def test_poi_without_landmarks_uses_the_template(poi_setup, synth_small):
    bare = synth_small[0].replace(landmarks=None)
    method = poi_setup(data=bare)
    assert torch.allclose(method.template, TEMPLATE)
    batch = _batch(bare, flipped=True)
    assert "landmarks" not in batch
    lmk = method.batch_landmarks(batch)
    assert torch.allclose(lmk, template_landmarks(mirror_template(TEMPLATE), 8, (48, 48)))
    with_lmk = poi_setup()
    assert torch.allclose(with_lmk.template, mean_template(synth_small[0].landmarks, 48))


def test_poi_config_errors_name_the_key(poi_setup, synth_small):
    with pytest.raises(ConfigError, match="poi.mutual"):
        poi_setup("poi.mutual=everyone")
    with pytest.raises(ConfigError, match="poi.regions"):
        poi_setup("poi.regions=[left_eye,chin]")
    with pytest.raises(ConfigError, match="poi.residual"):
        poi_setup("poi.residual=full")
    with pytest.raises(ConfigError, match="poi.au_weight"):
        poi_setup("poi.au_weight=1.0", "poi.au_supervision=required",
                  data=synth_small[0].replace(au=None, au_mask=None))
    with pytest.raises(ConfigError, match="strides"):
        poi_setup("poi.stride=64")


def test_poi_trains_writes_diagnostics_and_restores(tiny_config):
    from fercore.data.datasets import load_dataset
    from fercore.engine import fit, predict_run

    cfg = tiny_config("poi.regions=[left_eye,mouth_right,top_left,global]", "poi.mutual=pairwise",
                      "data.noise=sym:0.3", method="poi")
    run = fit(cfg)
    d = run.diagnostics()
    m = run.metrics()
    assert d["q@2"].shape == (128, 7) and d["u@2"].shape == (128,) and d["w@2"].shape == (128,)
    assert d["region_prob@2"].shape == (128, 4, 7) and "region_prob@1" not in d
    seen = ~torch.isnan(torch.from_numpy(d["u@2"]))
    assert seen.sum() >= 96
    assert torch.allclose(torch.from_numpy(d["q@2"][seen.numpy()]).sum(1), torch.ones(int(seen.sum())))
    assert m["train_pin_ce"].notna().all() and (m["train_ramp"] > 0).all()
    assert run.env["method"]["regions"]["top_left"] == [1, 2, 4, 5, 6, 7, 9]
    # rebuilt from the run directory alone, it predicts what the engine evaluated
    pred = predict_run(run.path, load_dataset(cfg.data)[1])
    assert (pred["prob"].argmax(1) == d["test_pred@2"]).all()
    assert pred["region_prob"].shape == (64, 4, 7) and pred["u"].shape == (64,)


def test_paper_recipe_builds():
    from fercore.config import build_config

    cfg = build_config("paper", ROOT / "fercore/methods/poi/recipe_paper.yaml")
    assert cfg.method == "poi" and cfg.optim.optimizer == "sgd" and cfg.optim.lr == 0.01
    assert (cfg.optim.schedule, cfg.optim.step_size, cfg.optim.gamma) == ("step", 20, 0.1)
    assert cfg.data.augment.grayscale == 0.2 and cfg.data.image_size == 224


# --- analysis helpers ---------------------------------------------------------------------------

def test_analysis_helpers_by_hand():
    import numpy as np

    from fercore.methods.poi.analysis import boxes_to_pixels, soften
    from fercore.metrics import flip_auroc, vote_kl

    votes = np.array([[0.7, 0.3, 0.0], [1.0, 0.0, 0.0]])
    prob = np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]])
    want = [0.7 * math.log(0.7 / 0.5) + 0.3 * math.log(0.3 / 0.25), math.log(2)]
    assert np.allclose(vote_kl(votes, prob), want)
    assert np.allclose(soften(np.array([[0.75, 0.25]]), 2.0), [[3 ** 0.5 / (1 + 3 ** 0.5), 1 / (1 + 3 ** 0.5)]])
    assert flip_auroc(np.array([0.9, 0.8, 0.1, 0.2, np.nan]), np.array([1, 0, 0, 0, 1])) == 1.0
    assert flip_auroc(np.array([0.1, 0.8, 0.9]), np.array([1, 0, 0])) == 0.0
    assert torch.allclose(boxes_to_pixels(torch.tensor([0.0, 1.0, 6.0, 2.0]), 48, 6),
                          torch.tensor([-0.5, 7.5, 47.5, 15.5]))


# --- landmarks for faces without them ------------------------------------------------------------

def test_template_landmarks_follow_the_loader_flip():
    pts = template_landmarks(TEMPLATE, 1, (48, 48))
    assert torch.allclose(pts[0, 0], ARCFACE_112[0] / 112 * 48 - 0.5)
    aug = Augment(AugmentConfig(flip=1.0, erasing=0.0))
    _, moved, _ = aug.spatial(torch.zeros(1, 3, 48, 48), pts, torch.Generator().manual_seed(0))
    assert torch.allclose(moved, template_landmarks(TEMPLATE, 1, (48, 48), torch.tensor([True])), atol=1e-5)


def test_with_landmarks_fills_only_missing(synth_small):
    train = synth_small[0]
    assert with_landmarks(train) is train
    bare = with_landmarks(train.replace(landmarks=None))
    assert bare.landmarks.shape == (len(train), 5, 2) and bare.meta["landmarks"] == "template"
    with pytest.raises(DataError, match="landmarks"):
        with_landmarks(train.replace(landmarks=None), how="dlib")


@pytest.mark.skipif(not mtcnn_available(), reason="optional: pip install --no-deps facenet-pytorch==2.6.0")
def test_mtcnn_finds_five_landmarks_on_a_photo():
    import numpy as np
    from matplotlib import cbook
    from PIL import Image

    from fercore.data.landmarks import detect_landmarks

    with cbook.get_sample_data("grace_hopper.jpg") as f:   # public domain, shipped with matplotlib
        img = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
    pts, found = detect_landmarks(img.unsqueeze(0))
    assert found.all()
    (le, re, nose, ml, mr) = pts[0]
    assert le[0] < re[0] and ml[0] < mr[0]               # image left first
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])  # eyes above the nose above the mouth


def test_poi_is_registered():
    from fercore.methods import METHODS

    assert METHODS["poi"].__module__ == "fercore.methods.poi.method"
    assert "fercore.methods.poi" in sys.modules
