"""Utterance confidence from CTC frame log-probabilities.

The entropy-based measures and their normalisations follow Laptev & Ginsburg,
"Fast Entropy-Based Methods of Word-Level Confidence Estimation for End-to-End
Automatic Speech Recognition", SLT 2022 (arXiv:2212.08703): per frame, a
confidence in [0, 1] that is 0 for the uniform distribution over the V tokens
and 1 for a one-hot one; per utterance, an aggregate over (non-blank) frames.

Settings (a plain dict, as in the ensemble config)::

    {"exclude_blank": true, "aggregation": "mean",
     "method_cfg": {"name": "entropy", "entropy_type": "renyi", "alpha": 0.25, "entropy_norm": "lin"}}

* ``name``: ``max_prob`` (``(V**a * p_max**a - 1) / (V**a - 1)``, with ``a`` = alpha) or
  ``entropy`` of ``entropy_type`` ``gibbs`` (Shannon, ``-sum p log p``), ``tsallis``
  (``(1 - sum p**a) / (a - 1)``) or ``renyi`` (``log(sum p**a) / (1 - a)``); gibbs is the
  ``a -> 1`` limit of the other two and ignores ``alpha``.
* ``entropy_norm``: ``lin`` = ``1 - H / H_max``; ``exp`` = ``(exp(-H) - exp(-H_max)) / (1 - exp(-H_max))``,
  with ``H_max`` the entropy of the uniform distribution (for gibbs and renyi the exp
  form equals ``(V exp(-H) - 1) / (V - 1)``).
* ``exclude_blank``: drop frames whose most likely token is the blank; when every frame
  is blank, keep the one where the blank is least likely.
* ``aggregation``: ``mean``, ``min``, ``max`` or ``prod`` over the kept frames.
* the temperature divides the logits before the softmax.

Configs written with the older key ``measure_cfg`` are read with a warning
(:func:`confidence_settings`); ``python -m hw_asr.ensemble.migrate`` rewrites them.
"""

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from hw_asr.text_encoder.base import BLANK_INDEX

METHODS = ("max_prob", "entropy")
ENTROPY_TYPES = ("gibbs", "tsallis", "renyi")
ENTROPY_NORMS = ("lin", "exp")
AGGREGATIONS = ("mean", "min", "max", "prod")
DEFAULT_METHOD = {"name": "entropy", "entropy_type": "renyi", "alpha": 0.25, "entropy_norm": "lin"}
DEFAULT_CONFIDENCE = {"exclude_blank": True, "aggregation": "mean", "method_cfg": DEFAULT_METHOD}


def migrate_confidence(cfg: Mapping[str, Any] | None, where: str = "confidence") -> tuple[dict[str, Any], bool]:
    """A copy of ``cfg`` with the old key ``measure_cfg`` renamed to ``method_cfg``;
    returns ``(cfg, changed)``."""
    cfg = copy.deepcopy(cfg) if cfg is not None else {}
    if "measure_cfg" not in cfg:
        return cfg, False
    if "method_cfg" in cfg:
        raise ValueError(f"{where}: has both 'measure_cfg' (old name) and 'method_cfg'; keep only 'method_cfg'")
    cfg["method_cfg"] = cfg.pop("measure_cfg")
    return cfg, True


def confidence_settings(cfg: Mapping[str, Any] | None = None, where: str = "confidence") -> dict[str, Any]:
    """Validated settings with defaults filled in; ``measure_cfg`` is accepted with a warning."""
    cfg, changed = migrate_confidence(cfg, where)
    if changed:
        warnings.warn(
            f"{where}.measure_cfg is the old name of {where}.method_cfg; it was read as method_cfg. "
            f"Rewrite the file with: python -m hw_asr.ensemble.migrate <file>",
            DeprecationWarning,
            stacklevel=2,
        )
    unknown = set(cfg) - {"exclude_blank", "aggregation", "method_cfg"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (exclude_blank, aggregation, method_cfg)")
    out = {
        "exclude_blank": bool(cfg.get("exclude_blank", True)),
        "aggregation": cfg.get("aggregation", "mean"),
        "method_cfg": {**DEFAULT_METHOD, **(cfg.get("method_cfg") or {})},
    }
    method = out["method_cfg"]
    unknown = set(method) - set(DEFAULT_METHOD)
    if unknown:
        raise ValueError(f"{where}.method_cfg: unknown keys {sorted(unknown)} ({sorted(DEFAULT_METHOD)})")
    checks = [
        ("aggregation", out["aggregation"], AGGREGATIONS),
        ("method_cfg.name", method["name"], METHODS),
        ("method_cfg.entropy_type", method["entropy_type"], ENTROPY_TYPES),
        ("method_cfg.entropy_norm", method["entropy_norm"], ENTROPY_NORMS),
    ]
    for key, value, allowed in checks:
        if value not in allowed:
            raise ValueError(f"{where}.{key} = {value!r}; use one of {list(allowed)}")
    alpha = method["alpha"]
    if not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"{where}.method_cfg.alpha must be > 0, got {alpha!r}")
    if method["name"] == "entropy" and method["entropy_type"] != "gibbs" and alpha == 1:
        raise ValueError(f"{where}.method_cfg: alpha = 1 is the gibbs entropy; use entropy_type 'gibbs'")
    return out


