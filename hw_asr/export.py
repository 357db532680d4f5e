"""ONNX export of a CTC model (raw 16 kHz audio in, log-probs out) and an onnxruntime stand-in for it.

The exported graph holds the whole inference path: the STFT frontend, the encoder and the
log-softmax, with dynamic batch and sample axes. :class:`OnnxCTCModel` runs it with onnxruntime and
answers like the PyTorch model (``{"log_probs", "log_probs_length"}`` as torch tensors), so that
``hw_asr.inference.predict`` and every decoder run unchanged on it (``test.py --runtime onnx``).
"""

import json
import os

import numpy as np
import torch
from torch import nn

INPUTS = ("audio", "audio_length")
OUTPUTS = ("log_probs", "log_probs_length")
OPSET = 18


class LogProbsOnly(nn.Module):
    """``(audio [B, T], audio_length [B]) -> (log_probs [B, T', V], log_probs_length [B])`` in eval mode:
    the model's forward as a function of two tensors, the form an exporter traces."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, audio, audio_length):
        out = self.model(audio, audio_length)
        return out["log_probs"], out["log_probs_length"]


def export_onnx(model, path, sample_rate=16000, metadata=None, example_seconds=(2.0, 1.3), opset=OPSET):
    """Write ``model`` (a CTCModel) to ``path`` as ONNX with dynamic batch and sample axes.

    The graph is traced on a batch of ``example_seconds`` of random audio through torch's
    ``torch.export``-based exporter. ``metadata`` (str -> JSON-able) is stored in the file's
    metadata properties, next to ``n_tokens`` and ``sample_rate``. Returns ``path``.
    """
    rnns = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase)})
    if rnns:
        raise NotImplementedError(
            f"{type(model).__name__} has recurrent layers ({', '.join(rnns)}): torch's ONNX exporter cannot yet "
            "trace a GRU/LSTM whose length is derived from a dynamic input length (it mis-sizes the gates "
            "while decomposing aten.gru). Export the convolutional and attention models; run this one with PyTorch"
        )
    wrapper = LogProbsOnly(model).eval()
    lengths = torch.tensor([int(s * sample_rate) for s in example_seconds])
    audio = torch.randn(len(lengths), int(lengths.max()))
    batch = torch.export.Dim("batch", min=1, max=4096)
    samples = torch.export.Dim("samples", min=sample_rate // 10, max=sample_rate * 3600)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (audio, lengths),
            dynamo=True,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_shapes={"audio": {0: batch, 1: samples}, "audio_length": {0: batch}},
            opset_version=opset,
            verbose=False,
        )
    props = {"n_tokens": model.n_tokens, "sample_rate": sample_rate, **(metadata or {})}
    program.model.metadata_props.update({k: json.dumps(v) for k, v in props.items()})
    program.save(str(path))
    return path


def random_batch(lengths, seed=0):
    """A batch for parity checks: ``(audio [B, max(lengths)], lengths [B])``, noise of std 0.1 on each
    utterance's first ``lengths[b]`` samples and zeros after."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    audio = 0.1 * torch.randn(len(lengths), int(lengths.max()), generator=g)
    return audio * (torch.arange(audio.shape[1]) < lengths[:, None]), lengths


class OnnxCTCModel:
    """An exported model run by onnxruntime on the CPU, called like the PyTorch model.

    Args:
        path: the ``.onnx`` file (:func:`export_onnx`).
        threads (int or None): onnxruntime's intra-op threads (None: its default, every core).
        frontend (nn.Module or None): the PyTorch model's frontend, for what asks about frame times
            (word timestamps read ``frontend.hop_length`` and ``frontend.output_lengths``); not run.
    """

    def __init__(self, path, threads=None, frontend=None):
        import onnxruntime as ort

        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such ONNX file (write one with python -m hw_asr.tools.export_onnx)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes for a bad file
            raise ValueError(f"{path}: onnxruntime cannot load it: {e}") from e
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUTS):
            raise ValueError(f"{path}: inputs are {names}, expected {list(INPUTS)} (an hw_asr export)")
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {k: json.loads(v) for k, v in meta.items()}
        self.n_tokens = self.metadata.get("n_tokens")
        self.frontend = frontend

    def eval(self):
        return self

    def __call__(self, audio, audio_length, **batch):
        log_probs, lengths = self.session.run(
            list(OUTPUTS),
            {
                "audio": np.ascontiguousarray(audio.detach().cpu().float().numpy()),
                "audio_length": audio_length.detach().cpu().long().numpy(),
            },
        )
        return {"log_probs": torch.from_numpy(log_probs), "log_probs_length": torch.from_numpy(lengths)}


__all__ = ["LogProbsOnly", "OnnxCTCModel", "export_onnx", "random_batch"]
