"""Confidence measures against hand-computed values, exclude_blank, aggregation, migration."""

import math
import warnings

import pytest
import torch

from hw_asr.ensemble.confidence import confidence_settings, frame_confidence, migrate_confidence, utterance_confidence

METHODS = [{"name": "max_prob", "alpha": 1.0}, {"name": "max_prob", "alpha": 0.5}] + [
    {"name": "entropy", "entropy_type": t, "alpha": a, "entropy_norm": n}
    for t in ("gibbs", "tsallis", "renyi")
    for a in (0.25, 0.5, 2.0)
    for n in ("lin", "exp")
]


def logp(*probs):
    return torch.tensor(probs, dtype=torch.float64).log()


@pytest.mark.parametrize("method", METHODS, ids=lambda m: "-".join(str(v) for v in m.values()))
def test_uniform_is_zero_one_hot_is_one(method):
    V = 5
    assert frame_confidence(logp(*[1 / V] * V), method).item() == pytest.approx(0.0, abs=1e-6)
    assert frame_confidence(logp(1.0, 0, 0, 0, 0), method).item() == pytest.approx(1.0, abs=1e-6)
    # and in between for anything else, monotone towards the one-hot
    mid = frame_confidence(logp(0.6, 0.1, 0.1, 0.1, 0.1), method).item()
    peakier = frame_confidence(logp(0.9, 0.025, 0.025, 0.025, 0.025), method).item()
    assert 0.0 < mid < peakier < 1.0


def test_hand_computed_values():
    # p = [1/2, 1/2, 0, 0], V = 4
    p = logp(0.5, 0.5, 0.0, 0.0)
    # Gibbs: H = ln 2, H_max = ln 4 -> lin 1/2; exp (4 e^{-ln 2} - 1) / 3 = 1/3
    assert frame_confidence(p, {"name": "entropy", "entropy_type": "gibbs", "entropy_norm": "lin"}) == pytest.approx(
        0.5
    )
    assert frame_confidence(p, {"name": "entropy", "entropy_type": "gibbs", "entropy_norm": "exp"}) == pytest.approx(
        1 / 3
    )
    # Renyi of a uniform-over-2 is ln 2 for every alpha: same values
    for norm, value in (("lin", 0.5), ("exp", 1 / 3)):
        assert frame_confidence(
            p, {"name": "entropy", "entropy_type": "renyi", "alpha": 0.25, "entropy_norm": norm}
        ) == pytest.approx(value)
    # Tsallis alpha 1/4: H = (1 - 2 * 0.5**0.25) / (0.25 - 1), H_max = (1 - 4**0.75) / (0.25 - 1)
    h = (1 - 2 * 0.5**0.25) / -0.75
    h_max = (1 - 4**0.75) / -0.75
    assert frame_confidence(
        p, {"name": "entropy", "entropy_type": "tsallis", "alpha": 0.25, "entropy_norm": "lin"}
    ) == pytest.approx(1 - h / h_max)
    assert frame_confidence(
        p, {"name": "entropy", "entropy_type": "tsallis", "alpha": 0.25, "entropy_norm": "exp"}
    ) == pytest.approx((math.exp(-h) - math.exp(-h_max)) / (1 - math.exp(-h_max)))
    # max_prob: (4 * 0.5 - 1) / 3
    assert frame_confidence(p, {"name": "max_prob", "alpha": 1.0}) == pytest.approx(1 / 3)
    assert frame_confidence(p, {"name": "max_prob", "alpha": 0.5}) == pytest.approx((2**0.5 - 1) / (4**0.5 - 1))


def test_exclude_blank_and_aggregations():
    blank = logp(0.97, 0.01, 0.01, 0.01)  # argmax blank (index 0)
    sure = logp(0.0, 1.0, 0.0, 0.0)  # one-hot non-blank: confidence 1
    half = logp(0.25, 0.25, 0.5, 0.0)  # non-blank argmax
    lp = torch.stack([blank, sure, half, blank])
    mp = {"name": "max_prob", "alpha": 1.0}
    c_half = (4 * 0.5 - 1) / 3
    assert utterance_confidence(lp, {"exclude_blank": True, "aggregation": "mean", "method_cfg": mp}) == pytest.approx(
        (1 + c_half) / 2
    )
    c_blank = (4 * 0.97 - 1) / 3
    assert utterance_confidence(lp, {"exclude_blank": False, "aggregation": "mean", "method_cfg": mp}) == pytest.approx(
        (2 * c_blank + 1 + c_half) / 4
    )
    for agg, value in (("min", c_half), ("max", 1.0), ("prod", c_half)):
        assert utterance_confidence(lp, {"exclude_blank": True, "aggregation": agg, "method_cfg": mp}) == pytest.approx(
            value
        )
    # all frames blank: the one where the blank is least likely is kept
    all_blank = torch.stack([logp(0.9, 0.1, 0.0, 0.0), logp(0.6, 0.2, 0.2, 0.0)])
    assert utterance_confidence(
        all_blank, {"exclude_blank": True, "aggregation": "mean", "method_cfg": mp}
    ) == pytest.approx((4 * 0.6 - 1) / 3)


def test_temperature_flattens():
    lp = torch.stack([logp(0.1, 0.7, 0.1, 0.1)])
    settings = {"exclude_blank": False, "aggregation": "mean", "method_cfg": {"name": "max_prob", "alpha": 1.0}}
    base = utterance_confidence(lp, settings)
    assert utterance_confidence(lp, settings, temperature=2.0) < base < utterance_confidence(lp, settings, 0.5)
    assert utterance_confidence(lp, settings, temperature=1e-3) == pytest.approx(1.0, abs=1e-6)


def test_defaults_and_validation():
    s = confidence_settings(None)
    assert s == {
        "exclude_blank": True,
        "aggregation": "mean",
        "method_cfg": {"name": "entropy", "entropy_type": "renyi", "alpha": 0.25, "entropy_norm": "lin"},
    }
    with pytest.raises(ValueError, match="aggregation"):
        confidence_settings({"aggregation": "median"})
    with pytest.raises(ValueError, match="entropy_type"):
        confidence_settings({"method_cfg": {"entropy_type": "shannon"}})
    with pytest.raises(ValueError, match="alpha = 1"):
        confidence_settings({"method_cfg": {"entropy_type": "tsallis", "alpha": 1}})
    with pytest.raises(ValueError, match="unknown keys"):
        confidence_settings({"method_cfg": {"nmae": "entropy"}})


def test_measure_cfg_is_migrated_with_a_warning():
    old = {"exclude_blank": False, "measure_cfg": {"name": "max_prob", "alpha": 0.5}}
    with pytest.warns(DeprecationWarning, match="measure_cfg.*method_cfg"):
        s = confidence_settings(old)
    assert s["method_cfg"]["name"] == "max_prob" and s["method_cfg"]["alpha"] == 0.5 and not s["exclude_blank"]
    assert "measure_cfg" in old  # the input is not modified
    new, changed = migrate_confidence(old)
    assert changed and "measure_cfg" not in new
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        confidence_settings(new)  # no warning once migrated
    with pytest.raises(ValueError, match="both"):
        migrate_confidence({"measure_cfg": {}, "method_cfg": {}})
