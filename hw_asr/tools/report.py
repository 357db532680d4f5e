"""Pictures of what a model gets wrong, from a ``test.py`` result.

    python test.py -r checkpoint.pth -o result.json [--timestamps]
    python -m hw_asr.tools.report result.json -o report/ [--worst 5] [--no-align]

writes ``report/README.md`` (a Markdown page) and its PNGs:
- ``wer_cer.png``: corpus WER and CER per decoder;
- ``error_types.png``: substitutions, deletions and insertions per decoder (jiwer's word alignment);
- the most confused word pairs, deleted and inserted words of the first decoder, as tables;
- ``wer_by_length.png``: WER of that decoder by utterance length (seconds, read from each file's header);
- ``worst_N.png``: for the N utterances with the highest WER, the spectrogram with the hypothesis's words
  at their aligned times, coloured by confidence. The words come from the result (``test.py --timestamps``)
  or, when it has none, from aligning the hypothesis with the result's checkpoint (``--no-align``: the
  spectrogram and the texts alone).

Rows without a transcript are left out of the scores; files that cannot be read are named in the page.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import jiwer
import numpy as np

from hw_asr.audio import AudioError, audio_duration, load_audio
from hw_asr.logger.writer import markdown_table

logger = logging.getLogger(__name__)


class ReportError(Exception):
    """A result file the report cannot read."""


def read_result(path: str | Path) -> dict:
    """A ``test.py`` result with its decoders and scored utterances, or :class:`ReportError` naming the file."""
    path = Path(path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (write one with: python test.py -r <checkpoint> -o {path})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a JSON file: {e}") from None
    if not isinstance(result, dict) or not isinstance(result.get("utterances"), list) or "decoders" not in result:
        raise ReportError(f"{path}: not a test.py result (it needs 'decoders' and 'utterances')")
    if not result["decoders"]:
        raise ReportError(f"{path}: the result has no decoders")
    return result


def scored_rows(result: dict, decoder: str) -> list[dict]:
    return [r for r in result["utterances"] if r.get("ground_truth") and r.get(f"pred_{decoder}") is not None]


def word_errors(rows: list[dict], decoder: str) -> dict:
    """Hits, substitutions, deletions, insertions and the confused, deleted and inserted words (counters)."""
    refs = [r["ground_truth"] for r in rows]
    hyps = [r[f"pred_{decoder}"] for r in rows]
    out = {"hits": 0, "substitutions": 0, "deletions": 0, "insertions": 0}
    confused, deleted, inserted = collections.Counter(), collections.Counter(), collections.Counter()
    if not rows:
        return {**out, "confused": confused, "deleted": deleted, "inserted": inserted}
    # jiwer refuses empty strings on the reference side only; an empty hypothesis is all deletions
    aligned = jiwer.process_words(refs, hyps)
    out.update(
        hits=aligned.hits,
        substitutions=aligned.substitutions,
        deletions=aligned.deletions,
        insertions=aligned.insertions,
    )
    for ref, hyp, chunks in zip(aligned.references, aligned.hypotheses, aligned.alignments):
        for c in chunks:
            if c.type == "substitute":
                for i, j in zip(range(c.ref_start_idx, c.ref_end_idx), range(c.hyp_start_idx, c.hyp_end_idx)):
                    confused[(ref[i], hyp[j])] += 1
            elif c.type == "delete":
                deleted.update(ref[c.ref_start_idx : c.ref_end_idx])
            elif c.type == "insert":
                inserted.update(hyp[c.hyp_start_idx : c.hyp_end_idx])
    return {**out, "confused": confused, "deleted": deleted, "inserted": inserted}


def duration_of(path: str) -> float | None:
    """Seconds of audio from the file's header; None where it cannot be read."""
    try:
        return audio_duration(path)
    except AudioError:
        return None


def wer_by_length(rows: list[dict], decoder: str, bins: int = 5) -> list[dict]:
    """Corpus WER in ``bins`` groups of utterances of about equal count, by duration."""
    timed = [(d, r) for r in rows if (d := duration_of(r["audio_path"])) is not None]
    timed.sort(key=lambda x: x[0])
    groups = [g for g in np.array_split(np.arange(len(timed)), min(bins, len(timed))) if len(g)]
    out = []
    for g in groups:
        part = [timed[i][1] for i in g]
        errs = word_errors(part, decoder)
        words = errs["hits"] + errs["substitutions"] + errs["deletions"]
        wer = (errs["substitutions"] + errs["deletions"] + errs["insertions"]) / max(words, 1)
        out.append({"from_s": timed[g[0]][0], "to_s": timed[g[-1]][0], "utterances": len(g), "wer": wer})
    return out


def _bar_chart(
    path: str | os.PathLike, groups: Sequence[str], series: Mapping[str, Sequence[float]], title: str, ylabel: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(groups) * len(series)), 3.2))
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        xs = np.arange(len(groups)) + k * width
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2, groups, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class Aligner:
    """Aligns hypotheses to audio with a checkpoint's model (loaded once)."""

    def __init__(self, checkpoint: str) -> None:
        from hw_asr.builder import config_sample_rate, load_model

        self.model, self.encoder, config = load_model(checkpoint)
        self.sample_rate = config_sample_rate(config)

    def words(self, audio: np.ndarray, text: str) -> list[dict] | None:
        import torch

        from hw_asr.alignment import align_batch

        wave = torch.as_tensor(audio, dtype=torch.float32).reshape(1, -1)
        length = torch.tensor([wave.shape[1]])
        with torch.no_grad():
            out = self.model(wave, length)
        return align_batch(self.model, length, out, [text], self.encoder, self.sample_rate)[0]


