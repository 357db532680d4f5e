"""A confidence ensemble on a held-out mix: routing accuracy, WER of the ensemble vs each
member vs the oracle (best member per utterance), and the extra cost vs a single model.

    python benchmarks/ensemble.py -e ensemble.pth --mix data/synthetic_en/test.jsonl data/synthetic_ru/test.jsonl

``--mix`` lists one manifest per member, in the ensemble's member order: the
utterances of manifest k belong to member k (its language or domain). Each member
transcribes every utterance (with each of ``--decoders``); the ensemble's answer is the routed member's;
the oracle takes, per utterance, the member with the fewest word errors. WER is
corpus-level over the whole mix and per manifest. Cost (greedy, on
``--timing-utterances`` spread over the mix): wall time of the ensemble (every member
+ confidences + selector + decoding) vs one member alone on the same utterances, in
this process, after one warm-up.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.ensemble import ConfidenceEnsemble  # noqa: E402
from hw_asr.ensemble.ensemble import load_waveform  # noqa: E402
from hw_asr.manifests import read_manifest  # noqa: E402
from hw_asr.metric import WERMetric, calc_wer  # noqa: E402


def corpus_wer(refs, hyps):
    metric = WERMetric()
    metric.update(refs, hyps)
    return metric.result()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-e", "--ensemble", required=True)
    parser.add_argument("--mix", nargs="+", required=True, help="one manifest per member, in member order")
    parser.add_argument("--limit", type=int, default=None, help="utterances per manifest")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--decoders",
        nargs="+",
        default=["argmax"],
        help="decoders every member has (argmax, or e.g. each member's beam_lm)",
    )
    parser.add_argument("--timing-utterances", type=int, default=100, help="utterances the cost is timed on")
    parser.add_argument("-o", "--output", help="write the figures as JSON")
    args = parser.parse_args(argv)

    ens = ConfidenceEnsemble.load(args.ensemble)
    names = [m.name for m in ens.members]
    if len(args.mix) != len(names):
        sys.exit(f"--mix needs one manifest per member ({len(names)}: {names}), got {len(args.mix)}")
    paths, refs, labels = [], [], []
    for k, manifest in enumerate(args.mix):
        rows, _ = read_manifest(manifest)
        rows = rows[: args.limit] if args.limit else rows
        paths += [r["path"] for r in rows]
        refs += [ens.members[k].encoder.normalize(r["text"]) for r in rows]
        labels += [k] * len(rows)
    labels = np.array(labels)

    # every member's log-probs once: routing and all decoders work from them
    log_probs = ens.member_log_probs(paths, args.batch_size)
    _, _, choice = ens.route(log_probs)

    # cost, on a spread subset: the whole ensemble path vs one member alone
    timing_paths = paths[:: max(1, len(paths) // args.timing_utterances)][: args.timing_utterances]
    ens.route_and_decode(timing_paths[:2], batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    ens.route_and_decode(timing_paths, ["argmax"], args.batch_size)
    ensemble_s = time.perf_counter() - start
    single_s = []
    for m in ens.members:
        start = time.perf_counter()
        m.decode(m.log_probs([load_waveform(p, m.sample_rate) for p in timing_paths], args.batch_size))
        single_s.append(time.perf_counter() - start)

    groups = {"mix": np.arange(len(paths)), **{f"{n} data": np.where(labels == k)[0] for k, n in enumerate(names)}}
    table = []
    for decoder in args.decoders:
        member_hyps = {m.name: m.decode(log_probs[k], decoder) for k, m in enumerate(ens.members)}
        ens_hyps = [member_hyps[names[c]][i] for i, c in enumerate(choice)]
        oracle_hyps = [
            min((member_hyps[n][i] for n in names), key=lambda h: calc_wer(refs[i], h)) for i in range(len(paths))
        ]
        for group, idx in groups.items():

            def w(hyps):
                return corpus_wer([refs[i] for i in idx], [hyps[i] for i in idx])

            table.append(
                {
                    "decoder": decoder,
                    "set": group,
                    "utterances": len(idx),
                    "routing_accuracy": float((choice[idx] == labels[idx]).mean()),
                    "ensemble_WER": w(ens_hyps),
                    "oracle_WER": w(oracle_hyps),
                    **{f"{n}_WER": w(member_hyps[n]) for n in names},
                }
            )
    audio_s = sum(sf.info(p).duration for p in timing_paths)
    cost = {
        "ensemble_s": ensemble_s,
        "single_member_s": dict(zip(names, single_s)),
        "ensemble_over_mean_single": ensemble_s / float(np.mean(single_s)),
        "audio_s": audio_s,
    }

    cols = ["decoder", "set", "utterances", "routing_accuracy", "ensemble_WER", "oracle_WER"]
    cols += [f"{n}_WER" for n in names]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in table:
        print("| " + " | ".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |")
    rel = {r["decoder"]: r["ensemble_WER"] / max(r["oracle_WER"], 1e-9) - 1 for r in table if r["set"] == "mix"}
    for decoder, value in rel.items():
        print(f"{decoder}: ensemble WER vs oracle on the mix: {value * 100:+.1f}% relative")
    print(
        f"cost: ensemble {ensemble_s:.1f} s vs one member {np.mean(single_s):.1f} s "
        f"({cost['ensemble_over_mean_single']:.2f}x) for {audio_s / 60:.1f} min of audio"
    )
    if args.output:
        Path(args.output).write_text(
            json.dumps({"table": table, "cost": cost, "ensemble_vs_oracle_rel": rel}, indent=2) + "\n", encoding="utf-8"
        )
    return table, cost


if __name__ == "__main__":
    main()
