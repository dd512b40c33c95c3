"""SCN, RUL and EAC: their losses and rules on small hand-checked tensors, and the method wiring."""
import math

import pytest
import torch
import torch.nn.functional as F

from fercore.data.augment import Augment
from fercore.data.loader import Loader
from fercore.methods import METHODS, get_method
from fercore.methods.base import DataFacts, TrainState
from fercore.methods.eac import class_activation_maps, consistency, mirror
from fercore.methods.rul import add_up_loss, feature_map_shape, uncertainty_mixup
from fercore.methods.scn import high_group_mask, rank_regularization, relabel_rule


def _batch(data, n=8):
    loader = Loader(data, n, torch.device("cpu"))
    return next(iter(loader))


# --- SCN ---

def test_scn_rank_regularization_by_hand():
    alpha = torch.tensor([0.1, 0.9, 0.2, 0.7, 0.8], requires_grad=True)
    # beta 0.7 of 5 -> int(3.5) = 3 high: {0.9, 0.8, 0.7} mean 0.8; low {0.2, 0.1} mean 0.15; gap 0.65
    rr = rank_regularization(alpha, 0.7, 0.7)
    assert rr.item() == pytest.approx(0.05)
    rr.backward()
    assert alpha.grad.tolist() == pytest.approx([0.5, -1 / 3, 0.5, -1 / 3, -1 / 3])
    assert rank_regularization(alpha, 0.7, 0.5).item() == 0.0            # gap above the margin: no loss
    assert high_group_mask(alpha, 0.7).tolist() == [False, True, False, True, True]
    assert rank_regularization(torch.tensor([0.3]), 0.7, 0.15).item() == 0.0  # one sample: no groups


def test_scn_relabel_rule_by_hand():
    prob = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4], [0.05, 0.05, 0.9]])
    label = torch.tensor([0, 1, 2, 0])
    mask, new, score = relabel_rule(prob, label, 0.2)
    assert mask.tolist() == [True, False, False, True]          # 0.6 > 0.2, 0.1, 0, 0.85 > 0.2
    assert new.tolist() == [1, 0, 2, 2]
    assert score.tolist() == pytest.approx([0.6, 0.1, 0.0, 0.85])


def test_scn_forward_scales_logits_and_relabels_from_its_epoch(tiny_config, synth_small):
    train, _ = synth_small
    cfg = tiny_config("scn.relabel_epoch=3", "scn.margin2=0.2", method="scn")
    scn = get_method("scn")(cfg, train).eval()
    batch = _batch(train)
    out = scn(batch)
    f = scn.backbone(batch["image"])
    assert torch.allclose(out["logits"], out["importance"][:, None] * scn.fc(f), atol=1e-6)
    assert ((out["importance"] > 0) & (out["importance"] < 1)).all()

    # hand-made outputs: sample 0 and 2 satisfy the rule, sample 2 is in the high-importance group
    index = torch.tensor([10, 11, 12, 13])
    labels = torch.zeros(len(train), dtype=torch.long)
    fake = {"logits": torch.log(torch.tensor([[0.1, 0.8, 0.1] + [1e-9] * 4, [0.9, 0.05, 0.05] + [1e-9] * 4,
                                              [0.1, 0.1, 0.8] + [1e-9] * 4, [0.6, 0.3, 0.1] + [1e-9] * 4])),
            "importance": torch.tensor([0.2, 0.9, 0.8, 0.7])}
    fbatch = {"index": index, "label": labels[index]}
    state = TrainState(epoch=1, epochs=5, labels=labels.clone())        # epoch 2 (1-based) < 3: nothing
    scn.after_step(fbatch, fake, state)
    assert state.relabels == [] and torch.equal(state.labels, labels)
    state.epoch = 2
    scn.after_step(fbatch, fake, state)
    assert [(e["index"], e["old"], e["new"]) for e in state.relabels] == [(10, 0, 1), (12, 0, 2)]
    assert state.labels[10].item() == 1 and state.labels[12].item() == 2
    assert scn.diagnostics()["importance"][index].tolist() == pytest.approx([0.2, 0.9, 0.8, 0.7])
    assert torch.isnan(scn.diagnostics()["importance"][0])                # not seen this epoch

    low = get_method("scn")(tiny_config("scn.relabel_epoch=1", "scn.relabel_group=low", method="scn"), train)
    state = TrainState(epoch=0, epochs=5, labels=labels.clone())
    low.after_step(fbatch, fake, state)                                # top int(0.7*4)=2: 0.9, 0.8 kept
    assert [e["index"] for e in state.relabels] == [10]


