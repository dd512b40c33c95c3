"""MTAC's components on hand-computed cases, and the method end to end in the engine."""
import math

import numpy as np
import pytest
import torch

from fercore.engine import fit, restore
from fercore.errors import ConfigError
from fercore.methods.base import TrainState
from fercore.methods.mtac import MTAC
from fercore.methods.mtac.au_graph import adjacency, conditional_cooccurrence, masked_bce
from fercore.methods.mtac.confidence import confidence_weighted_mean
from fercore.methods.mtac.regularization import class_weights, rank_regularization
from fercore.methods.mtac.relabel import ClassTemplates, first_relabel_epoch, relabel_decision
from fercore.methods.mtac.va import ccc, va_loss
from fercore.metrics import au_f1, concordance, relabel_quality, va_ccc

# five samples, three AUs: AU0 occurs 3x, AU1 3x, AU2 2x; AU0&AU1 twice, AU1&AU2 once, AU0&AU2 never
AU = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.float)


def test_conditional_cooccurrence_on_a_hand_made_table():
    p = conditional_cooccurrence(AU)
    expected = torch.tensor([[0, 2 / 3, 0], [2 / 3, 0, 1 / 3], [0, 1 / 2, 0]])
    assert torch.allclose(p, expected)
    # a sample whose AU2 is not annotated counts for the AU0/AU1 pair only
    au = torch.cat([AU, torch.tensor([[1.0, 1.0, 1.0]])])
    mask = torch.ones_like(au)
    mask[-1, 2] = 0
    p = conditional_cooccurrence(au, mask)
    assert p[0, 1] == pytest.approx(3 / 4) and p[0, 2] == 0 and p[2, 1] == pytest.approx(1 / 2)


def test_adjacency_follows_the_ml_gcn_recipe():
    adj = adjacency(conditional_cooccurrence(AU), threshold=0.4, reweight=0.25)
    # binarised at 0.4: edges 0->1, 1->0, 2->1; column sums 1, 2, 0 -> weights 0.25, 0.125, 0.125; + I
    a = torch.tensor([[1, 0.125, 0], [0.25, 1, 0], [0, 0.125, 1]])
    d = torch.tensor([1.125, 1.25, 1.125]).rsqrt()
    expected = d[:, None] * a.T * d[None, :]
    assert torch.allclose(adj, expected, atol=1e-5)
    assert adj[0, 1] == pytest.approx(0.25 / math.sqrt(1.125 * 1.25), abs=1e-5)
    assert adj[1, 2] == pytest.approx(0.125 / math.sqrt(1.25 * 1.125), abs=1e-5) and adj[2, 1] == 0
    # no co-occurrence above the threshold: the graph is the identity
    assert torch.allclose(adjacency(conditional_cooccurrence(AU), threshold=0.9), torch.eye(3))


def test_rank_regularisation_on_hand_computed_confidences():
    c = torch.tensor([0.9, 0.3, 0.8, 0.2, 0.5])
    # beta 0.6: high group {0.9, 0.8, 0.5} mean 0.7333, low {0.3, 0.2} mean 0.25, gap 0.4833
    assert rank_regularization(c, 0.6, 0.6).item() == pytest.approx(0.6 - (2.2 / 3 - 0.25), abs=1e-6)
    assert rank_regularization(c, 0.6, 0.15).item() == 0


def test_class_weights_and_confidence_weighting():
    w = class_weights(torch.tensor([0, 0, 0, 1]), 3, "inverse")
    assert torch.allclose(w, torch.tensor([2 / 3, 2.0, 2.0]))      # empty class counts as one sample
    assert class_weights(torch.tensor([0, 1]), 2, "none").tolist() == [1.0, 1.0]
    loss = confidence_weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([0.75, 0.25]))
    assert loss.item() == pytest.approx(1.5)


