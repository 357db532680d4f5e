import json
import subprocess
from pathlib import Path

import pytest

from hw_asr.tools import build_lm, tune_lm
from tests.test_decoders import ARPA
from tests.test_training import TINY, run_train


def test_tune_lm_grid_searches_and_writes_the_best_pair(tmp_path):
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1")
    arpa = tmp_path / "tiny.arpa"
    arpa.write_text(ARPA)
    out = tmp_path / "tuned.json"
    alpha, beta = tune_lm.main(
        [
            "-r",
            str(run_dir / "checkpoint-epoch1.pth"),
            "--decoder",
            "beam_lm",
            "--alpha",
            "0",
            "0.5",
            "--beta",
            "0",
            "1",
            "-o",
            str(out),
            "--slice",
            "1:",
            "decoders="
            + json.dumps({"beam_lm": {"type": "PrefixBeamSearchDecoder", "args": {"beam_size": 4, "lm": str(arpa)}}}),
        ]
    )
    tuned = json.loads(out.read_text())
    assert tuned["decoders"]["beam_lm"]["args"]["alpha"] == alpha in (0.0, 0.5)
    assert tuned["decoders"]["beam_lm"]["args"]["beta"] == beta in (0.0, 1.0)
    assert tuned["data"]["val"], "the written config is complete"
    # the README's next command: test.py -c tuned_config.json scores the validation split with the tuned decoder
    from hw_asr import evaluation

    result = evaluation.main(
        ["-r", str(run_dir / "checkpoint-epoch1.pth"), "-c", str(out), "-o", str(tmp_path / "result.json")]
    )
    assert list(result["splits"]) == ["val"] and set(result["decoders"]) == {"argmax", "beam_lm"}
    assert result["counts"]["decoded"] == 8


def test_parse_slice():
    assert tune_lm.parse_slice("0:46") == slice(0, 46)
    assert tune_lm.parse_slice("46:") == slice(46, None)
    assert tune_lm.parse_slice(None) == slice(None)
    with pytest.raises(ValueError, match="START:STOP"):
        tune_lm.parse_slice("first")


def test_lm_corpus_never_takes_evaluation_transcripts(tmp_path):
    from hw_asr.tools import make_lm_corpus

    with pytest.raises(SystemExit, match="only the train split"):
        list(make_lm_corpus.transcript_lines("configs/one_batch_test.json", split="val"))


@pytest.mark.slow
def test_build_lm_makes_arpa_binary_and_unigrams(tmp_path):
    """Builds KenLM's lmplz once if needed (apt + compile, a few minutes on a fresh machine)."""
    text = tmp_path / "corpus.txt"
    text.write_text("The cat sat on the mat.\nThe dog sat on the log!\nA cat and a dog.\n" * 3)
    arpa, binary, unigrams = build_lm.build_lm([text], tmp_path / "lm" / "tiny", order=3)
    assert arpa.read_text().startswith("\n\\data\\") or "\\data\\" in arpa.read_text()[:50]
    assert "ngram 3=" in arpa.read_text()
    assert set(unigrams.read_text().split()) == {"the", "cat", "sat", "on", "mat", "dog", "log", "a", "and"}
    import kenlm

    model = kenlm.Model(str(binary))
    assert model.score("the cat sat on the mat") > model.score("mat the on sat cat the")
    assert not list(tmp_path.glob("lm/*.part"))


