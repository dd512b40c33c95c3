"""Uncertainty analysis of trained runs: does a score find the wrong labels, are the predictions
calibrated, how close are they to the annotators' votes (notebooks/07_uncertainty.ipynb).

Every function reads run directories (and, where predictions are needed, the one inference path
`engine.predict_run`) and returns arrays or tables; the notebook only plots them.

- `wrong_labels(rd)`: which training labels are wrong (given label != clean / reference label),
  from the run's own per-sample records.
- `score_of(rd)`: a method's own per-sample score at an epoch, oriented so that higher = more
  likely wrong, and the two label-aware references: `small_loss(rd)` (the per-sample loss of the
  given label, the small-loss criterion) and `cleanlab_quality(...)` (cleanlab's label-quality
  score on out-of-fold predicted probabilities).
- `roc(score, wrong)`: ROC curve and AUROC (scikit-learn).
- `reliability(rd, test)`, `votes_kl(rd, test)`, `embedding(rd, train)`: calibration, KL to the
  annotators' votes, and a t-SNE of the features.
- `vote_entropy(votes)`, `ambiguous_images(votes)`, `against_ambiguity(score, entropy, ambiguous)`:
  does a score rise with the annotators' disagreement (Spearman rho, AUROC for the ambiguous
  images), with `p_label_score(rd)` (1 - p(label)) beside the small loss and cleanlab as references.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from .data.datasets import oof_assignment
from .data.faceset import FaceSet
from .engine import predict_run
from .metrics import calibration, epochs_of, vote_kl
from .rundir import RunDir


def last_epoch(rd: RunDir) -> int:
    return int(rd.summary["epochs"])


def wrong_labels(rd: RunDir) -> np.ndarray:
    """(N,) bool over the run's training samples: the given label differs from the clean label
    (SynthFER, injected noise) or the reader's reference label (FERPlus majority under
    `data.label_source=fer2013`)."""
    d = rd.diagnostics()
    return d["label_given"] != d["clean_label"]


def score_of(rd: RunDir, noise_score: tuple[str, bool], epoch: int | None = None) -> np.ndarray:
    """The method's own per-sample score at `epoch` (default: the last), higher = more likely wrong."""
    d = rd.diagnostics()
    name, higher_is_clean = noise_score
    s = d[f"{name}@{epoch or last_epoch(rd)}"].astype(np.float64)
    return -s if higher_is_clean else s


def small_loss(rd: RunDir, epoch: int | None = None) -> np.ndarray:
    """The per-sample training loss of the given label (higher = more likely wrong): the small-loss
    criterion of co-teaching and its successors, read from the engine's own records."""
    return rd.diagnostics()[f"loss@{epoch or last_epoch(rd)}"].astype(np.float64)


def oof_probabilities(fold_runs: list[RunDir], train: FaceSet, folds: int, seed: int,
                      device: str = "cpu") -> np.ndarray:
    """(N, K) predicted probabilities of every training sample by the fold run that did not train
    on it (`data.oof_folds`); `train` is the full noisy training split in reader order."""
    fold = oof_assignment(len(train), folds, seed).numpy()
    prob = np.full((len(train), train.num_classes), np.nan)
    for k, rd in enumerate(fold_runs):
        held = np.flatnonzero(fold == k)
        prob[held] = predict_run(rd.path, train.subset(held.tolist()), device)["prob"]
    return prob


def cleanlab_quality(labels: np.ndarray, oof_prob: np.ndarray) -> dict:
    """cleanlab's label-quality score (`cleanlab.rank.get_label_quality_scores`, self-confidence) on
    out-of-fold probabilities, turned into a wrongness score (1 - quality), and the samples
    `cleanlab.filter.find_label_issues` flags."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(labels, oof_prob)
    issues = find_label_issues(labels, oof_prob)
    return {"score": 1.0 - quality, "issues": issues}


def roc(score: np.ndarray, wrong: np.ndarray) -> dict:
    """ROC curve and AUROC of `score` (higher = wrong) for the wrong labels, over finite scores."""
    keep = np.isfinite(score)
    fpr, tpr, _ = roc_curve(wrong[keep], score[keep])
    return {"fpr": fpr, "tpr": tpr, "auroc": float(roc_auc_score(wrong[keep], score[keep])),
            "n": int(keep.sum())}


def auroc_by_epoch(rd: RunDir, noise_score: tuple[str, bool]) -> pd.DataFrame:
    """AUROC of the method's own score and of the small-loss reference at every epoch."""
    wrong = wrong_labels(rd)
    d = rd.diagnostics()
    rows = []
    for e in epochs_of(d, "loss"):
        row = {"epoch": e, "small_loss": roc(small_loss(rd, e), wrong)["auroc"]}
        if f"{noise_score[0]}@{e}" in d:
            row["score"] = roc(score_of(rd, noise_score, e), wrong)["auroc"]
        rows.append(row)
    return pd.DataFrame(rows)


def reliability(rd: RunDir, test: FaceSet, bins: int = 15, device: str = "cpu") -> dict:
    """ECE and reliability-diagram bins of the run's test predictions (`metrics.calibration`)."""
    prob = predict_run(rd.path, test, device)["prob"]
    return {"prob": prob, **calibration(prob, test.label.numpy(), bins)}


def votes_kl(prob: np.ndarray, data: FaceSet) -> float | None:
    """Mean KL(votes || p) over `data` (None when the data has no vote distribution)."""
    if data.soft_label is None:
        return None
    return float(vote_kl(data.soft_label.numpy(), prob).mean())