def test_ccc_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(0.1, 0.5, 200)
    y = 0.6 * x + rng.normal(0.3, 0.3, 200)
    ref = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert ccc(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(ref, rel=1e-6)
    assert concordance(x, y) == pytest.approx(ref, rel=1e-9)
    assert ccc(torch.tensor(x), torch.tensor(x)).item() == pytest.approx(1.0)
    both = torch.tensor(np.stack([x, y], 1))
    assert va_loss(both, both, torch.ones(200)).item() == pytest.approx(0.0, abs=1e-6)
    r = va_ccc(np.stack([x, x], 1), np.stack([y, x], 1))
    assert r["valence"] == pytest.approx(ref) and r["arousal"] == pytest.approx(1.0)


def test_masks_make_au_and_va_losses_ignore_missing_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss = masked_bce(logits, target, mask)
    other = target.clone()
    other[1, 1] = 0.0                                      # changing a missing label changes nothing
    assert masked_bce(logits, other, mask).item() == pytest.approx(loss.item())
    loss.backward()
    assert logits.grad[1, 1] == 0 and logits.grad[0, 0] != 0
    assert masked_bce(logits, target, torch.zeros_like(mask)).item() == 0

    pred = torch.randn(12, 2, generator=torch.Generator().manual_seed(0)).tanh()
    va = torch.rand(12, 2) * 2 - 1
    m = torch.ones(12)
    m[:3] = 0
    changed = va.clone()
    changed[:3] = 5.0
    for kind in ("ccc", "mse"):
        assert va_loss(pred, va, m, kind).item() == pytest.approx(va_loss(pred, changed, m, kind).item())
        assert va_loss(pred, va, m, kind).item() == pytest.approx(va_loss(pred[3:], va[3:], m[3:], kind).item())
    assert va_loss(pred, va, torch.zeros(12)).item() == 0
    # fewer annotated samples than min_samples: MSE fallback
    m2 = torch.zeros(12)
    m2[:2] = 1
    assert va_loss(pred, va, m2, "ccc", 8).item() == pytest.approx((pred[:2] - va[:2]).pow(2).sum(1).mean().item())


def test_relabel_decision_needs_both_conditions():
    # cos to 3 class templates; labels 0; margin 0.2
    cos = torch.tensor([[0.1, 0.9, 0.0],     # margin 0.8, classifier agrees -> relabel to 1
                        [0.1, 0.9, 0.0],     # margin 0.8, classifier says 2 -> keep
                        [0.6, 0.75, 0.0],    # margin 0.15, classifier agrees -> keep
                        [0.1, 0.9, 0.0],     # both hold, but not a candidate (high confidence) -> keep
                        [0.1, 0.9, math.nan]])  # class 2 without template; margin 0.8, agrees -> relabel
    logits = torch.tensor([[0, 5, 0], [0, 1, 5], [0, 5, 0], [0, 5, 0], [0, 5, 0]], dtype=torch.float)
    label = torch.zeros(5, dtype=torch.long)
    candidate = torch.tensor([True, True, True, False, True])
    mask, new, gap = relabel_decision(cos, logits, label, candidate, 0.2)
    assert mask.tolist() == [True, False, False, False, True]
    assert new[0] == 1 and gap[0].item() == pytest.approx(0.8)


def test_first_relabel_epoch():
    assert first_relabel_epoch(1 / 6, 60) == 10
    assert first_relabel_epoch(1 / 6, 10) == 2
    assert first_relabel_epoch(4, 10) == 4
    assert first_relabel_epoch(0.01, 10) == 1


def test_templates_are_an_ema_of_normalised_high_confidence_features():
    t = ClassTemplates(2, 2, momentum=0.9, center=False)
    f = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, 5.0]])
    t.update(f, torch.tensor([0, 0, 1]), torch.tensor([True, False, True]))
    assert torch.allclose(t.templates, torch.tensor([[1.0, 0.0], [0.0, 1.0]])) and t.count.tolist() == [1, 1]
    t.update(f, torch.tensor([0, 0, 1]), torch.tensor([False, True, False]))
    assert torch.allclose(t.templates[0], torch.tensor([0.9, 0.1])) and t.count.tolist() == [2, 1]
    assert torch.isnan(ClassTemplates(2, 2).similarity(f)).all()


def test_centred_templates_subtract_the_running_mean_feature():
    t = ClassTemplates(2, 2, momentum=0.9, center=True)
    t.update(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]), torch.tensor([True, True]))
    assert torch.allclose(t.mean, torch.tensor([1.0, 1.0]))
    assert torch.allclose(t.templates, torch.tensor([[1.0, -1.0], [-1.0, 1.0]]) / math.sqrt(2))
    # (3, 1) - mean = (2, 0): cos 1/sqrt(2) to class 0, -1/sqrt(2) to class 1
    cos = t.similarity(torch.tensor([[3.0, 1.0]]))
    assert torch.allclose(cos, torch.tensor([[1.0, -1.0]]) / math.sqrt(2))
    t.update(torch.tensor([[4.0, 4.0]]), torch.tensor([0]), torch.tensor([False]))
    assert torch.allclose(t.mean, torch.tensor([1.3, 1.3])) and t.count.tolist() == [1, 1]


def _method(tiny_config, synth_small, *overrides):
    cfg = tiny_config("mtac.relabel_start=3", "mtac.beta=0.7", "mtac.template_center=false", *overrides,
                      method="mtac")
    return MTAC(cfg, synth_small[0])