def test_download_artifacts_verifies_sha256_and_keeps_no_partial_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "3-gram.pruned.1e-7.arpa.gz").write_bytes(b"three")
    (src / "4-gram.arpa.gz").write_bytes(b"four")
    (src / "librispeech-vocab.txt").write_bytes(b"vocab")
    import hashlib

    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(src.iterdir()))
    env = {
        "HW_ASR_ARTIFACTS_BASE": f"file://{src}",
        "HW_ASR_ARTIFACTS_SHA256": sums,
        "PATH": "/usr/bin:/bin",
        "HW_ASR_ARTIFACTS_PREPARE": "0",
    }
    dest = tmp_path / "lm"
    ok = subprocess.run(["bash", "download_artifacts.sh", str(dest)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (dest / "4-gram.arpa.gz").read_bytes() == b"four"
    (src / "4-gram.arpa.gz").write_bytes(b"tampered")
    (dest / "4-gram.arpa.gz").unlink()
    bad = subprocess.run(["bash", "download_artifacts.sh", str(dest)], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "sha256 mismatch" in bad.stderr
    assert not (dest / "4-gram.arpa.gz").exists() and not list(dest.glob("*.part"))
    offline = subprocess.run(
        ["bash", "download_artifacts.sh", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env={**env, "HW_ASR_ARTIFACTS_BASE": "file:///nonexistent"},
    )
    assert offline.returncode != 0 and "by hand" in offline.stderr
    # a file put in place by hand is checked against its listed sum too
    (src / "4-gram.arpa.gz").write_bytes(b"four")
    (dest / "4-gram.arpa.gz").write_bytes(b"not four")
    by_hand = subprocess.run(["bash", "download_artifacts.sh", str(dest)], env=env, capture_output=True, text=True)
    assert by_hand.returncode != 0 and "does not match" in by_hand.stderr


def test_download_artifacts_fetches_a_checkpoint_only_with_its_sha256(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("3-gram.pruned.1e-7.arpa.gz", "4-gram.arpa.gz", "librispeech-vocab.txt", "model.pth"):
        (src / name).write_bytes(name.encode())
    import hashlib

    env = {
        "HW_ASR_ARTIFACTS_BASE": f"file://{src}",
        "HW_ASR_ARTIFACTS_SHA256": "",
        "PATH": "/usr/bin:/bin",
        "HW_ASR_ARTIFACTS_PREPARE": "0",
        "HW_ASR_CHECKPOINT_URL": f"file://{src}/model.pth",
    }
    work = tmp_path / "work"
    work.mkdir()
    script = str(Path("download_artifacts.sh").resolve())
    no_sum = subprocess.run(["bash", script, str(work / "lm")], env=env, cwd=work, capture_output=True, text=True)
    assert no_sum.returncode != 0 and "HW_ASR_CHECKPOINT_SHA256" in no_sum.stderr
    assert not (work / "lm").exists(), "refused before downloading anything"
    wrong = subprocess.run(
        ["bash", script, str(work / "lm")],
        env={**env, "HW_ASR_CHECKPOINT_SHA256": "0" * 64},
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0 and not (work / "checkpoints" / "model.pth").exists()
    good = subprocess.run(
        ["bash", script, str(work / "lm")],
        env={**env, "HW_ASR_CHECKPOINT_SHA256": hashlib.sha256(b"model.pth").hexdigest()},
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    assert (work / "checkpoints" / "model.pth").read_bytes() == b"model.pth"
    assert "no sha256 is listed for 4-gram.arpa.gz; kept unverified" in wrong.stderr


def test_download_artifacts_lists_sums_for_the_files_it_fetches():
    listed = {line.split()[1] for line in Path("download_artifacts.sha256").read_text().splitlines() if line.strip()}
    assert {"4-gram.arpa.gz", "3-gram.pruned.1e-7.arpa.gz"} <= listed


def test_prepare_lm_lower_cases_and_derives_the_vocabulary(tmp_path):
    import gzip

    import kenlm

    from hw_asr.tools import prepare_lm

    upper = ARPA.replace("<unk>", "<UNK>")
    upper = "\n".join(
        line if line.startswith("\\") or line.startswith("ngram") else line.upper() for line in upper.split("\n")
    )
    assert "THE CAT" in upper
    src = tmp_path / "4-gram.arpa.gz"
    with gzip.open(src, "wt") as f:
        f.write(upper)
    have_tools = all(build_lm.find_tool(t) for t in build_lm.TOOLS)
    arpa, unigrams, binary = prepare_lm.prepare(src, tmp_path / "out" / "lm", binary=have_tools)
    assert arpa.read_text() == ARPA
    assert unigrams.read_text().split() == ["the", "cat", "kat", "sat", "mat"]
    for path in [arpa] + ([binary] if have_tools else []):
        model = kenlm.Model(str(path))
        assert model.score("the cat sat", bos=True, eos=False) > model.score("sat cat the", bos=True, eos=False)
    assert not list((tmp_path / "out").glob("*.part"))
    broken = tmp_path / "broken.arpa"
    broken.write_text("just some text\n")
    with pytest.raises(SystemExit, match="not an ARPA"):
        prepare_lm.prepare(broken, tmp_path / "bad" / "lm", binary=False)
    assert not list((tmp_path / "bad").glob("*"))


def test_lm_corpus_excludes_held_out_sentences_and_keeps_the_alphabet(tmp_path):
    from hw_asr.tools import make_lm_corpus

    text = tmp_path / "ru.txt"
    text.write_text("Ёлка стоит в лесу. Мы идём домой! Hello there friend.\nКот спит на окне\n", encoding="utf-8")
    held_out = tmp_path / "test.jsonl"
    held_out.write_text(
        json.dumps({"audio_filepath": "x.flac", "text": "Мы идём домой"}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    out = tmp_path / "corpus.txt"
    make_lm_corpus.main(
        ["--sources", "--text", str(text), "--language", "ru", "--exclude", str(held_out), "-o", str(out)]
    )
    assert out.read_text(encoding="utf-8").splitlines() == ["елка стоит в лесу", "кот спит на окне"]


def test_lm_corpus_takes_config_overrides_and_refuses_unknown_sources(tmp_path, capsys):
    from hw_asr.tools import make_lm_corpus

    out = tmp_path / "corpus.txt"
    # an override given after --sources is still an override, not a source
    make_lm_corpus.main(
        [
            "-c",
            "configs/one_batch_test.json",
            "--sources",
            "transcripts",
            "data.train.datasets.0.args.limit=2",
            "--transcript-repeat",
            "1",
            "-o",
            str(out),
        ]
    )
    two = out.read_text(encoding="utf-8").splitlines()
    make_lm_corpus.main(
        [
            "-c",
            "configs/one_batch_test.json",
            "data.train.datasets.0.args.limit=3",
            "--sources",
            "transcripts",
            "--transcript-repeat",
            "1",
            "-o",
            str(out),
        ]
    )
    three = out.read_text(encoding="utf-8").splitlines()
    assert len(two) == 2 and len(three) == 3 and three[:2] == two
    with pytest.raises(SystemExit):
        make_lm_corpus.main(["--sources", "bibel", "-o", str(out)])
    assert "unknown source(s) bibel" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_lm_corpus.main(["--sources", "--text", str(out), "-o", str(out), "data.x=1"])
    assert "need -c CONFIG" in capsys.readouterr().err
    # a malformed override stops the run before anything is written
    fresh = tmp_path / "fresh" / "corpus.txt"
    with pytest.raises(SystemExit):
        make_lm_corpus.main(
            ["-c", "configs/one_batch_test.json", "--sources", "transcripts", "-o", str(fresh), "limit"]
        )
    assert "'limit' must look like key.path=value" in capsys.readouterr().err
    assert not fresh.parent.exists()
