"""The paired-by-seed comparison rule (fercore.tables.versus, paired_differences)."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fercore import tables


def frame(ce, other, name="mtac", noise="sym:0.3", seeds=None):
    seeds = list(range(len(ce))) if seeds is None else seeds
    rows = [{"method": "ce", "noise": noise, "seed": s, "last_acc": a} for s, a in zip(range(len(ce)), ce)]
    rows += [{"method": name, "noise": noise, "seed": s, "last_acc": a} for s, a in zip(seeds, other)]
    return pd.DataFrame(rows)


def test_paired_interval_is_students_t_over_the_differences():
    d = np.array([0.02, 0.035, 0.01, 0.03, 0.025])
    mean, low, high = tables.paired_interval(d)
    ref = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert mean == pytest.approx(d.mean()) and (low, high) == pytest.approx((ref.low, ref.high))
    assert all(math.isnan(v) for v in tables.paired_interval([0.1])[1:])


def test_pairing_by_seed_finds_a_shift_that_the_seed_spread_hides():
    # every seed moves ce and the method together (a shared noise draw): the spread over seeds is large,
    # the paired difference is a steady +0.01, so the paired rule says "beats"
    ce = [0.70, 0.76, 0.82, 0.73, 0.79]
    df = frame(ce, [a + 0.01 + e for a, e in zip(ce, [0.001, -0.001, 0.002, 0.0, -0.002])])
    row = tables.versus(df).iloc[0]
    assert row["verdict"] == "beats" and row["n_seeds"] == 5 and row["seeds"] == "0 1 2 3 4"
    assert row["difference"] == pytest.approx(0.01) and 0 < row["ci_low"] < 0.01 < row["ci_high"]
    assert tables.interval_text(row).startswith("+0.010 [+0.0")


@pytest.mark.parametrize("shift,expected", [(-0.02, "loses"), (0.0, "within noise")])
def test_verdicts_below_zero_and_inside(shift, expected):
    ce = [0.70, 0.76, 0.82]
    df = frame(ce, [a + shift + e for a, e in zip(ce, [0.004, -0.004, 0.001])])
    assert tables.versus(df).iloc[0]["verdict"] == expected


def test_only_the_seeds_both_have_are_paired_and_one_seed_has_no_verdict():
    df = frame([0.7, 0.8, 0.9], [0.75], seeds=[2])
    row = tables.versus(df).iloc[0]
    assert row["n_seeds"] == 1 and row["seeds"] == "2" and row["verdict"] == "one seed"
    assert row["difference"] == pytest.approx(-0.15) and tables.interval_text(row) == "-0.150"


def test_versus_takes_other_baselines_and_words():
    df = pd.DataFrame([{"method": "poi", "variant": v, "seed": s, "last_acc": a + (0.03 if v == "default" else 0)}
                       for s, a in enumerate([0.7, 0.75, 0.8]) for v in ("default", "poi-no-prior")])
    row = tables.versus(df, "default", by="method", group="variant", words=("variant better", "full better")).iloc[0]
    assert row["variant"] == "poi-no-prior" and row["verdict"] == "full better"


def test_a_steady_gain_over_five_seeds_beats():
    ce = [0.74, 0.77, 0.75, 0.79, 0.76]
    df = frame(ce, [a + d for a, d in zip(ce, [0.021, 0.018, 0.022, 0.019, 0.020])])
    row = tables.versus(df).iloc[0]
    assert row["verdict"] == "beats" and row["n_seeds"] == 5
    assert row["difference"] == pytest.approx(0.02) and row["ci_low"] > 0


def test_a_larger_mean_whose_seeds_straddle_zero_is_within_noise():
    # +0.03 on average, but two of five seeds lose: the interval contains 0
    ce = [0.74, 0.77, 0.75, 0.79, 0.76]
    diffs = [0.12, -0.04, 0.09, -0.03, 0.01]
    row = tables.versus(frame(ce, [a + d for a, d in zip(ce, diffs)])).iloc[0]
    assert row["difference"] == pytest.approx(0.03) and row["verdict"] == "within noise"
    assert row["ci_low"] < 0 < row["ci_high"]
    ref = stats.ttest_rel([a + d for a, d in zip(ce, diffs)], ce).confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ref.low, ref.high))


def test_per_seed_rows_are_what_the_verdict_is_computed_from():
    ce = [0.70, 0.76, 0.82]
    df = frame(ce, [0.72, 0.75, 0.86])
    df["noise_seed"] = df["seed"]
    per = tables.paired_differences(df)
    assert list(per.columns) == ["method", "noise", "seed", "noise_seed", "last_acc", "ce_last_acc", "difference"]
    assert per["difference"].tolist() == pytest.approx([0.02, -0.01, 0.04])
    row = tables.versus(df).iloc[0]
    assert row["difference"] == pytest.approx(per["difference"].mean())
    assert tables.paired_interval(per["difference"])[1:] == pytest.approx((row["ci_low"], row["ci_high"]))


def test_a_pipe_in_a_markdown_cell_does_not_split_its_column():
    md = tables.markdown_table(pd.DataFrame({"KL(votes || p)": ["0.5 | 0.6"], "n": [3]}))
    header, _, row = md.splitlines()
    assert header == r"| KL(votes \|\| p) | n |" and row == r"| 0.5 \| 0.6 | 3 |"


def test_a_placeholder_in_a_markdown_cell_stays_text():
    """`<class name>/<image>` is a path pattern, not HTML: a browser would draw `<image>` as an empty image."""
    md = tables.markdown_table(pd.DataFrame({"layout": ["{train,test}/<class name>/<image>"]}))
    assert md.splitlines()[2] == "| {train,test}/&lt;class name>/&lt;image> |"


def test_a_caption_names_a_subset_of_a_real_split(tmp_path):
    """`data_text`: a table built from runs on a seeded subset says so, with the split's size and the image size."""
    import json

    from fercore.rundir import RunDir
    from fercore.tables import data_text

    (tmp_path / "config.json").write_text(json.dumps({"data": {"dataset": "ferplus", "label_source": "one_vote",
                                                               "image_size": 48}}))
    (tmp_path / "env.json").write_text(json.dumps({"data": {"train_size": 4000, "train_rows": 26937, "test_size": 3375,
                                                            "image_size": 48}}))
    assert data_text(RunDir(tmp_path)) == ("ferplus (one_vote labels), 4,000 of its 26,937 training faces (a seeded "
                                           "subset) at 48 px, tested on 3,375")
