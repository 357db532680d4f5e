import pytest
import torch

from hw_asr.loss import CTCLoss
from hw_asr.model import BaselineModel, DeepSpeech2, LogMelFrontend, SpecAugment
from hw_asr.model.frontend import mel_filterbank
from hw_asr.model.spec_augment import time_warp

torch.manual_seed(0)


def padded_batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        audio[i, :n] = torch.randn(n, generator=g) * 0.1
    return audio, torch.tensor(lengths)


def test_frontend_shapes_and_lengths():
    fe = LogMelFrontend(n_mels=40, hop_length=160)
    audio, lengths = padded_batch([16000, 8001, 1234])
    feats, out = fe(audio, lengths)
    assert feats.shape == (3, 40, 16000 // 160 + 1)
    assert out.tolist() == [101, 51, 8]
    assert feats[1, :, 51:].abs().sum() == 0, "padded frames are zero"
    real = feats[1, :, :51]
    assert real.mean(-1).abs().max() < 1e-4 and (real.std(-1) - 1).abs().max() < 1e-3


def test_frontend_same_alone_and_padded():
    fe = LogMelFrontend()
    audio, lengths = padded_batch([16000, 7001])
    feats, out = fe(audio, lengths)
    alone, _ = fe(audio[1:, :7001], lengths[1:])
    torch.testing.assert_close(feats[1, :, : out[1]], alone[0], atol=1e-4, rtol=0)


def test_mel_filterbank_properties():
    for scale in ("htk", "slaney"):
        fb = mel_filterbank(257, 0.0, 8000.0, 40, 16000, scale)
        assert fb.shape == (257, 40) and (fb >= 0).all() and fb.max() <= 1.0 + 1e-6
        peaks = fb.argmax(0)
        assert (peaks[1:] >= peaks[:-1]).all(), "filters are ordered by frequency"
    normed = mel_filterbank(257, 0.0, 8000.0, 40, 16000, "slaney", norm="slaney")
    assert not torch.allclose(normed, mel_filterbank(257, 0.0, 8000.0, 40, 16000, "slaney"))


def test_parity_with_torchaudio():
    torchaudio = pytest.importorskip("torchaudio")
    audio, lengths = padded_batch([16000])
    ta = torchaudio.transforms.MelSpectrogram(
        16000, n_fft=512, win_length=400, hop_length=160, n_mels=80, mel_scale="htk", pad_mode="reflect"
    )(audio)
    ours = LogMelFrontend(normalize=None, pad_mode="reflect", log_eps=2**-24)
    feats, _ = ours(audio, lengths)
    torch.testing.assert_close(feats, torch.log(ta + 2**-24), atol=1e-3, rtol=1e-3)


def test_spec_augment_masks_only_in_training_and_inside_length():
    sa = SpecAugment(freq_masks=2, freq_width=5, time_masks=2, time_width=10, fill=-100.0)
    feats = torch.ones(4, 20, 50)
    lengths = torch.tensor([50, 30, 12, 1])
    sa.train()
    out = sa(feats, lengths)
    masked = out == -100.0
    assert masked.any()
    for b, n in enumerate(lengths.tolist()):
        time_masked = masked[b].all(0)
        assert not time_masked[n:].any(), "time masks stay inside the real frames"
    freq_masked = masked.all(2)
    assert (freq_masked.sum(1) <= 10).all()
    sa.eval()
    assert torch.equal(sa(feats, lengths), feats)


def test_spec_augment_relative_time_width():
    sa = SpecAugment(freq_masks=0, time_masks=1, time_width=0.1, fill=-1.0).train()
    out = sa(torch.zeros(64, 4, 100), torch.full((64,), 100))
    widths = (out[:, 0, :] == -1.0).sum(-1)
    assert widths.max() <= 10 and widths.max() > 0


def test_time_warp_moves_the_centre_and_keeps_ends_and_padding():
    # a ramp (value = frame index) shows where every output frame was read from
    ramp = torch.arange(40.0).expand(3, 2, 40).clone()
    lengths = torch.tensor([40, 30, 20])
    centre, shift = torch.tensor([20, 10, 8]), torch.tensor([5, -4, 0])
    out = time_warp(ramp, lengths, centre, shift)
    assert out.shape == ramp.shape and out.dtype == ramp.dtype
    for b, (n, c, d) in enumerate(zip(lengths.tolist(), centre.tolist(), shift.tolist())):
        row = out[b, 0]
        assert row[c + d] == pytest.approx(c), "the centre frame lands at centre + shift"
        assert row[0] == 0 and row[n - 1] == pytest.approx(n - 1), "the ends stay"
        assert torch.equal(row[n:], ramp[b, 0, n:]), "padding is untouched"
        assert (row[1:n] >= row[: n - 1]).all(), "time order is kept"
        assert torch.equal(out[b, 0], out[b, 1]), "every feature is warped alike"
    # left of the centre the spacing is c / (c + d): stretched for d > 0, squeezed for d < 0
    assert out[0, 0, 1] == pytest.approx(20 / 25) and out[1, 0, 1] == pytest.approx(10 / 6)
    assert torch.equal(out[2], ramp[2]), "no shift, no change"


def test_spec_augment_time_warp_only_in_training():
    sa = SpecAugment(freq_masks=0, time_masks=0, time_warp=5)
    feats, lengths = torch.randn(8, 4, 60), torch.tensor([60, 50, 40, 30, 20, 10, 3, 1])
    sa.train()
    out = sa(feats, lengths)
    assert out.shape == feats.shape and torch.isfinite(out).all()
    assert not torch.equal(out, feats)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(out[b, :, n:], feats[b, :, n:])
        assert torch.equal(out[b, :, 0], feats[b, :, 0])
    assert torch.equal(out[-1], feats[-1]), "a one-frame utterance cannot be warped"
    assert torch.equal(sa.eval()(feats, lengths), feats)
    with pytest.raises(ValueError, match="time_warp"):
        SpecAugment(time_warp=-1)


def test_spec_augment_schedule_starts_and_ramps_with_the_optimiser_step():
    sa = SpecAugment(freq_masks=1, freq_width=20, time_masks=1, time_width=40, fill=-1.0, start_step=10, ramp_steps=9)
    sa.train()
    feats, lengths = torch.zeros(256, 40, 100), torch.full((256,), 100)

    def widest(step):
        sa.set_train_step(step)
        masked = sa(feats, lengths) == -1.0
        return int(masked.all(2).sum(1).max()), int(masked.all(1).sum(1).max())  # freq bins, frames

    strengths = []
    for step in (0, 9, 10, 14, 18, 19, 500):
        sa.set_train_step(step)
        strengths.append(sa.strength())
    assert strengths == [0, 0, 0.1, 0.5, 0.9, 1.0, 1.0]
    assert widest(0) == (0, 0) and widest(9) == (0, 0), "off before start_step"
    freq, frames = widest(14)  # half the full widths: at most 10 bins and 20 frames
    assert 0 < freq <= 10 and 0 < frames <= 20
    freq, frames = widest(100)
    assert freq > 10 and frames > 20, "full widths after the ramp"
    sa.train_step = None  # no trainer: full strength, as before the schedule existed
    assert sa.strength() == 1.0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="start_step"):
            SpecAugment(start_step=bad)
    with pytest.raises(ValueError, match="ramp_steps"):
        SpecAugment(ramp_steps=-3)


