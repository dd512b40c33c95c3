import numpy as np
import pytest

from fercore.metrics import epochs_of, noise_separation, relabel_progress


def diag():
    # samples 0-2 clean, 3-4 flipped; a score that ranks them perfectly at epoch 2 and inverted at epoch 10
    return {"label_given": np.array([0, 1, 2, 0, 1]), "clean_label": np.array([0, 1, 2, 1, 2]),
            "confidence@2": np.array([0.9, 0.8, 0.7, 0.2, np.nan]),
            "confidence@10": np.array([0.1, 0.2, 0.3, 0.8, 0.9]),
            "label@2": np.array([0, 1, 2, 1, 1]), "label@10": np.array([0, 2, 2, 1, 2])}


def test_epochs_of_sorts_numerically():
    assert epochs_of(diag(), "confidence") == [2, 10] and epochs_of(diag(), "label") == [2, 10]


def test_noise_separation_by_hand():
    sep = noise_separation(diag(), "confidence")
    assert sep["epoch"].tolist() == [2, 10]
    assert sep["auroc"].tolist() == [1.0, 0.0]                       # NaN (unseen) sample left out
    assert sep.loc[0, "mean_clean"] == pytest.approx(0.8) and sep.loc[0, "mean_flipped"] == pytest.approx(0.2)
    assert noise_separation(diag(), "confidence", higher_is_clean=False)["auroc"].tolist() == [0.0, 1.0]


def test_relabel_progress_by_hand():
    p = relabel_progress(diag()).set_index("epoch")
    assert p.loc[2, "n_relabelled"] == 1 and p.loc[2, "precision"] == 1.0 and p.loc[2, "labels_right"] == 0.8
    assert p.loc[10, "n_relabelled"] == 3 and p.loc[10, "precision"] == pytest.approx(2 / 3)
    assert p.loc[10, "harmed"] == 1