def test_method_relabels_only_from_the_start_epoch(tiny_config, synth_small):
    m = _method(tiny_config, synth_small)
    d, k = m.backbone.num_features, m.num_classes
    eye = torch.eye(d)
    m.templates.templates[:k] = eye[:k]
    m.templates.count[:] = 1
    # 10 samples, beta 0.7: the 7 most confident form the high group and keep the templates where they are
    label = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 0, 0])
    feature = torch.cat([eye[:7], eye[[1, 1]], 0.5 * eye[0:1] + 0.6 * eye[1:2]])
    logits = torch.zeros(10, k)
    logits[torch.arange(7), label[:7]] = 5
    logits[7, 1] = logits[8, 2] = logits[9, 1] = 5     # sample 7: both conditions; 8: classifier disagrees;
    confidence = torch.tensor([0.9] * 7 + [0.1] * 3)   # 9: similarity margin 0.13 < 0.2
    batch = {"index": torch.arange(10), "label": label}
    out = {"feature": feature, "logits": logits, "confidence": confidence}
    state = TrainState(epoch=1, epochs=10, labels=torch.cat([label, torch.zeros(246, dtype=torch.long)]))
    m.after_step(batch, out, state)                    # epoch 2 (1-based) < start 3: never
    assert state.relabels == [] and torch.allclose(m.templates.templates[:k], eye[:k])
    state.epoch = 2
    m.after_step(batch, out, state)
    assert [(e["index"], e["old"], e["new"]) for e in state.relabels] == [(7, 0, 1)]
    assert state.relabels[0]["score"] == pytest.approx(1.0) and state.labels[7] == 1
    assert m.diagnostics()["similarity_margin"][9].item() == pytest.approx(0.1 / math.sqrt(0.61), abs=1e-5)

    # relabel_votes=2: the rule must hold, with the same k*, on two consecutive visits
    m = _method(tiny_config, synth_small, "mtac.relabel_votes=2")
    m.templates.templates[:k] = eye[:k]
    m.templates.count[:] = 1
    state = TrainState(epoch=2, epochs=10, labels=torch.cat([label, torch.zeros(246, dtype=torch.long)]))
    m.after_step(batch, out, state)
    assert state.relabels == [] and m.relabel_streak[7] == 1 and m.relabel_target[7] == 1
    state.epoch = 3
    m.after_step(batch, out, state)
    assert [(e["index"], e["new"]) for e in state.relabels] == [(7, 1)]

    # without a confidence block every sample is a candidate (and feeds the templates)
    m = _method(tiny_config, synth_small, "mtac.confidence=none")
    m.templates.templates[:k] = eye[:k]
    m.templates.count[:] = 1
    state = TrainState(epoch=2, epochs=10, labels=torch.cat([label, torch.zeros(246, dtype=torch.long)]))
    m.after_step({"index": torch.arange(8), "label": label[:8]}, {"feature": feature[:8], "logits": logits[:8]}, state)
    assert [(e["index"], e["old"], e["new"]) for e in state.relabels] == [(7, 0, 1)]


def test_label_aware_confidence_uses_the_given_label_in_training_only(tiny_config, synth_small):
    train = synth_small[0]
    m = _method(tiny_config, synth_small, "mtac.confidence_input=feature+label")
    batch = {"index": torch.arange(8), "label": train.label[:8], "image": torch.randn(8, 3, 48, 48)}
    m.eval()
    out = m(batch)
    pred = (out["logits"] / out["confidence"][:, None]).argmax(1)
    f = out["feature"]
    want = m.ceb(torch.cat([f, torch.nn.functional.one_hot(pred, m.num_classes).float()], 1))
    assert torch.allclose(out["confidence"], want)                        # evaluation: the predicted label
    other = dict(batch, label=(pred + 1) % m.num_classes)
    assert torch.allclose(m(other)["confidence"], want)                   # ... never the given one
    m.train()
    c1, c2 = m(batch)["confidence"], m(other)["confidence"]
    assert not torch.allclose(c1, c2)                                     # training: the given label


def test_weak_supervision_masks_aux_labels(tiny_config, synth_small):
    train = synth_small[0]
    half = _method(tiny_config, synth_small, "mtac.aux_fraction=0.5")
    assert 0.35 < half.aux_keep.mean().item() < 0.65
    none = _method(tiny_config, synth_small, "mtac.aux_fraction=0")
    assert torch.equal(none.au_head.adj, torch.eye(len(train.meta["au_names"])))   # no labels, no edges
    full = _method(tiny_config, synth_small)
    assert (full.au_head.adj > 0).sum() > len(full.au_head.adj)
    batch = {"index": torch.arange(8), "label": train.label[:8], "image": torch.randn(8, 3, 48, 48),
             "au": train.au[:8], "au_mask": train.au_mask[:8], "va": train.va[:8], "va_mask": train.va_mask[:8]}
    out = none(batch)
    _, logs = none.loss(batch, out, TrainState(0, 10, train.label.clone()))
    assert logs["au_bce"].item() == 0 and logs["va"].item() == 0
    _, logs = full.loss(batch, full(batch), TrainState(0, 10, train.label.clone()))
    assert logs["au_bce"].item() > 0 and logs["va"].item() > 0


