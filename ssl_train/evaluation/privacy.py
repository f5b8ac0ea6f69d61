"""Membership-inference risk: can the model's loss tell its labeled training images from unseen ones?

The loss-threshold attack (Yeom et al., 2018) guesses "member" when an image's
loss is low. Its ROC AUC over labeled training images (members) and test images
(non-members) measures how much the model memorized: 0.5 is guessing. The
one-sided Mann–Whitney U test says whether the AUC could be chance, which
matters with the few labeled images SSL runs have.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

LOW, HIGH = 0.55, 0.65


def membership_inference(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> dict:
    """AUC of the loss-threshold attack, its p-value, a risk level and a plain-language verdict."""
    member_loss, nonmember_loss = np.asarray(member_loss, float), np.asarray(nonmember_loss, float)
    is_member = np.r_[np.ones(len(member_loss)), np.zeros(len(nonmember_loss))]
    auc = float(roc_auc_score(is_member, -np.r_[member_loss, nonmember_loss]))
    p = float(mannwhitneyu(member_loss, nonmember_loss, alternative="less").pvalue)
    n = f"{len(member_loss)} labeled training images against {len(nonmember_loss)} test images"
    if auc < LOW or p >= 0.05:
        risk = "low"
        verdict = (f"Low risk: from the model's loss, an attacker tells a labeled training image from an unseen one "
                   f"hardly better than a coin flip (AUC {auc:.2f}, p={p:.2g}; {n}).")
    elif auc < HIGH:
        risk = "moderate"
        verdict = (f"Moderate risk: the model is measurably more confident on its labeled training images than on "
                   f"unseen ones (AUC {auc:.2f}, p={p:.2g}; {n}). If those images are sensitive, release labels "
                   f"rather than scores, or train with stronger regularization.")
    else:
        risk = "high"
        verdict = (f"High risk: the model has memorized its labeled training images; their low loss gives them away "
                   f"(AUC {auc:.2f}, p={p:.2g}; {n}). Do not expose its confidence scores if the training images are "
                   f"private; more labels, stronger augmentation or differential privacy reduce it.")
    return {"attack": "loss threshold", "auc": auc, "p_value": p, "members": len(member_loss),
            "nonmembers": len(nonmember_loss), "risk": risk, "verdict": verdict,
            "member_loss_median": float(np.median(member_loss)),
            "nonmember_loss_median": float(np.median(nonmember_loss))}
