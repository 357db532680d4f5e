"""benchmarks/init_probe.py: frame cosine and gradient growth after every encoder layer at initialisation."""

import pytest
import torch
from torch import nn

from benchmarks import init_probe
from hw_asr.model.base_model import CTCModel
from tests.conftest import REPO

SAMPLE_AUDIO = REPO / "hw_asr" / "data" / "sample" / "audio"


def test_cosine_of_equal_orthogonal_and_padded_frames():
    same = torch.ones(1, 5, 3)  # [B, T, C]: five equal frames
    assert init_probe.frame_cosine(same, torch.tensor([5]), time_dim=1) == pytest.approx(1.0)
    eye = torch.eye(4).unsqueeze(0)  # four orthogonal frames
    assert init_probe.frame_cosine(eye, torch.tensor([4]), time_dim=1) == pytest.approx(0.0)
    # the same frames channels-first, with two padded frames that would pull the mean up if counted
    padded = torch.cat([torch.eye(4), torch.ones(2, 4)]).T.unsqueeze(0)  # [1, C=4, T=6]
    assert init_probe.frame_cosine(padded, torch.tensor([4]), time_dim=2) == pytest.approx(0.0)
    # two utterances: the mean of their means
    both = torch.stack([torch.eye(3), torch.ones(3, 3)])
    assert init_probe.frame_cosine(both, torch.tensor([3, 3]), time_dim=1) == pytest.approx(0.5)


class _Mean(nn.Module):
    def forward(self, x):
        return x.mean(dim=1, keepdim=True).expand_as(x)


class _Scale(nn.Module):
    def forward(self, x):
        return 2.0 * x


class _Toy(CTCModel):
    def __init__(self, *layers):
        super().__init__(n_tokens=5)
        self.proj = nn.Linear(self.frontend.n_features, 8)
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(8, 5)

    def encode(self, feats, lengths):
        x = self.proj(feats.transpose(1, 2))
        for layer in self.layers:
            x = layer(x)
        return self.head(x), lengths


def test_cosine_after_every_layer_of_the_stack():
    torch.manual_seed(0)
    audio = torch.randn(2, 16000)
    # layer 0 keeps the frames, layer 1 replaces each by the utterance's mean frame
    rows = init_probe.probe_layers(_Toy(nn.Identity(), _Mean()), audio, torch.tensor([16000, 12000]))
    assert [n for n, _, _ in rows] == ["subsampled input", "layers.0", "layers.1"]
    cos = {n: c for n, c, _ in rows}
    assert cos["layers.0"] == pytest.approx(cos["subsampled input"])
    assert cos["subsampled input"] < 0.99
    assert cos["layers.1"] == pytest.approx(1.0)


def test_gradient_relative_to_the_last_layer():
    torch.manual_seed(0)
    audio = torch.randn(2, 16000)
    # a layer that doubles its input doubles the gradient on its way back
    rows = init_probe.probe_layers(_Toy(nn.Identity(), _Scale()), audio, torch.tensor([16000, 12000]))
    grad = {n: g for n, _, g in rows}
    assert grad == pytest.approx({"subsampled input": 2.0, "layers.0": 2.0, "layers.1": 1.0})


def test_presets_on_the_bundled_sample(capsys):
    results = init_probe.main(
        [
            "--presets",
            "quartznet_5x5",
            "--audio",
            str(SAMPLE_AUDIO),
            "--utterances",
            "2",
            "arch.args.blocks=5",
            "arch.args.repeat=1",
        ]
    )
    rows = results["quartznet_5x5"]
    assert [n for n, _, _ in rows] == ["subsampled input"] + [f"blocks.{i}" for i in range(5)]
    assert all(-1.0 <= c <= 1.0 for _, c, _ in rows)
    assert rows[-1][2] == 1.0 and all(g > 0 for _, _, g in rows)
    out = capsys.readouterr().out
    assert "quartznet_5x5: cosine subsampled input" in out and "quartznet_5x5: grad subsampled input" in out


def test_missing_audio_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no audio files"):
        init_probe.main(["--presets", "quartznet_5x5", "--audio", str(tmp_path)])