def test_bad_settings_name_the_key(tiny_config, synth_small):
    with pytest.raises(ConfigError, match="mtac.base"):
        _method(tiny_config, synth_small, "mtac.base=dmue")
    with pytest.raises(ConfigError, match="mtac.au=graph"):
        MTAC(tiny_config("mtac.au=graph", method="mtac"), synth_small[0].replace(au=None, au_mask=None))
    with pytest.raises(ConfigError, match="mtac.relabel_start"):
        _method(tiny_config, synth_small, "mtac.relabel_start=0")


@pytest.mark.parametrize("base", ["ce", "scn", "rul"])
def test_every_base_trains_one_step(tiny_config, synth_small, base):
    train = synth_small[0]
    m = _method(tiny_config, synth_small, f"mtac.base={base}", "mtac.confidence=loss", "mtac.class_weights=inverse",
                "mtac.au_fuse=true")
    batch = {"index": torch.arange(16), "label": train.label[:16], "image": torch.randn(16, 3, 48, 48),
             "au": train.au[:16], "au_mask": train.au_mask[:16], "va": train.va[:16], "va_mask": train.va_mask[:16]}
    loss, logs = m.loss(batch, m(batch), TrainState(0, 10, train.label.clone()))
    loss.backward()
    assert torch.isfinite(loss) and {"expr", "wr", "au_bce", "va", "confidence"} <= set(logs)
    assert m.au_head.embedding.grad is not None and m.ceb.mlp[0].weight.grad is not None


def test_fit_and_restore_without_training_data(tiny_config):
    cfg = tiny_config("data.noise=sym:0.3", "mtac.base=rul", "mtac.relabel_start=2", "mtac.margin2=0.0",
                      method="mtac")
    run = fit(cfg)
    d = run.diagnostics()
    assert d["confidence@2"].shape == (128,) and d["au_prob@2"].shape == (128, 16) and d["va@2"].shape == (128, 2)
    m = run.metrics()
    assert {"test_au_f1", "test_va_ccc", "train_au_bce", "train_wr"} <= set(m.columns)
    assert set(run.summary["last"]["test_au_f1_per_au"]) == set(run.env["method"]["au_nodes"])
    events = run.relabels()                            # TrainState logs 0-based epochs: 1 = the second
    assert len(events) and (events["epoch"] == 1).all() and run.env["method"]["first_relabel_epoch"] == 2
    # each epoch's arrays are its own (not views of tensors a later epoch overwrote)
    assert (d["label@1"] == d["label_given"]).all() and (d["label@2"] != d["label_given"]).any()
    assert not np.array_equal(d["confidence@1"], d["confidence@2"])
    _, method = restore(run.path)
    ckpt = torch.load(run.path / "checkpoint.pt", weights_only=True)["model"]
    for key in ("au_head.adj", "templates.templates", "class_weight"):
        assert torch.equal(method.state_dict()[key], ckpt[key]), key
    assert not torch.equal(method.au_head.adj, torch.eye(16))


def test_au_f1_and_relabel_quality_on_hand_cases():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    p = np.array([[0.9, 0.2], [0.2, 0.8], [0.1, 0.9], [0.7, 0.6]])
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0]])
    r = au_f1(y, p, mask, ["AU1", "AU2"])
    # AU1: tp 1, fp 1, fn 1 -> F1 0.5; AU2 (row 4 masked): tp 2 -> F1 1.0
    assert r["per_au"] == {"AU1": 0.5, "AU2": 1.0} and r["mean"] == 0.75
    given = np.array([0, 1, 2, 3, 4, 5])
    clean = np.array([0, 1, 2, 0, 0, 0])               # samples 3, 4, 5 were flipped
    final = np.array([1, 1, 2, 0, 2, 5])               # 0 harmed, 3 fixed, 4 changed but wrong
    q = relabel_quality(given, final, clean)
    assert q["n_relabelled"] == 3 and q["precision"] == pytest.approx(1 / 3) and q["recall"] == pytest.approx(1 / 3)
    assert q["harmed"] == 1 and q["detect_precision"] == pytest.approx(2 / 3)
    assert q["detect_recall"] == pytest.approx(2 / 3)
