import json
import logging
import urllib.error
import urllib.request

import pytest
import torch

from hw_asr.builder import build_dataset
from hw_asr.collate_fn import collate_fn
from hw_asr.datasets import CustomDirAudioDataset, GolosDataset, LibrispeechDataset, LJSpeechDataset, ManifestDataset
from hw_asr.datasets.base_dataset import BaseDataset
from hw_asr.text_encoder import CTCCharTextEncoder
from tests.conftest import SHARED_DATA, write_audio

EN = CTCCharTextEncoder()


def check_item(item):
    assert item["audio"].dtype == torch.float32 and item["audio"].ndim == 1
    assert item["text_encoded"].dtype == torch.int64
    assert EN.decode(item["text_encoded"].tolist()) == item["text"]
    assert isinstance(item["duration"], float) and isinstance(item["audio_path"], str)


def make_librispeech(root, part="dev-clean", speakers=2, chapters=1, utts=2):
    for s in range(speakers):
        for c in range(chapters):
            d = root / "LibriSpeech" / part / str(100 + s) / str(200 + c)
            lines = []
            for u in range(utts):
                uid = f"{100 + s}-{200 + c}-{u:04d}"
                write_audio(d / f"{uid}.flac", seconds=0.2 + 0.1 * u, freq=200 + 50 * u)
                lines.append(f"{uid} HELLO THERE NUMBER {u}" if u == 99 else f"{uid} HELLO THERE SPEAKER")
            (d / f"{100 + s}-{200 + c}.trans.txt").write_text("\n".join(lines) + "\n")


def test_manifest_dataset_items(manifest_dir):
    ds = ManifestDataset(manifest_dir / "manifest.jsonl", text_encoder=EN)
    assert len(ds) == 3
    assert [r["text"] for r in ds.index] == ["hello world", "good morning", "it's fine"]
    for i in range(3):
        check_item(ds[i])


def test_manifest_bad_rows_are_skipped_counted_and_named(manifest_dir, caplog):
    write_audio(manifest_dir / "wavs" / "ok.wav")
    (manifest_dir / "wavs" / "corrupt.wav").write_bytes(b"RIFF0000WAVEjunk")
    lines = [
        b'{"audio_filepath": "wavs/ok.wav", "text": "fine text"}',
        b"this is not json",
        b'{"audio_filepath": "wavs/missing.wav", "text": "x"}',
        b'{"audio_filepath": "wavs/ok.wav", "text": ""}',
        b'{"audio_filepath": "wavs/ok.wav", "text": "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82"}',
        b'{"audio_filepath": "wavs/ok.wav", "text": "caf\xff"}',
        b'{"audio_filepath": "wavs/corrupt.wav", "text": "hello"}',
        b'{"text": "no path"}',
        b'{"audio_filepath": "wavs/ok.wav", "text": "room 101"}',
    ]
    path = manifest_dir / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.WARNING):
        ds = ManifestDataset(path, text_encoder=EN)
    assert len(ds) == 1 and ds.index[0]["text"] == "fine text"
    reasons = dict(ds.skipped)
    assert len(ds.skipped) == 8
    assert "not a JSON object" in reasons[f"{path}:2"]
    assert reasons[f"{path}:3 ({manifest_dir / 'wavs' / 'missing.wav'})"] == "audio file not found"
    ok = manifest_dir / "wavs" / "ok.wav"
    assert reasons[f"{path}:4 ({ok})"] == "empty transcript"
    assert "'веипрт' are not in" in reasons[f"{path}:5 ({ok})"], "Cyrillic is outside the English alphabet"
    assert "'01' are not in" in reasons[f"{path}:9 ({ok})"], "digits are outside the alphabet"
    assert "not valid UTF-8" in reasons[f"{path}:6"]
    assert "needs the keys" in reasons[f"{path}:8"]
    assert any("corrupt.wav" in k for k in reasons)
    text = caplog.text
    assert f"{path}:2" in text and "skipped 8 row(s)" in text


def test_filters_and_limit(manifest_dir):
    ds = ManifestDataset(manifest_dir / "manifest.jsonl", text_encoder=EN, max_audio_length=0.45)
    assert len(ds) == 2
    ds = ManifestDataset(manifest_dir / "manifest.jsonl", text_encoder=EN, max_text_length=10)
    assert sorted(r["text"] for r in ds.index) == ["it's fine"]
    a = ManifestDataset(manifest_dir / "manifest.jsonl", text_encoder=EN, limit=2)
    b = ManifestDataset(manifest_dir / "manifest.jsonl", text_encoder=EN, limit=2)
    assert len(a) == 2 and a.index == b.index


