"""Multi-task loss: w_SIC x MSE (or CE) + w_SOD x CE + w_FLOE x CE, FILL (255) ignored in every
term (reference/method.md: weights 1, 3, 3)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from icechart.classes import FILL

logger = logging.getLogger(__name__)


def _masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mask = target != FILL
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return F.mse_loss(pred[:, 0][mask], target[mask].to(pred.dtype))


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if not bool((target != FILL).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.long(), ignore_index=FILL)


def multitask_loss(
    out: dict[str, torch.Tensor],
    y: torch.Tensor,
    *,
    weights: tuple[float, float, float] = (1.0, 3.0, 3.0),
    sic_mode: str = "regression",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms.

    Parameters
    ----------
    out
        Network outputs (``SIC`` (N,1|11,H,W), ``SOD`` (N,6,H,W), ``FLOE`` (N,7,H,W)).
    y
        ``(N, 3, H, W)`` labels (SIC class 0..10, SOD, FLOE; FILL ignored).
    weights
        (SIC, SOD, FLOE) weights.
    sic_mode
        ``"regression"`` (MSE on the class index) or ``"classification"`` (CE).
    """
    sic = out["SIC"].float()
    l_sic = _masked_mse(sic, y[:, 0]) if sic_mode == "regression" else _ce(sic, y[:, 0])
    l_sod = _ce(out["SOD"].float(), y[:, 1])
    l_floe = _ce(out["FLOE"].float(), y[:, 2])
    total = weights[0] * l_sic + weights[1] * l_sod + weights[2] * l_floe
    terms = {"SIC": float(l_sic.detach()), "SOD": float(l_sod.detach()), "FLOE": float(l_floe.detach())}
    return total, terms
