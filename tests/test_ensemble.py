"""Confidence ensemble: selector arrays equal sklearn, routing, build -> safe file -> load,
inputs of every kind, test.py on an ensemble, migration of old files."""

import json
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from hw_asr import evaluation
from hw_asr.builder import build_model
from hw_asr.checkpoint import CheckpointError, load_checkpoint, safe_torch_load, save_checkpoint
from hw_asr.ensemble import ConfidenceEnsemble, Member, Selector, fit_selector
from hw_asr.ensemble import build as build_cmd
from hw_asr.ensemble import migrate as migrate_cmd
from hw_asr.ensemble.confidence import confidence_features
from hw_asr.text_encoder import CTCCharTextEncoder
from tests.conftest import SAMPLE_MANIFEST, write_audio


@pytest.mark.parametrize("n_classes,mode", [(2, "multinomial"), (3, "multinomial"), (3, "ovr"), (2, "ovr")])
def test_selector_arrays_reproduce_sklearn(n_classes, mode):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    y = rng.integers(0, n_classes, 200)
    x = rng.normal(size=(200, n_classes)) + np.eye(n_classes)[y] * 1.5
    selector = fit_selector(x, y, C=0.5, class_weight="balanced", mode=mode)
    clf = LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000, random_state=0)
    reference = make_pipeline(StandardScaler(), OneVsRestClassifier(clf) if mode == "ovr" else clf).fit(x, y)
    np.testing.assert_allclose(selector.predict_proba(x), reference.predict_proba(x), atol=1e-9)
    assert (selector.predict(x) == reference.predict(x)).all()
    again = Selector.from_state(selector.state())
    np.testing.assert_array_equal(again.predict_proba(x), selector.predict_proba(x))


