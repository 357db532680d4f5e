"""CTC decoders beyond greedy: our prefix beam search, pyctcdecode and flashlight-text.

Every decoder is built with the text encoder, ``decoder(log_probs [T, V] numpy,
length) -> [(text, score), ...]`` returns an n-best list, and ``decode_batch``
decodes a batch. Configs name them under ``decoders``:

    "decoders": {"beam": {"type": "PrefixBeamSearchDecoder", "args": {"beam_size": 50}},
                 "beam_lm": {"type": "PyCTCDecodeDecoder", "args": {"lm_path": "data/lm/4gram.bin",
                                                                     "alpha": 0.5, "beta": 1.0}}}

and metrics refer to a decoder by that name (``{"type": "WERMetric", "args": {"decoder": "beam_lm"}}``).

One decoder per module: ``prefix_beam`` (ours, with a word LM and hot phrases), ``pyctcdecode_decoder``,
``flashlight_decoder``, ``rescoring`` (n-best rescoring with a neural LM); ``language_model`` (KenLM) and
``common`` (the n-best interface, exact label scores) serve them.
"""

# the helpers are re-exported (``as`` names) so that ``hw_asr.text_encoder.decoders.X`` still finds them
from hw_asr.text_encoder.decoders.common import NBestDecoder as NBestDecoder
from hw_asr.text_encoder.decoders.common import ctc_label_logp as ctc_label_logp
from hw_asr.text_encoder.decoders.flashlight_decoder import FlashlightDecoder
from hw_asr.text_encoder.decoders.hot_phrases import HotPhrases as HotPhrases
from hw_asr.text_encoder.decoders.language_model import KenLMWordLM
from hw_asr.text_encoder.decoders.language_model import lm_vocabulary as lm_vocabulary
from hw_asr.text_encoder.decoders.language_model import read_words as read_words
from hw_asr.text_encoder.decoders.prefix_beam import PrefixBeamSearchDecoder
from hw_asr.text_encoder.decoders.pyctcdecode_decoder import PyCTCDecodeDecoder
from hw_asr.text_encoder.decoders.rescoring import CausalLMRescorer as CausalLMRescorer
from hw_asr.text_encoder.decoders.rescoring import NBestRescoringDecoder

__all__ = ["PrefixBeamSearchDecoder", "PyCTCDecodeDecoder", "FlashlightDecoder", "NBestRescoringDecoder", "KenLMWordLM"]
