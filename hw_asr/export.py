"""ONNX export of a CTC model (raw 16 kHz audio in, log-probs out) and an onnxruntime stand-in for it.

The exported graph holds the whole inference path: the STFT frontend, the encoder and the
log-softmax, with dynamic batch and sample axes. :class:`OnnxCTCModel` runs it with onnxruntime and
answers like the PyTorch model (``{"log_probs", "log_probs_length"}`` as torch tensors), so that
``hw_asr.inference.predict`` and every decoder run unchanged on it (``test.py --runtime onnx``).
"""

import copy
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

INPUTS = ("audio", "audio_length")
OUTPUTS = ("log_probs", "log_probs_length")
OPSET = 18


class LogProbsOnly(nn.Module):
    """``(audio [B, T], audio_length [B]) -> (log_probs [B, T', V], log_probs_length [B])`` in eval mode:
    the model's forward as a function of two tensors, the form an exporter traces."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: Tensor, audio_length: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(audio, audio_length)
        return out["log_probs"], out["log_probs_length"]


# Recurrent layers. torch.export traces nn.GRU/nn.LSTM to aten.gru/aten.lstm, whose shape propagation
# fails when the time axis is dynamic (the gates come out mis-sized while the exporter re-traces the
# graph). For export, each single-layer, one-direction, batch-first GRU/LSTM (all MaskedBiRNN uses)
# goes through an opaque custom op instead, with its own shape function, which the translations
# below write as one ONNX GRU/LSTM node.


@torch.library.custom_op("hw_asr::rnn_layer", mutates_args=())
def rnn_layer(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor, kind: str
) -> torch.Tensor:
    """``x [B, T, C]`` -> ``[B, T, H]``: one layer of a forward GRU (``kind="gru"``) or LSTM
    (``"lstm"``) with PyTorch's weight layout, from a zero state."""
    hidden = w_hh.shape[1]
    h0 = x.new_zeros(1, x.shape[0], hidden)
    params = [w_ih, w_hh, b_ih, b_hh]
    if kind == "gru":
        return torch.gru(x, h0, params, True, 1, 0.0, False, False, True)[0]
    if kind == "lstm":
        return torch.lstm(x, (h0, h0.clone()), params, True, 1, 0.0, False, False, True)[0]
    raise ValueError(f"kind must be 'gru' or 'lstm', got {kind!r}")


@rnn_layer.register_fake
def _rnn_layer_shape(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor, kind: str) -> Tensor:
    return x.new_empty(x.shape[0], x.shape[1], w_hh.shape[1])


class _ExportableRNN(nn.Module):
    """Stands in for a one-layer, one-direction, batch-first ``nn.GRU``/``nn.LSTM`` (same parameters)."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn
        self.kind = "gru" if isinstance(rnn, nn.GRU) else "lstm"

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        r = self.rnn
        return rnn_layer(x, r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0, self.kind), None


def exportable_rnns(model: nn.Module) -> nn.Module:
    """``model`` itself when it has no GRU/LSTM; else a copy whose GRU/LSTM layers run through
    :func:`rnn_layer` (same weights, same outputs). Raises NotImplementedError, naming the layer, for a
    recurrent layer of another form (several layers, bidirectional, not batch-first, no biases,
    projections)."""
    if not any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.RNNBase):
                continue
            where = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, (nn.GRU, nn.LSTM)) or child.num_layers != 1 or child.bidirectional:
                raise NotImplementedError(
                    f"{where}: only one-layer, one-direction GRU/LSTM layers export (as MaskedBiRNN builds them)"
                )
            if not child.batch_first or not child.bias or getattr(child, "proj_size", 0):
                raise NotImplementedError(f"{where}: the exported GRU/LSTM must be batch-first, with biases")
            setattr(module, child_name, _ExportableRNN(child))
    return model


def _gates(w: Any, hidden: Any, order: Sequence[int]) -> Any:
    """Rows of a PyTorch gate-stacked weight [n*H, ...] (or bias [n*H]) re-stacked in ``order``."""
    from onnxscript import opset18 as op

    parts = [op.Slice(w, [g * hidden], [(g + 1) * hidden], [0]) for g in range(len(order))]
    return op.Concat(*[parts[g] for g in order], axis=0)


def _onnx_rnn_layer(x: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any, kind: str) -> Any:
    """ONNX for :func:`rnn_layer`: one GRU/LSTM node on ``[T, B, C]``. Gate order: PyTorch's GRU is
    r, z, n and ONNX's z, r, h (with ``linear_before_reset=1``, PyTorch's formula); PyTorch's LSTM is
    i, f, g, o and ONNX's i, o, f, c."""
    from onnxscript import opset18 as op

    hidden = w_hh.shape[1]
    order = [1, 0, 2] if kind == "gru" else [0, 3, 1, 2]
    w = op.Unsqueeze(_gates(w_ih, hidden, order), [0])
    r = op.Unsqueeze(_gates(w_hh, hidden, order), [0])
    b = op.Unsqueeze(op.Concat(_gates(b_ih, hidden, order), _gates(b_hh, hidden, order), axis=0), [0])
    seq = op.Transpose(x, perm=[1, 0, 2])
    if kind == "gru":
        y, _ = op.GRU(seq, w, r, b, hidden_size=hidden, linear_before_reset=1)
    else:
        y, _, _ = op.LSTM(seq, w, r, b, hidden_size=hidden)
    # y: [T, 1, B, H] -> [B, T, H]
    return op.Transpose(op.Squeeze(y, [1]), perm=[1, 0, 2])


RNN_TRANSLATIONS = {torch.ops.hw_asr.rnn_layer.default: _onnx_rnn_layer}


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    sample_rate: int = 16000,
    metadata: Mapping[str, Any] | None = None,
    example_seconds: Sequence[float] = (2.0, 1.3),
    opset: int = OPSET,
) -> str | os.PathLike:
    """Write ``model`` (a CTCModel) to ``path`` as ONNX with dynamic batch and sample axes.

    The graph is traced on a batch of ``example_seconds`` of random audio through torch's
    ``torch.export``-based exporter; GRU/LSTM layers become ONNX ``GRU``/``LSTM`` nodes
    (:func:`exportable_rnns`). ``metadata`` (str -> JSON-able) is stored in the file's
    metadata properties, next to ``n_tokens`` and ``sample_rate``. Returns ``path``.
    """
    wrapper = LogProbsOnly(exportable_rnns(model)).eval()
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
            custom_translation_table=RNN_TRANSLATIONS,
            verbose=False,
        )
    props = {"n_tokens": model.n_tokens, "sample_rate": sample_rate, **(metadata or {})}
    program.model.metadata_props.update({k: json.dumps(v) for k, v in props.items()})
    program.save(str(path))
    return path


def random_batch(lengths: Sequence[float], seed: int = 0) -> tuple[Tensor, Tensor]:
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

    def __init__(self, path: str | os.PathLike, threads: int | None = None, frontend: nn.Module | None = None) -> None:
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

    def eval(self) -> "OnnxCTCModel":
        return self

    def __call__(self, audio: Tensor, audio_length: Tensor, **batch: Any) -> dict[str, Tensor]:
        log_probs, lengths = self.session.run(
            list(OUTPUTS),
            {
                "audio": np.ascontiguousarray(audio.detach().cpu().float().numpy()),
                "audio_length": audio_length.detach().cpu().long().numpy(),
            },
        )
        return {"log_probs": torch.from_numpy(log_probs), "log_probs_length": torch.from_numpy(lengths)}


__all__ = ["LogProbsOnly", "OnnxCTCModel", "export_onnx", "exportable_rnns", "random_batch", "rnn_layer"]