MODELS = [
    lambda: BaselineModel(29, hidden=32, frontend=LogMelFrontend(n_mels=32)),
    lambda: DeepSpeech2(
        29, frontend=LogMelFrontend(n_mels=64), conv_channels=4, rnn_hidden=32, rnn_layers=2, rnn_type="gru"
    ),
    lambda: DeepSpeech2(
        29,
        frontend=LogMelFrontend(n_mels=64),
        conv_channels=4,
        rnn_hidden=32,
        rnn_layers=3,
        rnn_type="lstm",
        rnn_norm="layer",
        residual=True,
    ),
    lambda: DeepSpeech2(
        29, frontend=LogMelFrontend(n_mels=64), conv_channels=4, rnn_hidden=32, rnn_layers=2, sum_directions=True
    ),
]


@pytest.mark.parametrize("make", MODELS)
def test_output_contract_and_odd_lengths(make):
    model = make().eval()
    audio, lengths = padded_batch([16001, 3333, 161])
    out = model(audio, lengths)
    lp, n = out["log_probs"], out["log_probs_length"]
    assert lp.dtype == torch.float32 and lp.shape[0] == 3 and lp.shape[2] == 29
    assert n.max() == lp.shape[1]
    frames = lengths // 160 + 1
    assert n.tolist() == ((frames - 1) // 2 + 1).tolist()
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(lp.shape[:2]))


@pytest.mark.parametrize("make", MODELS)
def test_padding_invariance(make):
    model = make().eval()
    audio, lengths = padded_batch([48000, 5000])
    batched = model(audio, lengths)
    alone = model(audio[1:, :5000], lengths[1:])
    n = alone["log_probs_length"][0]
    torch.testing.assert_close(batched["log_probs"][1, :n], alone["log_probs"][0], atol=1e-4, rtol=0)


def test_deepspeech2_parameter_count_follows_config():
    model = DeepSpeech2(29, frontend=LogMelFrontend(n_mels=80), conv_channels=32, rnn_hidden=512, rnn_layers=5)
    # convs 32*41*11 + 32*32*21*11 (no bias) + 2 BN(32); freq 80 -> 40 -> 20, GRU input 32*20
    conv = 32 * 41 * 11 + 32 * 32 * 21 * 11 + 2 * 64
    gru = lambda i, h: 2 * 3 * (i * h + h * h + 2 * h)
    rnn = gru(640, 512) + 4 * (gru(1024, 512) + 2 * 1024)
    head = 2 * 1024 + 1024 * 29
    assert sum(p.numel() for p in model.parameters()) == conv + rnn + head


def test_ctc_loss_is_mean_over_target_lengths():
    loss = CTCLoss()
    log_probs = torch.randn(2, 20, 6).log_softmax(-1)
    targets = torch.tensor([[1, 2, 3], [4, 5, 0]])
    out = loss(log_probs, torch.tensor([20, 15]), targets, torch.tensor([3, 2]))["loss"]
    ref = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), targets, torch.tensor([20, 15]), torch.tensor([3, 2]), reduction="none"
    )
    torch.testing.assert_close(out, (ref / torch.tensor([3.0, 2.0])).mean())
    impossible = loss(log_probs[:, :2], torch.tensor([2, 2]), targets, torch.tensor([3, 2]))["loss"]
    assert torch.isfinite(impossible)


def test_reverse_within_length_reverses_real_frames_and_its_gradient_is_a_gather():
    from torch.utils._python_dispatch import TorchDispatchMode

    from hw_asr.model.rnn import reverse_within_length

    x = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 4, 1])
    y = reverse_within_length(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(y[b, :n], x[b, :n].flip(0))
        assert torch.equal(y[b, n:], x[b, n:])  # padding stays where it is
    assert torch.autograd.gradcheck(lambda t: reverse_within_length(t, lengths), (x,))

    class Ops(TorchDispatchMode):
        names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    weights = torch.randn_like(x)
    y = reverse_within_length(x, lengths)
    with Ops() as ops:
        (y * weights).sum().backward()
    assert "gather" in ops.names
    assert not [n for n in ops.names if n.startswith("scatter")]
