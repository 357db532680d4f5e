"""hw_asr.tools.report: a Markdown page with pictures of a test.py result's errors."""

import json

import pytest

from hw_asr.tools import report
from tests.conftest import REPO

SAMPLE = REPO / "hw_asr" / "data" / "sample"


def result_file(tmp_path, rows, checkpoint=None):
    path = tmp_path / "result.json"
    result = {
        "checkpoint": checkpoint,
        "decoders": {"argmax": {"WER": 0.5, "CER": 0.25}, "beam": {"WER": 0.4, "CER": 0.2}},
        "counts": {"decoded": len(rows), "scored": len(rows), "skipped": 1},
        "utterances": rows,
        "skipped": [{"split": "val", "audio_path": "gone.flac", "reason": "cannot decode audio"}],
    }
    path.write_text(json.dumps(result))
    return path


def row(audio, ref, argmax, beam, wer, words=None):
    return {
        "split": "val",
        "audio_path": str(audio),
        "ground_truth": ref,
        "pred_argmax": argmax,
        "pred_beam": beam,
        "wer_argmax": wer,
        "words": words,
    }


def test_report_counts_error_types_ranks_the_worst_and_draws_their_aligned_words(tmp_path):
    audio = sorted((SAMPLE / "audio").glob("*.flac"))
    words = [
        {"word": "the", "start": 0.1, "end": 0.3, "confidence": 0.9},
        {"word": "bat", "start": 0.4, "end": 0.9, "confidence": 0.2},
    ]
    rows = [
        row(audio[0], "the cat sat", "the bat", "the cat sat", 2 / 3, words),  # one substitution, one deletion
        row(audio[1], "green leaves fall", "green leaves fall too", "green leaves fall", 1 / 3),  # one insertion
        row(tmp_path / "missing.flac", "a b", "a b", "a b", 0.0),
    ]
    page = report.make_report(result_file(tmp_path, rows), tmp_path / "report", worst=2, align=False)
    text = page.read_text()
    for png in ("wer_cer.png", "error_types.png", "wer_by_length.png", "worst_1.png", "worst_2.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000, png
        assert f"]({png})" in text
    assert "| argmax | 0.500 | 0.250 | 1 | 1 | 1 |" in text  # substitutions, deletions, insertions
    assert "| beam | 0.400 | 0.200 | 0 | 0 | 0 |" in text
    assert "| cat | bat | 1 |" in text
    assert "Most deleted: sat (1)." in text and "Most inserted: too (1)." in text
    # the worst first; the third (WER 0) is not drawn; the skipped file is named
    assert text.index(str(audio[0])) < text.index(str(audio[1]))
    assert not (tmp_path / "report" / "worst_3.png").exists()
    assert "`gone.flac`: cannot decode audio" in text


def test_errors_per_type_come_from_the_word_alignment():
    rows = [row("x", "a b c d", "a x c", "", 0.5), row("y", "e f", "e f g", "", 0.5)]
    e = report.word_errors(rows, "argmax")
    assert (e["hits"], e["substitutions"], e["deletions"], e["insertions"]) == (4, 1, 1, 1)
    assert e["confused"] == {("b", "x"): 1} and e["deleted"] == {"d": 1} and e["inserted"] == {"g": 1}


def test_a_missing_or_foreign_result_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(report.ReportError, match="no such file"):
        report.read_result(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(report.ReportError, match="bad.json: not a JSON file"):
        report.read_result(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"splits": {}}))
    with pytest.raises(SystemExit, match="other.json: not a test.py result"):
        report.main([str(tmp_path / "other.json"), "-o", str(tmp_path / "out")])


def test_report_of_a_real_run_aligns_the_hypotheses_with_its_checkpoint(tmp_path, monkeypatch):
    import hw_asr.visual as visual
    from hw_asr import evaluation
    from tests.test_training import TINY, run_train

    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1")
    path = tmp_path / "result.json"
    evaluation.main(["-r", str(run_dir / "checkpoint-epoch1.pth"), "-o", str(path), "--splits", "val"])
    result = json.loads(path.read_text())
    assert result["utterances"] and "words" not in result["utterances"][0]
    for r in result["utterances"]:  # a hypothesis with words to align, whatever the barely trained model said
        r["pred_argmax"] = r["ground_truth"]
    path.write_text(json.dumps(result))
    drawn, original = [], visual.alignment_figure

    def spy(audio, sample_rate, words=None, **kw):
        drawn.append((len(audio) / sample_rate, kw["reference"], words))
        return original(audio, sample_rate, words, **kw)

    monkeypatch.setattr(visual, "alignment_figure", spy)
    report.make_report(path, tmp_path / "report", worst=2)
    assert len(drawn) == 2
    for seconds, reference, words in drawn:
        assert [w["word"] for w in words] == reference.split()
        assert all(0 <= w["start"] < w["end"] <= seconds + 0.1 for w in words)
