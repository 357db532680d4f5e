"""ONNX export: the exported graph (frontend included) gives the PyTorch model's log-probs."""

import onnx
import pytest
import torch

from benchmarks import onnx_runtime
from hw_asr import evaluation
from hw_asr.builder import build_model
from hw_asr.checkpoint import save_checkpoint
from hw_asr.config import ConfigError
from hw_asr.export import OnnxCTCModel, export_onnx, exportable_rnns, random_batch
from hw_asr.model import DeepSpeech2, SpectrogramFrontend
from hw_asr.text_encoder import CTCCharTextEncoder
from hw_asr.tools import export_onnx as export_onnx_tool
from tests.conftest import REPO
from tests.test_model_zoo import SMALL

FAMILIES = {
    "conformer": SMALL["conformer_rel"],
    "fastconformer": SMALL["fastconformer"],
    "ebranchformer": SMALL["ebranchformer"],
    "quartznet": SMALL["quartznet_s2"],
    "deepspeech2_gru": lambda: DeepSpeech2(
        29, frontend=SpectrogramFrontend(), conv_channels=4, rnn_hidden=16, rnn_layers=2, rnn_type="gru"
    ),
    "deepspeech2_lstm": lambda: DeepSpeech2(
        29, frontend=SpectrogramFrontend(), conv_channels=4, rnn_hidden=16, rnn_layers=2, rnn_type="lstm"
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_log_probs_match_pytorch_on_random_lengths(tmp_path, family):
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    path = export_onnx(model, tmp_path / "model.onnx", metadata={"family": family})
    onnx_model = OnnxCTCModel(path, threads=2)
    assert onnx_model.metadata == {"n_tokens": model.n_tokens, "sample_rate": 16000, "family": family}
    # lengths unlike the traced example's (2.0 s and 1.3 s): another batch size and longer audio
    for seed, lengths in enumerate([[16000], [40000, 23456, 4001], [8000, 8000]]):
        audio, audio_length = random_batch(lengths, seed)
        with torch.no_grad():
            ref = model(audio, audio_length)
        got = onnx_model(audio, audio_length)
        assert torch.equal(got["log_probs_length"], ref["log_probs_length"])
        assert got["log_probs"].shape == ref["log_probs"].shape
        for i, n in enumerate(ref["log_probs_length"].tolist()):
            diff = (got["log_probs"][i, :n] - ref["log_probs"][i, :n]).abs().max().item()
            assert diff < 1e-4, f"{family} {lengths}: utterance {i} differs by {diff}"


def test_recurrent_layers_export_as_onnx_rnn_nodes_and_the_model_is_left_as_it_was(tmp_path):
    model = FAMILIES["deepspeech2_gru"]().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "ds2.onnx")
    proto = onnx.load(tmp_path / "ds2.onnx")
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    # 2 layers x 2 directions, one ONNX GRU node each
    assert sum(n.op_type == "GRU" for n in nodes) == 4
    assert all(isinstance(m.forward_rnn, torch.nn.GRU) for m in (layer.rnn for layer in model.rnns))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_rnn_stand_in_computes_what_the_torch_layer_does():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 5)
    for rnn in (torch.nn.GRU(5, 4, batch_first=True), torch.nn.LSTM(5, 4, batch_first=True)):
        stand_in = exportable_rnns(torch.nn.Sequential(rnn))[0]
        assert torch.allclose(stand_in(x)[0], rnn(x)[0], atol=1e-6)


def test_recurrent_layers_of_another_form_are_refused_naming_the_layer(tmp_path):
    for rnn in (
        torch.nn.GRU(8, 4, num_layers=2, batch_first=True),
        torch.nn.GRU(8, 4, bidirectional=True, batch_first=True),
        torch.nn.LSTM(8, 4),
        torch.nn.RNN(8, 4, batch_first=True),
    ):
        model = torch.nn.Module()
        model.encoder = torch.nn.Sequential(torch.nn.Identity(), rnn)
        with pytest.raises(NotImplementedError, match="encoder.1: "):
            exportable_rnns(model)


