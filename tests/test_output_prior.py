import pytest
import torch
from torch import nn

from hw_asr.model.output_prior import ctc_output_prior, output_frames_per_second, set_output_prior
from hw_asr.text_encoder import CTCCharTextEncoder
from tests.test_training import TINY, run_train


class FramesModel(nn.Module):
    """A stand-in CTC model: one output frame per ``hop`` samples, a head with or without a bias."""

    def __init__(self, n_tokens, hop=320, bias=True):
        super().__init__()
        self.hop = hop
        self.head = nn.Linear(4, n_tokens, bias=bias)

    def forward(self, audio, audio_length, **batch):
        assert not self.training, "the frame rate is measured in eval mode"
        frames = audio_length // self.hop
        return {"log_probs": torch.zeros(audio.shape[0], int(frames.max()), 1), "log_probs_length": frames}


class Indexed(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.index = rows

    def __len__(self):
        return len(self.index)


def test_prior_gives_blank_the_free_frames_and_tokens_their_counts():
    encoder = CTCCharTextEncoder("en")
    model = FramesModel(len(encoder)).train()
    # 2 s at 50 output frames/s = 100 frames; "aab" + "b" = 4 tokens (a: 2, b: 2)
    data = torch.utils.data.ConcatDataset(
        [Indexed([{"text": "aab", "duration": 1.5}]), Indexed([{"text": "b", "duration": 0.5}])]
    )
    assert output_frames_per_second(model, 16000) == 50.0
    assert model.training, "the model's mode is restored"
    prior = ctc_output_prior(model, data, encoder, 16000)
    assert prior.shape == (len(encoder),)
    assert prior.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert prior[0].item() == pytest.approx(1 - 4 / 100)
    a, b, z = (int(encoder.encode(c)[0]) for c in "abz")
    # counts plus one: a and b (3 each) share with every unseen token (1 each)
    assert prior[a].item() == pytest.approx(prior[b].item())
    assert prior[a].item() == pytest.approx(3 * prior[z].item())
    # transcripts longer than the frames allow: blank keeps its floor
    dense = Indexed([{"text": "abcd " * 40, "duration": 1.0}])
    assert ctc_output_prior(model, dense, encoder, 16000)[0].item() == pytest.approx(0.1)


def test_set_output_prior_makes_the_bias_alone_give_the_prior_and_refuses_a_head_without_bias():
    prior = torch.tensor([0.7, 0.2, 0.1])
    model = FramesModel(3)
    set_output_prior(model, prior)
    torch.testing.assert_close(model.head.bias.softmax(-1), prior)
    with pytest.raises(ValueError, match="has no bias"):
        set_output_prior(FramesModel(3, bias=False), prior)
    with pytest.raises(ValueError, match="outputs"):
        set_output_prior(FramesModel(4), prior)


def test_streamed_split_without_transcripts_is_refused_by_name():
    class Streamed(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(())

    encoder = CTCCharTextEncoder("en")
    with pytest.raises(ValueError, match="Streamed streams its items and lists none"):
        ctc_output_prior(FramesModel(len(encoder)), Streamed(), encoder, 16000)


def test_new_run_starts_on_the_prior_and_a_resume_keeps_its_trained_bias(tmp_path):
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1", "trainer.head_prior=true")
    log = (run_dir / "train.log").read_text()
    assert "head bias set to the log prior" in log
    resumed = run_train(tmp_path, "trainer.epochs=2", resume=run_dir / "checkpoint-epoch1.pth")
    assert resumed == run_dir
    assert (run_dir / "train.log").read_text().count("head bias set to the log prior") == 1


def test_head_prior_on_a_model_without_output_bias_is_a_config_error(tmp_path):
    from hw_asr.config import ConfigError

    with pytest.raises(ConfigError, match="DeepSpeech2's output layer has no bias"):
        run_train(
            tmp_path,
            *TINY,
            "arch.type=DeepSpeech2",
            'arch.args={"conv_channels": 4, "rnn_hidden": 16, "rnn_layers": 1, "frontend": {"n_mels": 32}}',
            "trainer.head_prior=true",
        )
    assert not list(tmp_path.rglob("config.json")), "refused before the run folder is made"
