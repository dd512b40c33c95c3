"""Scores against the annotators' disagreement (fercore.analysis: vote_entropy, ambiguous_images,
against_ambiguity), on constructed votes and scores."""
import numpy as np
import pytest

from fercore import analysis


def votes(n=400, k=7, seed=0):
    """Ten simulated annotators per image, each image with its own level of agreement."""
    rng = np.random.default_rng(seed)
    agree = rng.uniform(0.2, 1.0, n)
    out = np.zeros((n, k))
    for i in range(n):
        p = np.full(k, (1 - agree[i]) / (k - 1))
        p[rng.integers(k)] += agree[i]
        out[i] = rng.multinomial(10, p / p.sum())
    return out


def test_entropy_and_ambiguity_of_known_vote_rows():
    v = np.array([[10, 0, 0], [5, 5, 0], [4, 3, 3], [6, 4, 0], [0, 0, 0]], float)
    h = analysis.vote_entropy(v)
    assert h[0] == pytest.approx(0.0) and h[1] == pytest.approx(1.0) and np.isnan(h[4])
    assert h[2] > h[3] > h[0]
    assert analysis.vote_entropy(v[:4] / 10) == pytest.approx(h[:4])  # counts or shares alike
    amb = analysis.ambiguous_images(v[:4])
    assert amb.tolist() == [False, True, True, False]                   # top share 1.0, 0.5, 0.4, 0.6
    assert analysis.ambiguous_images(v[:4], max_share=0.6).tolist() == [False, True, True, True]


def test_a_score_equal_to_the_entropy_is_perfect_and_a_random_one_is_not():
    # two-way splits of ten votes (10-0 ... 5-5): the entropy orders them exactly as the top share does,
    # so the entropy itself finds every ambiguous (5-5) image
    split = np.random.default_rng(0).integers(0, 6, 300)
    two = np.stack([10 - split, split, np.zeros_like(split)], axis=1).astype(float)
    h, amb = analysis.vote_entropy(two), analysis.ambiguous_images(two)
    assert 0 < amb.sum() < len(amb)
    perfect = analysis.against_ambiguity(h, h, amb)
    assert perfect["rho"] == pytest.approx(1.0) and perfect["auroc_ambiguous"] == pytest.approx(1.0)
    assert perfect["n"] == len(two) and perfect["n_ambiguous"] == int(amb.sum())
    v = votes()
    h, amb = analysis.vote_entropy(v), analysis.ambiguous_images(v)
    assert analysis.against_ambiguity(h, h, amb)["auroc_ambiguous"] > 0.9
    noise = analysis.against_ambiguity(np.random.default_rng(1).normal(size=len(v)), h, amb)
    assert abs(noise["rho"]) < 0.15 and abs(noise["auroc_ambiguous"] - 0.5) < 0.1 and noise["p"] > 0.01


def test_the_sign_convention_higher_means_more_doubt():
    # a confidence (higher = surer) falls with the disagreement: negative rho, AUROC below 0.5; oriented
    # the way score_of orients a higher-is-clean score (negated), it rises
    v = votes(seed=2)
    h, amb = analysis.vote_entropy(v), analysis.ambiguous_images(v)
    confidence = v.max(1) / 10
    raw = analysis.against_ambiguity(confidence, h, amb)
    oriented = analysis.against_ambiguity(-confidence, h, amb)
    assert raw["rho"] < -0.8 and raw["auroc_ambiguous"] < 0.1
    assert oriented["rho"] == pytest.approx(-raw["rho"]) and oriented["auroc_ambiguous"] > 0.9


def test_non_finite_scores_are_left_out_and_one_class_has_no_auroc():
    v = votes(n=50)
    h = analysis.vote_entropy(v)
    s = h.copy()
    s[:5] = np.nan
    r = analysis.against_ambiguity(s, h, analysis.ambiguous_images(v))
    assert r["n"] == 45 and r["rho"] == pytest.approx(1.0)
    assert np.isnan(analysis.against_ambiguity(h, h, np.zeros(len(h), bool))["auroc_ambiguous"])


def test_the_ambiguity_lines_state_each_row_in_its_reading():
    import pandas as pd

    from fercore import tables

    df = pd.DataFrame([{"score": "poi: its u", "rho": 0.3, "rho per seed": "+0.28 +0.32", "AUROC ambiguous": 0.61,
                        "seeds": 2, "reading": "rises"},
                       {"score": "cleanlab", "rho": -0.012, "rho per seed": "-0.01", "AUROC ambiguous": 0.5,
                        "seeds": 1, "reading": "not consistent"}])
    lines = tables.ambiguity_lines(df)
    assert lines[0] == ("- poi: its u: its doubt rises with the disagreement (rho +0.30; rho per seed +0.28 +0.32; "
                        "AUROC 0.61 for the ambiguous images; 2 seeds).")
    assert "has no consistent relation" in lines[1] and "per seed" not in lines[1] and lines[1].endswith("1 seed).")


@pytest.mark.parametrize("rhos,ps,expected", [((0.3, 0.2), (1e-5, 1e-3), "rises"),
                                             ((-0.3, -0.2), (1e-5, 1e-4), "falls"),
                                             ((0.3, -0.2), (1e-5, 1e-4), "not consistent"),
                                             ((0.3, 0.02), (1e-5, 0.4), "not consistent")])
def test_a_reading_needs_every_seed_on_one_side(rhos, ps, expected):
    assert analysis.ambiguity_reading([{"rho": r, "p": p} for r, p in zip(rhos, ps)]) == expected