def test_a_file_that_is_not_an_export_is_refused_with_its_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxCTCModel(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.onnx"):
        OnnxCTCModel(bad)


def tiny_conformer_checkpoint(path, alphabet="en", seed=0):
    torch.manual_seed(seed)
    sample = str(REPO / "hw_asr" / "data" / "sample" / "manifest.jsonl")
    config = {
        "sample_rate": 16000,
        "text_encoder": {"type": "CTCCharTextEncoder", "args": {"alphabet": alphabet}},
        "arch": {
            "type": "Conformer",
            "args": {"dim": 32, "heads": 2, "layers": 2, "conv_kernel": 7, "frontend": {"n_mels": 32}},
        },
        "data": {
            "val": {
                "batch_size": 4,
                "datasets": [{"type": "ManifestDataset", "args": {"manifest_path": sample, "limit": 6}}],
            }
        },
        "decoders": {"beam": {"type": "PrefixBeamSearchDecoder", "args": {"beam_size": 4}}},
    }
    encoder = CTCCharTextEncoder(alphabet)
    model = build_model(config, n_tokens=len(encoder))
    save_checkpoint({"model": model.state_dict(), "config": config, "text_encoder": encoder.state()}, path)
    return path


def test_test_py_with_the_onnx_runtime_gives_the_pytorch_predictions(tmp_path):
    ckpt = tiny_conformer_checkpoint(tmp_path / "model.pth")
    onnx_path = export_onnx_tool.main(["-r", str(ckpt)])
    assert onnx_path == tmp_path / "model.onnx"
    common = ["-r", str(ckpt), "--timestamps"]
    ref = evaluation.main([*common, "-o", str(tmp_path / "torch.json")])
    got = evaluation.main([*common, "-o", str(tmp_path / "onnx.json"), "--runtime", "onnx", "--threads", "2"])
    assert len(got["utterances"]) == len(ref["utterances"]) == 6
    for a, b in zip(ref["utterances"], got["utterances"]):
        assert (a["pred_argmax"], a["pred_beam"]) == (b["pred_argmax"], b["pred_beam"])
        assert [w["word"] for w in a["words"]] == [w["word"] for w in b["words"]]
        for wa, wb in zip(a["words"], b["words"]):
            assert wa["start"] == wb["start"] and wa["end"] == wb["end"]
            assert abs(wa["confidence"] - wb["confidence"]) < 1e-3
    assert got["decoders"] == ref["decoders"]


def test_the_onnx_runtime_names_a_missing_or_foreign_export(tmp_path):
    ckpt = tiny_conformer_checkpoint(tmp_path / "en.pth")
    with pytest.raises(FileNotFoundError, match="en.onnx.*export_onnx"):
        evaluation.main(["-r", str(ckpt), "-o", str(tmp_path / "r.json"), "--runtime", "onnx"])
    ru = tiny_conformer_checkpoint(tmp_path / "ru.pth", alphabet="ru")
    export_onnx_tool.main(["-r", str(ru)])
    with pytest.raises(ConfigError, match="ru.onnx outputs 34 tokens but .*en.pth's text encoder has 29"):
        evaluation.main(
            ["-r", str(ckpt), "-o", str(tmp_path / "r.json"), "--runtime", "onnx", "--onnx", str(tmp_path / "ru.onnx")]
        )


def test_the_onnx_benchmark_reports_parity_and_both_runtimes(tmp_path, capsys):
    ckpt = tiny_conformer_checkpoint(tmp_path / "model.pth")
    rows = onnx_runtime.main(["--presets", "--checkpoint", str(ckpt), "--seconds", "1", "--repeats", "1"])
    (row,) = rows
    assert row["max_diff"] < 1e-4
    assert all(row[k] > 0 for k in ("rtf_torch_b1", "rtf_onnx_b1", "rtf_torch_b16", "rtf_onnx_b16"))
    assert row["speedup_b16"] == pytest.approx(row["rtf_torch_b16"] / row["rtf_onnx_b16"])
    assert "| " + row["model"] + " |" in capsys.readouterr().out
