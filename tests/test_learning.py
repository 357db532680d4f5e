"""benchmarks/learning.py (train recipes for a budget, score them on a dev set) and the manifest exporter."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from benchmarks import learning
from hw_asr.audio import load_audio
from hw_asr.datasets import ManifestDataset
from hw_asr.manifests import read_manifest
from hw_asr.tools import export_manifest
from tests.conftest import REPO

SAMPLE = REPO / "hw_asr" / "data" / "sample" / "manifest.jsonl"
ONE_BATCH = REPO / "configs" / "one_batch_test.json"


def test_export_writes_opus_that_the_manifest_dataset_reads(tmp_path):
    out = tmp_path / "opus"
    manifest = export_manifest.main(["-c", str(ONE_BATCH), "--split", "train", "-o", str(out)])
    rows, skipped = read_manifest(manifest)
    original, _ = read_manifest(SAMPLE)
    assert not skipped and len(rows) == 8  # the config's limit of 8
    assert {r["text"] for r in rows} <= {r["text"].lower() for r in original}
    assert all(r["path"].endswith(".ogg") for r in rows)
    assert sf.info(rows[0]["path"]).subtype == "OPUS"
    by_text = {r["text"].lower(): r for r in original}
    for row in rows:
        src = by_text[row["text"]]
        assert abs(row["duration"] - src["duration"]) < 0.01
        a, b = load_audio(src["path"]), load_audio(row["path"])
        n = min(len(a), len(b))
        assert abs(len(a) - len(b)) <= 160
        # lossy but faithful: the re-encoded wave follows the original (Opus delays it slightly, so allow a shift)
        best = max(np.corrcoef(a[: n - 400], b[s : s + n - 400])[0, 1] for s in range(0, 400, 8))
        assert best > 0.9
    assert len(ManifestDataset(manifest)) == 8


def test_export_leaves_out_unreadable_files_and_counts_them(tmp_path):
    original, _ = read_manifest(SAMPLE)
    rows = [{"path": r["path"], "text": r["text"]} for r in original[:3]]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    rows.insert(1, {"path": str(broken), "text": "lost"})
    written, skipped = export_manifest.export(rows, tmp_path / "out", 16000, "flac")
    assert written == 3 and [p for p, _ in skipped] == [str(broken)]
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == [r["text"] for r in rows if r["text"] != "lost"]


def test_recipe_names_resolve_and_unknown_names_fail_early():
    assert learning.recipe_path("deepspeech2").name == "mini_librispeech_baseline.json"
    assert learning.recipe_path("conformer_s").name == "conformer_s_mini_librispeech.json"
    assert learning.recipe_path(str(ONE_BATCH)) == ONE_BATCH
    with pytest.raises(SystemExit, match="no recipe 'nonesuch'"):
        learning.recipe_path("nonesuch")
    with pytest.raises(SystemExit, match="neither a manifest file nor a LibriSpeech part"):
        learning.dataset_block(REPO / "configs")


def test_audio_seen_adds_the_steps_after_the_last_logged_window():
    rows = [
        {"split": "train", "step": 10, "loss": 3.0, "audio_s_per_s": 20.0, "batches_per_s": 0.5},  # 20 s -> 400 s
        {"split": "train", "step": 20, "loss": 2.0, "audio_s_per_s": 40.0, "batches_per_s": 1.0},  # 10 s -> 400 s
        {"split": "epoch", "step": 20, "val_CER (argmax)": 0.5},
    ]
    out = learning.summarise(rows, 25)
    assert out["train_loss"] == 2.0
    assert out["audio_h"] == pytest.approx((800 + 800 / 20 * 5) / 3600)
    assert out["dev_cer_by_step"] == [(20, 0.5)]


def test_follow_budget_hands_the_run_the_budget_less_the_reserve(tmp_path, monkeypatch, capsys):
    class Started(Exception):
        pass

    def capture(cmd, budget_s, log_path):
        raise Started(cmd)

    monkeypatch.setattr(learning, "train_for_budget", capture)
    common = ["--recipes", str(ONE_BATCH), "--train", str(SAMPLE), "--dev", str(SAMPLE), "--device", "cpu"]
    common += ["--out-dir", str(tmp_path), "--budget-s", "600"]
    with pytest.raises(Started) as plain:
        learning.main(common)
    assert not any(a.startswith("trainer.time_budget_s=") for a in plain.value.args[0])
    with pytest.raises(Started) as follow:
        learning.main([*common, "--follow-budget", "--reserve-s", "90"])
    assert "trainer.time_budget_s=510.0" in follow.value.args[0]
    with pytest.raises(SystemExit):
        learning.main([*common, "--follow-budget", "--reserve-s", "600"])
    assert "--reserve-s must be at least 0 and below --budget-s (600), got 600" in capsys.readouterr().err


@pytest.mark.slow
def test_learning_trains_scores_and_stops_at_the_budget(tmp_path, capsys):
    shutil.copy(ONE_BATCH, tmp_path / "recipe.json")
    common = ["--train", str(SAMPLE), "--dev", str(SAMPLE), "--device", "cpu", "--epoch-steps", "4", "--log-step", "2"]
    done = learning.main(
        ["--recipes", str(tmp_path / "recipe.json"), *common, "--budget-s", "600", "--steps", "8"]
        + ["--out-dir", str(tmp_path / "full"), "--output", str(tmp_path / "full.json")]
    )[0]
    assert done["steps"] == 8 and done["planned_steps"] == 8 and not done["stopped_by_budget"]
    assert 0 <= done["dev_cer"] <= 1.5 and done["train_loss"] > 0
    assert [s for s, _ in done["dev_cer_by_step"]] == [4, 8]
    assert done["audio_h"] > 0
    assert json.loads((tmp_path / "full.json").read_text())[0]["steps"] == 8
    assert "| recipe | steps (planned)" in capsys.readouterr().out

    cut = learning.main(
        ["--recipes", str(tmp_path / "recipe.json"), *common, "--budget-s", "25", "--steps", "100000"]
        + ["--out-dir", str(tmp_path / "cut")]
    )[0]
    assert cut["stopped_by_budget"] and 0 < cut["steps"] < 100000
    assert (tmp_path / "cut" / "recipe" / "checkpoint-interrupted.pth").is_file()
    assert 0 <= cut["dev_cer"] <= 1.5

    own = learning.main(
        ["--recipes", str(tmp_path / "recipe.json"), *common, "--budget-s", "40", "--steps", "100000"]
        + ["--follow-budget", "--reserve-s", "20", "--out-dir", str(tmp_path / "own")]
    )[0]
    # the run's own 20 s budget ends it before the SIGINT at 40 s: an evaluated epoch checkpoint, no interruption
    assert own["stopped_by_budget"] and 0 < own["steps"] < 100000
    assert not (tmp_path / "own" / "recipe" / "checkpoint-interrupted.pth").exists()
    log = (tmp_path / "own" / "recipe.train.log").read_text()
    assert "the time budget of 20 s is spent" in log  # in an epoch, or as one ended
    assert own["dev_cer_by_step"][-1][0] == own["steps"]  # the cut epoch was evaluated at its last step