def test_scn_loss_adds_rank_regularization(tiny_config, synth_small):
    train, _ = synth_small
    scn = get_method("scn")(tiny_config("scn.margin1=0.5", method="scn"), train)
    out = {"logits": torch.tensor([[2.0, 0.0] + [0.0] * 5, [0.0, 1.0] + [0.0] * 5]),
           "importance": torch.tensor([0.6, 0.4])}
    batch = {"label": torch.tensor([0, 1]), "index": torch.tensor([0, 1])}
    loss, logs = scn.loss(batch, out, TrainState(0, 1, train.label.clone()))
    ce = F.cross_entropy(out["logits"], batch["label"])
    # int(0.7*2) = 1 high (0.6) vs low (0.4): max(0, 0.5 - 0.2) = 0.3
    assert logs["rr"].item() == pytest.approx(0.3) and loss.item() == pytest.approx(ce.item() + 0.3)


# --- RUL ---

def test_rul_uncertainty_mixup_by_hand():
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logvar = torch.log(torch.tensor([[1.0, 1.0], [2.0, 4.0]]))       # u = mean(exp) = 1 and 3
    mixed, u, w = uncertainty_mixup(mu, logvar, torch.tensor([1, 0]))
    assert u.tolist() == pytest.approx([1.0, 3.0])
    assert w.tolist() == pytest.approx([0.25, 0.75])                 # u / (u + u_partner)
    assert mixed.tolist() == [pytest.approx([0.25, 0.75]), pytest.approx([0.25, 0.75])]


def test_rul_add_up_loss_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])       # p = (3/4, 1/4) and (1/2, 1/2)
    label, perm = torch.tensor([0, 1]), torch.tensor([1, 0])
    want = 0.5 * (math.log(4 / 3) + math.log(2)) / 2 + 0.5 * (math.log(4) + math.log(2)) / 2
    assert add_up_loss(logits, label, perm).item() == pytest.approx(want)


def test_rul_heads_fit_the_feature_map_and_inference_uses_mu(tiny_config, synth_small):
    train, _ = synth_small
    cfg = tiny_config(method="rul")
    rul = get_method("rul")(cfg, train)
    assert feature_map_shape(rul.backbone, 3, 48) == (512, 2, 2) and rul.mu[3].in_features == 512 * 2 * 2
    batch = _batch(train)
    rul.train()
    out = rul(batch)
    assert sorted(out["perm"].tolist()) == list(range(8)) and out["mix_weight"].shape == (8,)
    loss, _ = rul.loss(batch, out, TrainState(0, 1, train.label.clone()))
    assert loss.item() == pytest.approx(add_up_loss(out["logits"], batch["label"], out["perm"]).item())
    rul.eval()
    ev = rul.predict(batch)
    fmap = rul.backbone.forward_features(batch["image"])
    assert torch.allclose(ev["logits"], rul.fc(rul.mu(fmap)), atol=1e-6)
    assert torch.allclose(ev["uncertainty"], rul.logvar(fmap).exp().mean(1), atol=1e-6)
    groups = {g["name"]: g for g in rul.param_groups(cfg.optim)}
    assert len(groups["heads"]["params"]) == 2                         # only the final classifier


# --- EAC ---

def _eac_flip_grid(h: int, w: int) -> torch.Tensor:
    """EAC's `generate_flip_grid` (src/utils.py) as a grid_sample grid (1, h, w, 2)."""
    x = torch.arange(w).view(1, -1).expand(h, -1).float()
    y = torch.arange(h).view(-1, 1).expand(-1, w).float()
    return torch.stack([-(2 * x / (w - 1) - 1), 2 * y / (h - 1) - 1], dim=-1).unsqueeze(0)


def test_eac_mirror_is_eacs_grid_sample_flip():
    maps = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
    assert mirror(maps).tolist() == [[[[3.0, 2.0, 1.0], [6.0, 5.0, 4.0]]]]
    eac = F.grid_sample(maps, _eac_flip_grid(2, 3), mode="bilinear", padding_mode="border", align_corners=True)
    assert torch.allclose(mirror(maps), eac, atol=1e-6)


def test_eac_cams_and_consistency_by_hand():
    fmap = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])              # (1, C=2, 1, 2)
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])    # (K=3, C=2)
    cam = class_activation_maps(fmap, weight)
    assert cam.tolist() == [[[[1.0, 2.0]], [[3.0, 0.0]], [[-2.0, 2.0]]]]
    # a map equal to its partner's mirror is consistent; a constant offset of 1 gives MSE 1
    assert consistency(cam, mirror(cam)).tolist() == [0.0]
    assert consistency(cam, mirror(cam) + 1).tolist() == [1.0]