def make_report(result_path: str | os.PathLike, out_dir: str | os.PathLike, worst: int = 5, align: bool = True) -> Path:
    """Write ``out_dir/README.md`` and its pictures; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hw_asr.visual import alignment_figure

    result = read_result(result_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    decoders = list(result["decoders"])
    first = decoders[0]
    page = [f"# Errors of `{result.get('checkpoint', 'a model')}`", ""]
    counts = result.get("counts", {})
    page.append(
        f"{counts.get('decoded', len(result['utterances']))} utterances decoded, "
        f"{counts.get('scored', len(scored_rows(result, first)))} scored, {counts.get('skipped', 0)} left out."
    )
    page.append("")

    scores = {d: result["decoders"][d] for d in decoders}
    _bar_chart(
        out_dir / "wer_cer.png",
        decoders,
        {"WER": [scores[d]["WER"] or 0.0 for d in decoders], "CER": [scores[d]["CER"] or 0.0 for d in decoders]},
        "corpus WER and CER per decoder",
        "error rate",
    )
    errors = {d: word_errors(scored_rows(result, d), d) for d in decoders}
    kinds = ("substitutions", "deletions", "insertions")
    _bar_chart(
        out_dir / "error_types.png",
        decoders,
        {k: [errors[d][k] for d in decoders] for k in kinds},
        "word errors by type",
        "words",
    )
    page += ["## WER and CER", "", "![WER and CER per decoder](wer_cer.png)", ""]
    page.append(
        markdown_table(
            ["decoder", "WER", "CER", *kinds],
            [[d, scores[d]["WER"], scores[d]["CER"], *(errors[d][k] for k in kinds)] for d in decoders],
        )
    )
    page += ["", "## Error types", "", "![substitutions, deletions, insertions](error_types.png)", ""]

    e = errors[first]
    page += [f"## Most confused words ({first})", ""]
    page.append(
        markdown_table(["reference", "hypothesis", "times"], [[r, h, n] for (r, h), n in e["confused"].most_common(15)])
    )
    page += ["", f"Most deleted: {', '.join(f'{w} ({n})' for w, n in e['deleted'].most_common(10)) or 'none'}."]
    page += [f"Most inserted: {', '.join(f'{w} ({n})' for w, n in e['inserted'].most_common(10)) or 'none'}.", ""]

    rows = scored_rows(result, first)
    by_length = wer_by_length(rows, first)
    if by_length:
        labels = [f"{b['from_s']:.1f}-{b['to_s']:.1f} s" for b in by_length]
        _bar_chart(
            out_dir / "wer_by_length.png",
            labels,
            {"WER": [b["wer"] for b in by_length]},
            f"WER by utterance length ({first})",
            "WER",
        )
        page += [f"## WER by utterance length ({first})", "", "![WER by length](wer_by_length.png)", ""]
        page.append(
            markdown_table(
                ["seconds", "utterances", "WER"],
                [[lab, b["utterances"], b["wer"]] for lab, b in zip(labels, by_length)],
            )
        )
        page.append("")

    ranked = sorted(rows, key=lambda r: (-r.get(f"wer_{first}", 0.0), r["audio_path"]))[:worst]
    checkpoint = result.get("checkpoint")
    aligner = Aligner(checkpoint) if ranked and align and checkpoint and Path(checkpoint).is_file() else None
    sample_rate = aligner.sample_rate if aligner is not None else 16000
    page += [f"## The {len(ranked)} utterances with the highest WER ({first})", ""]
    for i, r in enumerate(ranked, start=1):
        hyp = r[f"pred_{first}"]
        page.append(f"**{i}. `{r['audio_path']}`** WER {r.get(f'wer_{first}', float('nan')):.3f}")
        page += ["", f"- reference: {r['ground_truth']}", f"- hypothesis: {hyp}"]
        try:
            audio = load_audio(r["audio_path"], sample_rate)
        except AudioError as err:
            page += [f"- no picture: {err}", ""]
            continue
        words = r.get("words")
        if words is None and aligner is not None:
            words = aligner.words(audio, hyp)
        fig = alignment_figure(
            audio, sample_rate, words, title=f"hypothesis ({first}): {hyp}", reference=r["ground_truth"]
        )
        fig.savefig(out_dir / f"worst_{i}.png", dpi=90)
        plt.close(fig)
        page += ["", f"![utterance {i}](worst_{i}.png)", ""]
    if result.get("skipped"):
        page += (
            ["## Left out", ""] + [f"- `{s.get('audio_path')}`: {s.get('reason')}" for s in result["skipped"]] + [""]
        )
    path = out_dir / "README.md"
    path.write_text("\n".join(page) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", help="a test.py result JSON")
    parser.add_argument("-o", "--output", required=True, help="folder for README.md and the PNGs")
    parser.add_argument("--worst", type=int, default=5, help="utterances with the highest WER to draw")
    parser.add_argument("--no-align", action="store_true", help="do not align hypotheses with the checkpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = make_report(args.result, args.output, args.worst, align=not args.no_align)
    except ReportError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
