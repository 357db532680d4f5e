"""Metrics registry: ``{"type": "WERMetric", "args": {"decoder": "argmax"}}``."""

from hw_asr.metric.wer_cer import ArgmaxCERMetric, ArgmaxWERMetric, CERMetric, WERMetric, calc_cer, calc_wer

__all__ = ["WERMetric", "CERMetric", "ArgmaxWERMetric", "ArgmaxCERMetric"]