def test_eac_loss_trains_features_not_the_classifier_through_cams(tiny_config, synth_small):
    train, _ = synth_small
    eac = get_method("eac")(tiny_config("eac.second_view=shared", method="eac"), train).train()
    batch = _batch(train)
    out = eac(batch)
    loss, _ = eac.loss(batch, out, TrainState(0, 1, train.label.clone()))
    ce = F.cross_entropy(out["logits"], batch["label"])
    assert loss.item() == pytest.approx(ce.item() + 5 * F.mse_loss(out["cam1"], mirror(out["cam2"])).item(), rel=1e-5)
    (5 * F.mse_loss(out["cam1"], mirror(out["cam2"]))).backward()      # the consistency term alone
    assert eac.fc.weight.grad is None or eac.fc.weight.grad.abs().sum() == 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in eac.backbone.parameters())


def test_eac_second_view_follows_eacs_rule_and_the_loader_makes_it(tiny_config, synth_small):
    train, _ = synth_small
    auto_clean = get_method("eac")(tiny_config(method="eac"), train)
    auto_noisy = get_method("eac")(tiny_config("data.noise=sym:0.2", method="eac"), train)
    assert auto_clean.describe() == {"second_view": "shared"} and auto_clean.loader_options() == {"second_view": False}
    assert auto_noisy.describe() == {"second_view": "independent"}
    assert auto_noisy.loader_options() == {"second_view": True}
    cfg = tiny_config().data.augment
    for erasing in (0.0, 1.0):
        aug = Augment(type(cfg)(flip=0.5, shift=0.0, erasing=erasing))
        b = next(iter(Loader(train, 16, torch.device("cpu"), augment=aug, shuffle=True, second_view=True)))
        mirrored = b["image"].flip(3)
        if erasing == 0:
            assert torch.equal(b["image2"], mirrored)                   # the same geometry, mirrored
        else:
            erased1, erased2 = (mirrored == 0).all(1), (b["image2"] == 0).all(1)
            assert not torch.equal(erased1, erased2)                    # its own erase box
            both = ~erased1 & ~erased2
            assert torch.equal(b["image2"].permute(1, 0, 2, 3)[:, both], mirrored.permute(1, 0, 2, 3)[:, both])


# --- every registered method through the same interface ---

@pytest.mark.parametrize("name", sorted(METHODS))
def test_methods_rebuild_from_data_facts(name, tiny_config, synth_small):
    train, _ = synth_small
    cfg = tiny_config(method=name)
    torch.manual_seed(0)
    trained = get_method(name)(cfg, train)
    facts = DataFacts.of(train)
    assert facts.num_train == len(train) and facts.au_names == train.meta["au_names"]
    rebuilt = get_method(name)(cfg, DataFacts(**facts.to_dict()))
    rebuilt.load_state_dict(trained.state_dict())
    batch = _batch(train)
    assert torch.equal(trained.eval().predict(batch)["logits"], rebuilt.eval().predict(batch)["logits"])


@pytest.mark.parametrize("profile", ["smoke", "quick", "real"])
def test_poi_regions_sit_on_distinct_cells_in_the_cpu_profiles(profile):
    """A regime fair to POI: its landmark regions are centred on distinct cells of a map at least 6x6
    (docs/poi.md#facial-subregions)."""
    from fercore.bench import spatial_maps

    maps = spatial_maps(profile)
    print(f"{profile}: {maps['backbone']} at {maps['image_size']} px: EAC's CAM {maps['eac_cam']}, POI's map "
          f"{maps['poi_map']} (stride {maps['poi_stride']}), region cells {maps['poi_regions']}")
    assert min(maps["poi_map"]) >= 6, maps
    cells = list(maps["poi_regions"].values())
    assert len(set(cells)) == len(cells) == 5, maps


@pytest.mark.parametrize("profile", ["smoke", "quick", "real"])
def test_eac_cam_is_spatial_in_the_cpu_profiles(profile):
    """A regime fair to EAC: its class-activation map is at least 4x4, so its flip consistency compares
    layouts, not single numbers (docs/baselines.md#5-eac-erasing-attention-consistency)."""
    from fercore.bench import spatial_maps

    maps = spatial_maps(profile)
    print(f"{profile}: {maps['backbone']} at {maps['image_size']} px: EAC's CAM {maps['eac_cam']}")
    assert min(maps["eac_cam"]) >= 4, maps
