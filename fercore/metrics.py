"""Classification metrics on predictions, via scikit-learn."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy, mean per-class accuracy (over classes present) and the confusion matrix (rows = truth)."""
    return {
        "acc": float((y_true == y_pred).mean()),
        "mean_class_acc": float(balanced_accuracy_score(y_true, y_pred)),
        "confusion": confusion_matrix(y_true, y_pred, labels=list(range(num_classes))).tolist(),
    }