def _entropy(log_p: Tensor, entropy_type: str, alpha: float) -> tuple[Tensor, float]:
    """Entropy over the last dim and that of the uniform distribution over V tokens."""
    V = log_p.shape[-1]
    if entropy_type == "gibbs":
        p = log_p.exp()
        return -(p * log_p).nan_to_num().sum(-1), math.log(V)
    power_sum = (log_p * alpha).exp().sum(-1)  # sum p**alpha (0**alpha = 0)
    if entropy_type == "tsallis":
        return (1.0 - power_sum) / (alpha - 1.0), (1.0 - V ** (1.0 - alpha)) / (alpha - 1.0)
    return power_sum.log() / (1.0 - alpha), math.log(V)


def frame_confidence(log_probs: Tensor, method_cfg: Mapping[str, Any]) -> Tensor:
    """Per-frame confidence in [0, 1] from log-probabilities ``[..., V]``."""
    method = {**DEFAULT_METHOD, **(method_cfg or {})}
    V, alpha = log_probs.shape[-1], float(method["alpha"])
    log_probs = log_probs.double()
    if method["name"] == "max_prob":
        p_max = log_probs.max(-1).values.exp()
        conf = ((V * p_max) ** alpha - 1.0) / (V**alpha - 1.0)
    else:
        h, h_max = _entropy(log_probs, method["entropy_type"], alpha)
        if method["entropy_norm"] == "lin":
            conf = 1.0 - h / h_max
        else:
            conf = ((-h).exp() - math.exp(-h_max)) / (1.0 - math.exp(-h_max))
    return conf.clamp(0.0, 1.0).float()


def aggregate(values: Tensor, aggregation: str) -> Tensor:
    if aggregation == "mean":
        return values.mean()
    if aggregation == "min":
        return values.min()
    if aggregation == "max":
        return values.max()
    return values.prod()


def utterance_confidence(
    log_probs: Tensor, settings: Mapping[str, Any] | None = None, temperature: float = 1.0
) -> float:
    """Confidence of one utterance from its frame log-probs ``[T, V]`` (real frames only)."""
    return _utterance_confidence(log_probs, confidence_settings(settings), temperature)


def _utterance_confidence(log_probs: Tensor, settings: Mapping[str, Any], temperature: float) -> float:
    """:func:`utterance_confidence` with already validated settings."""
    if log_probs.dim() != 2 or log_probs.shape[0] == 0:
        raise ValueError(f"expected non-empty [T, V] log-probs, got shape {tuple(log_probs.shape)}")
    if temperature != 1.0:
        log_probs = (log_probs.double() / temperature).log_softmax(-1)
    if settings["exclude_blank"]:
        keep = log_probs.argmax(-1) != BLANK_INDEX
        if not keep.any():
            keep = torch.zeros_like(keep)
            keep[log_probs[:, BLANK_INDEX].argmin()] = True
        log_probs = log_probs[keep]
    return float(aggregate(frame_confidence(log_probs, settings["method_cfg"]), settings["aggregation"]))


def confidence_features(
    per_model_log_probs: Sequence[Sequence[Tensor]], settings: Mapping[str, Any], temperature: float = 1.0
) -> Tensor:
    """``[N, M]`` features: for each utterance, the confidence of each of the M models.
    ``per_model_log_probs[m][n]`` is model m's ``[T, V]`` log-probs of utterance n."""
    settings = confidence_settings(settings)
    n = len(per_model_log_probs[0])
    return torch.tensor(
        [[_utterance_confidence(lp[i], settings, temperature) for lp in per_model_log_probs] for i in range(n)],
        dtype=torch.float64,
    )