def embedding(rd: RunDir, train: FaceSet, n: int = 800, seed: int = 0, device: str = "cpu") -> pd.DataFrame:
    """t-SNE (scikit-learn) of the run's pooled features of `n` training samples, with their
    given label, clean label and whether the given label is wrong."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train), size=min(n, len(train)), replace=False))
    sub = train.subset(pick.tolist())
    feat = predict_run(rd.path, sub, device, features=True)["feature"]
    perplexity = min(30, max(5, len(pick) // 10))
    xy = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(feat)
    clean = sub.clean_label.numpy() if sub.clean_label is not None else sub.label.numpy()
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "label": sub.label.numpy(), "clean": clean,
                         "wrong": sub.label.numpy() != clean})


def linear_probe(weights: str, backbone: str, train: FaceSet, test: FaceSet, targets: str = "true_label",
                 device: str = "cpu") -> float:
    """What a backbone encodes: test accuracy of a logistic regression (scikit-learn) on its frozen,
    pooled features, fitted on `train`; `weights` is a `model.weights` value ("" = random init)."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from .data.loader import Loader
    from .models.backbone import Backbone
    from .models.weights import load_backbone_weights
    from .pretrain import resolve

    torch.manual_seed(0)
    net = Backbone(backbone)
    if weights:
        load_backbone_weights(net, resolve(weights, backbone))
    net = net.to(device).eval()

    @torch.no_grad()
    def features(fs: FaceSet) -> np.ndarray:
        return torch.cat([net(b["image"]).float().cpu() for b in Loader(fs, 256, torch.device(device))]).numpy()

    scaler = StandardScaler()
    xtr = scaler.fit_transform(features(train))
    xte = scaler.transform(features(test))
    ytr, yte = getattr(train, targets).numpy(), getattr(test, targets).numpy()
    clf = LogisticRegression(max_iter=2000).fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


# --- ambiguity: the annotators' disagreement as the ground truth of what a score should capture ----
# Sign convention, once for every score below: each is oriented so that **higher = the method doubts
# the image more** (less confident, more uncertain, a larger loss of its label; `score_of` applies each
# method's declared orientation). A positive Spearman rho with the vote entropy, or an AUROC above 0.5
# for the ambiguous images, means the score rises with the annotators' disagreement.


def vote_entropy(votes) -> np.ndarray:
    """(N,) Shannon entropy in bits of each image's vote distribution (rows of `votes`, counts or
    shares; a row of zeros gives NaN): 0 when every annotator agrees, log2(K) at a uniform split."""
    from scipy.stats import entropy

    v = np.asarray(votes, dtype=np.float64)
    total = v.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = entropy(v / total, base=2, axis=1)
    return np.where(total[:, 0] > 0, h, np.nan)


def ambiguous_images(votes, max_share: float = 0.5) -> np.ndarray:
    """(N,) bool: the largest share of any one emotion among the votes is at most `max_share`
    (no clear majority) `[ours]`."""
    v = np.asarray(votes, dtype=np.float64)
    return v.max(1) / v.sum(1) <= max_share + 1e-9


def p_label_score(rd: RunDir, epoch: int | None = None) -> np.ndarray:
    """1 - p(given label) at `epoch` (default: the last): the model's doubt about the label it was given
    (higher = doubts it more); read from the engine's own per-sample records."""
    return 1.0 - rd.diagnostics()[f"p_label@{epoch or last_epoch(rd)}"].astype(np.float64)


def against_ambiguity(score: np.ndarray, entropy: np.ndarray, ambiguous: np.ndarray) -> dict:
    """How a score (higher = more doubt) follows the annotators' disagreement, over the images where
    both are finite: Spearman rho with the vote entropy and its p-value (scipy), and the AUROC of the
    score for the ambiguous images (scikit-learn; NaN when all or none are ambiguous)."""
    from scipy.stats import spearmanr

    keep = np.isfinite(score) & np.isfinite(entropy)
    s, h, a = score[keep], entropy[keep], np.asarray(ambiguous, bool)[keep]
    rho, p = spearmanr(s, h) if len(s) > 2 else (np.nan, np.nan)
    auroc = float(roc_auc_score(a, s)) if 0 < a.sum() < len(a) else float("nan")
    return {"rho": float(rho), "p": float(p), "auroc_ambiguous": auroc, "n": int(keep.sum()),
            "n_ambiguous": int(a.sum())}


def train_votes(rd: RunDir, train: FaceSet) -> np.ndarray | None:
    """The vote distribution of the run's training images, in the run's per-sample order (checked by
    id against `train`); None when the dataset has no votes."""
    if train.soft_label is None:
        return None
    ids = rd.diagnostics()["id"].astype(str)
    if list(ids) != [str(i) for i in train.ids]:
        raise ValueError(f"{rd.path}: its training images are not those of the split given (ids differ)")
    return train.soft_label.numpy().astype(np.float64)


def ambiguity_reading(results: list[dict], alpha: float = 0.01) -> str:
    """One score's `against_ambiguity` results over seeds, in words: "rises" / "falls" when every
    seed's rho has that sign with p < `alpha`, else "not consistent" `[ours]`."""
    rho, p = np.array([r["rho"] for r in results]), np.array([r["p"] for r in results])
    if len(rho) and (p < alpha).all() and ((rho > 0).all() or (rho < 0).all()):
        return "rises" if rho[0] > 0 else "falls"
    return "not consistent"
