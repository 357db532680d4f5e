"""benchmarks/plateau.py: when a preset leaves CTC's blank plateau, read from a run's logged rows."""

import json
import math

import pytest

from benchmarks import plateau
from tests.conftest import REPO

SAMPLE = REPO / "hw_asr" / "data" / "sample"
ONE_BATCH = REPO / "configs" / "one_batch_test.json"


def rows():
    train = [  # (step, loss, batches_per_s): windows of 10 steps at 0.5, then 0.25 batch/s
        (10, 2.9, 0.5),
        (20, 2.8, 0.5),
        (30, 2.1, 0.25),
        (40, 1.9, 0.25),
        (50, 1.5, 0.25),
    ]
    out = [
        {"split": "train", "step": s, "loss": loss, "batches_per_s": b, "audio_s_per_s": 10.0} for s, loss, b in train
    ]
    out += [
        {"split": "epoch", "step": 20, plateau.CER_KEY: 0.99},
        {"split": "epoch", "step": 40, plateau.CER_KEY: 0.79},
        {"split": "epoch", "step": 50, plateau.CER_KEY: 0.5},
    ]
    return out


def test_exit_is_the_first_evaluation_and_window_under_the_bars_in_steps_and_training_seconds():
    out = plateau.plateau_exit(rows(), loss_threshold=2.0, cer_threshold=0.8)
    assert out["dev_exit_step"] == 40 and out["loss_exit_step"] == 40
    # 20 steps at 2 s, then 20 steps at 4 s: evaluations do not count
    assert out["dev_exit_train_s"] == pytest.approx(20 * 2 + 20 * 4)
    assert out["s_per_step"] == pytest.approx((2 + 2 + 4 + 4 + 4) / 5)
    assert out["dev_cer_by_step"] == [(20, 0.99), (40, 0.79), (50, 0.5)]
    never = plateau.plateau_exit(rows(), loss_threshold=1.0, cer_threshold=0.3)
    assert never["dev_exit_step"] is None and never["loss_exit_step"] is None
    assert "not reached" in plateau.table(
        [{**never, "recipe": "x", "steps": 50, "loss_threshold": 1.0, "audio_s_per_s": 10.0}]
    )


def test_loss_bar_is_the_unigram_entropy_of_the_training_tokens(tmp_path):
    # "aaaa bbbb" is 9 characters: a and b with p = 4/9, the space with 1/9
    audio = sorted((SAMPLE / "audio").glob("*.flac"))[:2]
    lines = [{"audio_filepath": str(a), "text": "aaaa bbbb", "duration": 2.0} for a in audio]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    expected = -(2 * 4 / 9 * math.log(4 / 9) + 1 / 9 * math.log(1 / 9))
    assert plateau.unigram_entropy(ONE_BATCH, manifest) == pytest.approx(expected)


def test_presets_resolve_to_their_mini_librispeech_recipe_and_unknown_names_fail_early():
    assert plateau.recipe_for("conformer_s").name == "conformer_s_mini_librispeech.json"
    assert plateau.recipe_for("quartznet_15x5").name == "quartznet_15x5_mini_librispeech.json"
    for preset in ("fastconformer_s", "fastconformer_m", "fastconformer_l"):
        assert plateau.recipe_for(preset).name == f"{preset}_mini_librispeech.json"
    with pytest.raises(SystemExit, match="no mini LibriSpeech recipe"):
        plateau.recipe_for("ebranchformer_golos")
    with pytest.raises(SystemExit, match="no recipe 'nonesuch'"):
        plateau.recipe_for("nonesuch")


def test_plateau_hands_learning_every_option_a_run_needs(tmp_path, monkeypatch):
    # plateau.py runs each preset through learning.run_recipe with its own option set: that set must hold
    # every option run_recipe reads, up to the training command (the training itself is the slow test below)
    from benchmarks import learning

    class Started(Exception):
        pass

    def capture(cmd, budget_s, log_path):
        raise Started(cmd)

    monkeypatch.setattr(learning, "train_for_budget", capture)
    manifest = SAMPLE / "manifest.jsonl"
    with pytest.raises(Started) as started:
        plateau.main(
            ["--presets", str(ONE_BATCH), "--train", str(manifest), "--dev", str(manifest), "--device", "cpu"]
            + ["--steps", "8", "--eval-every", "4", "--out-dir", str(tmp_path)]
        )
    cmd = started.value.args[0]
    assert "trainer.epochs=2" in cmd and "trainer.len_epoch=4" in cmd
    assert not any(a.startswith("trainer.time_budget_s=") for a in cmd)


@pytest.mark.slow
def test_plateau_trains_each_preset_and_reads_its_exit_from_the_run(tmp_path, capsys):
    manifest = SAMPLE / "manifest.jsonl"
    common = ["--train", str(manifest), "--dev", str(manifest), "--device", "cpu", "--log-step", "2"]
    done = plateau.main(
        ["--presets", str(ONE_BATCH), *common, "--steps", "8", "--eval-every", "4", "--cer", "1.5"]
        + ["--loss-ratio", "100", "--out-dir", str(tmp_path), "--output", str(tmp_path / "out.json")]
    )[0]
    assert done["steps"] == 8 and [s for s, _ in done["dev_cer_by_step"]] == [4, 8]
    assert done["dev_exit_step"] == 4 and done["loss_exit_step"] == 2  # bars no run can miss: the first reading
    assert 0 < done["dev_exit_train_s"] and done["unigram_entropy"] > 0
    assert json.loads((tmp_path / "out.json").read_text())[0]["recipe"] == str(ONE_BATCH)
    assert "| preset | steps |" in capsys.readouterr().out