def fake_log_probs(confident, n_frames=12, vocab=6, seed=0):
    """A peaky (confident) or flat CTC output."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_frames, vocab, generator=g) * (0.3 if not confident else 1.0)
    if confident:
        logits[torch.arange(n_frames), torch.randint(1, vocab, (n_frames,), generator=g)] += 8.0
    return logits.log_softmax(-1)


def test_routing_follows_the_confident_member():
    # utterances of domain k: member k is confident, the other member is not
    def domain(k, n, seed):
        return [[fake_log_probs(m == k, seed=seed + i * 7 + m) for i in range(n)] for m in range(2)]

    train = [a + b for a, b in zip(domain(0, 40, 0), domain(1, 40, 1000))]
    y = np.array([0] * 40 + [1] * 40)
    settings = {"exclude_blank": True, "aggregation": "mean", "method_cfg": {}}
    selector = fit_selector(confidence_features(train, settings).numpy(), y)
    test = [a + b for a, b in zip(domain(0, 30, 5000), domain(1, 30, 9000))]
    predicted = selector.predict(confidence_features(test, settings).numpy())
    assert (predicted == np.array([0] * 30 + [1] * 30)).mean() >= 0.95


# ---- end to end with two tiny (untrained) members ----------------------------------------
def tiny_checkpoint(path, alphabet, seed):
    torch.manual_seed(seed)
    config = {
        "sample_rate": 16000,
        "text_encoder": {"type": "CTCCharTextEncoder", "args": {"alphabet": alphabet}},
        "arch": {"type": "BaselineModel", "args": {"hidden": 16, "frontend": {"n_mels": 32}}},
    }
    encoder = CTCCharTextEncoder(alphabet)
    model = build_model(config, n_tokens=len(encoder))
    save_checkpoint({"model": model.state_dict(), "config": config, "text_encoder": encoder.state()}, path)
    return path


@pytest.fixture(scope="module")
def ensemble_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    rows = []
    for i in range(6):  # a "Russian" member's data: tones
        write_audio(root / "ru" / f"t{i}.wav", seconds=0.6 + 0.1 * i, freq=200 + 150 * i, seed=i)
        (root / "ru" / f"t{i}.txt").write_text("привет мир\n", encoding="utf-8")
        rows.append({"audio_filepath": f"ru/t{i}.wav", "text": "привет мир", "duration": 0.6 + 0.1 * i})
    (root / "ru.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = {
        "ensemble": [
            {
                "model": str(tiny_checkpoint(root / "en.pth", "en", 0)),
                "name": "en",
                "training_manifest": str(SAMPLE_MANIFEST),
                "dev_manifest": str(SAMPLE_MANIFEST),
            },
            {
                "model": str(tiny_checkpoint(root / "ru.pth", "ru", 1)),
                "name": "ru",
                "training_manifest": str(root / "ru.jsonl"),
                "dev_manifest": str(root / "ru.jsonl"),
            },
        ],
        "output_path": str(root / "ensemble.pth"),
        "max_training_samples": 8,
        "selector_grid": {"C": [0.1, 1.0], "class_weight": ["balanced"], "mode": ["multinomial", "ovr"]},
        "confidence": {"aggregation": "mean", "measure_cfg": {"name": "entropy", "entropy_type": "renyi"}},
    }
    (root / "ensemble.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    with pytest.warns(DeprecationWarning, match="measure_cfg"):
        build_cmd.main(["-c", str(root / "ensemble.json")])
    return root


def test_build_writes_a_safe_file_that_loads(ensemble_setup):
    root = ensemble_setup
    state = safe_torch_load(root / "ensemble.pth")  # weights_only: plain data and tensors
    assert state["format"] == "hw_asr.confidence_ensemble" and len(state["members"]) == 2
    assert state["confidence"]["method_cfg"]["entropy_type"] == "renyi"  # stored migrated
    info = state["info"]
    assert info["train_counts"] == [8, 6] and len(info["selector_search"]) == 4
    assert 0.0 <= info["dev_accuracy"] <= 1.0
    with pytest.raises(CheckpointError, match="confidence-ensemble"):
        load_checkpoint(root / "ensemble.pth")


def test_a_crafted_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"format": "hw_asr.confidence_ensemble", "x": Evil()}, protocol=2))  # as torch.save
    with pytest.raises(CheckpointError, match="refused"):
        ConfidenceEnsemble.load(bad)


def test_transcribe_paths_folder_manifest_and_waveforms(ensemble_setup):
    root = ensemble_setup
    ens = ConfidenceEnsemble.load(root / "ensemble.pth")
    assert [m.name for m in ens.members] == ["en", "ru"]
    wav = root / "ru" / "t0.wav"
    audio, sr = sf.read(wav, dtype="float32")
    by_path = ens.transcribe([str(wav)], return_all=True)[0]
    assert set(by_path) >= {"text", "model", "model_index", "confidences", "probabilities", "member_texts", "audio"}
    assert len(by_path["confidences"]) == 2 and abs(sum(by_path["probabilities"]) - 1) < 1e-9
    assert by_path["text"] == by_path["member_texts"][by_path["model"]]
    # in-memory: numpy, tensor, and (array, rate) at another rate
    from_memory = ens.transcribe([audio, torch.from_numpy(audio)])
    for r in from_memory:
        assert r["confidences"] == pytest.approx(by_path["confidences"], abs=1e-6)
        assert r["text"] == by_path["text"] and r["audio"].startswith("<waveform")
    import soxr

    at_8k = ens.transcribe([(soxr.resample(audio, sr, 8000), 8000)])[0]
    assert at_8k["model"] in ("en", "ru")
    assert len(ens.transcribe(str(root / "ru"))) == 6
    assert len(ens.transcribe(str(root / "ru.jsonl"))) == 6
    with pytest.raises(FileNotFoundError):
        ens.transcribe([str(root / "missing.wav")])
    with pytest.raises(KeyError, match="no decoder"):
        ens.transcribe([audio], decoder="beam_lm")


def test_each_member_keeps_its_own_decoders(ensemble_setup, tmp_path):
    root = ensemble_setup
    ens = ConfidenceEnsemble.load(root / "ensemble.pth")
    for m in ens.members:  # a beam decoder per member, each with its own alphabet
        m.decoders_cfg = {"beam": {"type": "PrefixBeamSearchDecoder", "args": {"beam_size": 4}}}
    ens.selector.params["note"] = "re-saved"
    ens.save(tmp_path / "with_beam.pth")
    again = ConfidenceEnsemble.load(tmp_path / "with_beam.pth")
    out = again.transcribe(str(root / "ru.jsonl"), decoder=["argmax", "beam"], return_all=True)
    for r in out:
        assert set(r["text"]) == {"argmax", "beam"}
        ru_text = r["member_texts"]["ru"]["beam"]
        assert not set(ru_text) - set(" абвгдежзийклмнопрстуфхцчшщъыьэюя")


def test_test_py_accepts_an_ensemble_file(ensemble_setup, tmp_path):
    root = ensemble_setup
    out = tmp_path / "result.json"
    result = evaluation.main(["-r", str(root / "ensemble.pth"), "-o", str(out), "-t", str(root / "ru")])
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["ensemble"]["members"] == ["en", "ru"] and len(saved["utterances"]) == 6
    row = saved["utterances"][0]
    assert row["model"] in ("en", "ru") and len(row["confidences"]) == 2 and "pred_argmax" in row
    assert sum(saved["ensemble"]["routed"].values()) == 6
    assert row["ground_truth"] == "привет мир"
    assert 0 <= result["decoders"]["argmax"]["WER"] < 100 and row["wer_argmax"] >= 0


def test_migrate_rewrites_old_config_and_file(ensemble_setup, tmp_path):
    old_cfg = tmp_path / "old.json"
    old_cfg.write_text(json.dumps({"ensemble": [], "confidence": {"measure_cfg": {"name": "max_prob"}}}))
    assert migrate_cmd.main([str(old_cfg)]) == 0
    assert json.loads(old_cfg.read_text())["confidence"] == {"method_cfg": {"name": "max_prob"}}
    assert "measure_cfg" in (tmp_path / "old.json.bak").read_text()
    assert migrate_cmd.migrate(old_cfg) is False  # already current
    # an ensemble file written by an older version
    state = safe_torch_load(ensemble_setup / "ensemble.pth")
    state["confidence"]["measure_cfg"] = state["confidence"].pop("method_cfg")
    old_file = tmp_path / "old_ensemble.pth"
    save_checkpoint(state, old_file)
    ConfidenceEnsemble.load(old_file)  # still loads (with a warning)
    assert migrate_cmd.migrate(old_file) is True
    assert "method_cfg" in safe_torch_load(old_file)["confidence"]
    assert migrate_cmd.main([str(tmp_path / "nope.json")]) == 1


def test_build_config_errors_are_clear(tmp_path):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"ensemble": [{"model": "a.pth"}], "output_path": "x.pth"}))
    with pytest.raises(SystemExit, match="at least two members"):
        build_cmd.main(["-c", str(cfg)])
    cfg.write_text(
        json.dumps(
            {"ensemble": [{"model": "a.pth", "training_manifest": "t"}, {"model": "b.pth"}], "output_path": "x.pth"}
        )
    )
    with pytest.raises(SystemExit, match="ensemble.1: needs 'training_manifest'"):
        build_cmd.main(["-c", str(cfg)])
    members = [{"model": "a.pth", "training_manifest": "t"}, {"model": "b.pth", "training_manifest": "u"}]
    cfg.write_text(json.dumps({"ensemble": members, "output_path": "x.pth", "temprature": 2.0}))
    with pytest.raises(SystemExit, match="config.temprature: unknown key, did you mean 'temperature'"):
        build_cmd.main(["-c", str(cfg)])
    cfg.write_text(json.dumps({"ensemble": [members[0], {**members[1], "dev_manfest": "d"}], "output_path": "x.pth"}))
    with pytest.raises(SystemExit, match="ensemble.1.dev_manfest: unknown key, did you mean 'dev_manifest'"):
        build_cmd.main(["-c", str(cfg)])


def test_member_from_checkpoint_names(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "run" / "model_best.pth", "en", 0)
    assert Member.from_checkpoint(ckpt).name == "run"


def test_in_memory_audio_rates_and_shapes():
    from hw_asr.ensemble.ensemble import load_waveform

    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    assert load_waveform(x, 16000).numel() == 16000
    assert abs(load_waveform(x, 8000, source_rate=16000).numel() - 8000) <= 1  # resampled for an 8 kHz member
    assert abs(load_waveform((x, 32000), 16000).numel() - 8000) <= 1  # (array, rate) says its rate
    assert load_waveform(np.stack([x, x]), 16000).shape == (16000,)  # [channels, T] -> mono
    with pytest.raises(ValueError, match="1-D waveform"):
        load_waveform(np.zeros((2, 3, 4), np.float32), 16000)


def test_confidence_search_picks_a_setting_that_separates_the_members():
    def domain(k, n, seed):
        return [[fake_log_probs(m == k, seed=seed + i * 7 + m) for i in range(n)] for m in range(2)]

    train = [a + b for a, b in zip(domain(0, 20, 0), domain(1, 20, 500))]
    dev = [a + b for a, b in zip(domain(0, 10, 900), domain(1, 10, 1300))]
    y_train, y_dev = np.array([0] * 20 + [1] * 20), np.array([0] * 10 + [1] * 10)
    grid = {
        "temperature": [1.0, 2.0],
        "exclude_blank": [True],
        "aggregation": ["mean", "min"],
        "method_cfg": [
            {"name": "max_prob", "alpha": 1.0},
            {"name": "entropy", "entropy_type": "tsallis", "alpha": 0.5, "entropy_norm": "exp"},
        ],
    }
    (settings, temperature, acc), table = build_cmd.search_confidence(train, y_train, dev, y_dev, grid)
    assert len(table) == 8 and acc == max(r["dev_accuracy"] for r in table) >= 0.95
    assert temperature in (1.0, 2.0) and settings["aggregation"] in ("mean", "min")


def test_test_py_with_an_ensemble_leaves_out_a_broken_file(ensemble_setup, tmp_path):
    import shutil

    import numpy as np
    import soundfile as sf

    folder = tmp_path / "audio"
    shutil.copytree(ensemble_setup / "ru", folder)
    x = np.full(8000, 0.1, np.float32)
    x[10] = np.nan  # the header reads; the samples do not
    sf.write(folder / "broken.wav", x, 16000, subtype="FLOAT")
    out = tmp_path / "result.json"
    result = evaluation.main(["-r", str(ensemble_setup / "ensemble.pth"), "-o", str(out), "-t", str(folder)])
    assert sorted(r["audio_path"].rsplit("/", 1)[1] for r in result["utterances"]) == [f"t{i}.wav" for i in range(6)]
    assert [(r["audio_path"].rsplit("/", 1)[1], "NaN" in r["reason"]) for r in result["skipped"]] == [
        ("broken.wav", True)
    ]
    assert result["counts"] == {"decoded": 6, "scored": 6, "skipped": 1}