def test_index_is_cached_and_invalidated(manifest_dir, monkeypatch):
    calls = []
    original = ManifestDataset._build_index

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(ManifestDataset, "_build_index", counting)
    ManifestDataset(manifest_dir / "manifest.jsonl", text_encoder=EN)
    ManifestDataset(manifest_dir / "manifest.jsonl", text_encoder=EN)
    assert len(calls) == 1, "second start reads the cached index"
    write_audio(manifest_dir / "wavs" / "u3.wav")
    with open(manifest_dir / "manifest.jsonl", "a") as f:
        f.write(json.dumps({"audio_filepath": "wavs/u3.wav", "text": "again"}) + "\n")
    ds = ManifestDataset(manifest_dir / "manifest.jsonl", text_encoder=EN)
    assert len(calls) == 2 and len(ds) == 4


def test_librispeech_layout(tmp_path):
    make_librispeech(tmp_path, "dev-clean")
    ds = LibrispeechDataset("dev-clean", data_dir=tmp_path, text_encoder=EN)
    assert len(ds) == 4
    assert ds.index[0]["text"] == "hello there speaker"
    check_item(ds[0])
    ds2 = LibrispeechDataset("dev_clean", data_dir=tmp_path / "LibriSpeech", text_encoder=EN)
    assert len(ds2) == 4


def test_librispeech_train_all_concatenates_parts(tmp_path):
    for part in ("train-clean-100", "train-clean-360", "train-other-500"):
        make_librispeech(tmp_path, part, speakers=1, utts=1)
    assert len(LibrispeechDataset("train_all", data_dir=tmp_path, text_encoder=EN)) == 3


def test_librispeech_offline_download_says_where_to_put_files(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(Exception) as err:
        LibrispeechDataset("dev-clean", data_dir=tmp_path, text_encoder=EN)
    msg = str(err.value)
    assert "openslr.org/resources/12/dev-clean.tar.gz" in msg
    assert str(tmp_path / "LibriSpeech" / "dev-clean") in msg
    assert not list(tmp_path.glob("*.part")), "no partial download is left behind"
    with pytest.raises(FileNotFoundError, match="by hand"):
        LibrispeechDataset("dev-clean", data_dir=tmp_path, download=False, text_encoder=EN)


def test_ljspeech_layout_and_deterministic_split(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    lines = []
    for i in range(40):
        write_audio(root / "wavs" / f"LJ001-{i:04d}.wav", seconds=0.1, sr=22050)
        lines.append(f"LJ001-{i:04d}|Raw text {i}.|Normalized text number {i}.")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    train = LJSpeechDataset("train", data_dir=tmp_path, text_encoder=EN, test_percent=20)
    test = LJSpeechDataset("test", data_dir=tmp_path, text_encoder=EN, test_percent=20)
    full = LJSpeechDataset("all", data_dir=tmp_path, text_encoder=EN, test_percent=20)
    assert len(full) == 0  # "number 12" has digits: outside the alphabet, every row is skipped
    assert len(full.skipped) == 40
    # rewrite without digits
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    lines = [f"LJ001-{i:04d}|Raw.|Text {words[i % 10]}." for i in range(40)]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    train = LJSpeechDataset("train", data_dir=tmp_path, text_encoder=EN, test_percent=20)
    test = LJSpeechDataset("test", data_dir=tmp_path, text_encoder=EN, test_percent=20)
    assert len(train) + len(test) == 40 and len(test) > 0
    assert not {r["path"] for r in train.index} & {r["path"] for r in test.index}
    again = LJSpeechDataset("test", data_dir=tmp_path, text_encoder=EN, test_percent=20)
    assert again.index == test.index
    check_item(train[0])
    assert train[0]["audio"].shape[0] == 1600  # resampled from 22.05 kHz


def test_golos_layout(tmp_path):
    ru = CTCCharTextEncoder("ru")
    for subset, text in (("crowd", "привет мир"), ("farfield", "ёлка зелёная")):
        write_audio(tmp_path / subset / "files" / "a.wav", seconds=0.2)
        (tmp_path / subset / "manifest.jsonl").write_text(
            json.dumps({"audio_filepath": "files/a.wav", "text": text, "duration": 0.2}, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    ds = GolosDataset(tmp_path, text_encoder=ru)
    assert sorted(r["text"] for r in ds.index) == ["елка зеленая", "привет мир"]
    assert ru.decode(ds[0]["text_encoded"].tolist()) == ds[0]["text"]
    with pytest.raises(FileNotFoundError, match="crowd/manifest.jsonl"):
        GolosDataset(tmp_path / "nothing", text_encoder=ru)


def test_custom_dir_dataset_with_and_without_transcripts(tmp_path):
    write_audio(tmp_path / "a.wav")
    write_audio(tmp_path / "b.flac")
    (tmp_path / "a.txt").write_text("Hello there\n")
    ds = CustomDirAudioDataset(tmp_path, text_encoder=EN)
    assert [r["text"] for r in ds.index] == ["hello there", ""]
    assert ds[1]["text_encoded"].numel() == 0


def test_training_replaces_a_file_that_breaks_after_indexing(manifest_dir, caplog):
    ds = ManifestDataset(manifest_dir / "manifest.jsonl", text_encoder=EN)
    ds.replace_failed_files = True  # as builder.build_dataset sets it for the train split
    (manifest_dir / "wavs" / "u0.wav").write_bytes(b"RIFF garbage")
    with caplog.at_level(logging.WARNING):
        item = ds[0]
    assert item["audio_path"].endswith("u1.wav")
    assert item["load_failures"] == [str(manifest_dir / "wavs" / "u0.wav")]
    assert "u0.wav" in caplog.text


def test_evaluation_leaves_out_a_file_that_breaks_after_indexing(manifest_dir):
    ds = ManifestDataset(manifest_dir / "manifest.jsonl", text_encoder=EN)
    assert not ds.replace_failed_files  # the default: nothing is ever scored in another file's place
    (manifest_dir / "wavs" / "u0.wav").write_bytes(b"RIFF garbage")
    assert ds[0] == {"load_error": (str(manifest_dir / "wavs" / "u0.wav"), ds[0]["load_error"][1])}
    assert "cannot decode" in ds[0]["load_error"][1]
    batch = collate_fn([ds[0], ds[1], ds[2]])
    assert [p.rsplit("/", 1)[1] for p in batch["audio_path"]] == ["u1.wav", "u2.wav"]
    assert batch["audio"].shape[0] == 2 and batch["skipped"] == [ds[0]["load_error"]]
    only_bad = collate_fn([ds[0]])
    assert only_bad["text"] == [] and only_bad["audio"].shape[0] == 0 and len(only_bad["skipped"]) == 1


def test_build_dataset_replaces_in_training_only(manifest_dir):
    config = {
        "data": {
            s: {
                "batch_size": 2,
                "datasets": [
                    {"type": "ManifestDataset", "args": {"manifest_path": str(manifest_dir / "manifest.jsonl")}}
                ],
            }
            for s in ("train", "val")
        }
    }
    assert build_dataset(config, "train", EN).replace_failed_files
    assert not build_dataset(config, "val", EN).replace_failed_files
    assert not build_dataset(config, "train", EN, train=False).replace_failed_files  # test.py's --splits train


@pytest.mark.skipif(not (SHARED_DATA / "mini-librispeech").is_dir(), reason="../shared/data is absent")
def test_shared_mini_librispeech_counts():
    root = SHARED_DATA / "mini-librispeech"
    train = LibrispeechDataset("train-clean-5", data_dir=root, text_encoder=EN, download=False)
    dev = LibrispeechDataset("dev-clean-5", data_dir=root, text_encoder=EN, download=False)
    assert (len(train), len(dev)) == (570, 119)
    check_item(dev[0])


@pytest.mark.skipif(not (SHARED_DATA / "ljspeech-mini").is_dir(), reason="../shared/data is absent")
def test_shared_ljspeech_and_golos():
    lj = [
        LJSpeechDataset(p, data_dir=SHARED_DATA / "ljspeech-mini", text_encoder=EN, download=False)
        for p in ("train", "test")
    ]
    assert sum(len(d) for d in lj) + sum(len(d.skipped) for d in lj) == 32
    assert len(lj[0]) > 0 and len(lj[1]) > 0
    golos = GolosDataset(SHARED_DATA / "golos-mini", text_encoder=CTCCharTextEncoder("ru"))
    assert len(golos) == 1 and golos.index[0]["text"].startswith("шестьдесят")
    assert golos[0]["audio"].shape[0] == 64000


def test_base_dataset_needs_build_index():
    with pytest.raises(NotImplementedError):
        BaseDataset()
