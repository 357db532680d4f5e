"""Decoders side by side on the log-probs of a trained checkpoint: WER and utterances/s.

    python benchmarks/decode.py -r checkpoints/<run>/model_best.pth --lm data/lm/mini_librispeech_4gram.bin \\
        [--split val] [--beams 50 100] [--alpha 0.5] [--beta 1.0] [--limit N]

The model runs once over the split; every decoder then decodes the same stored
log-probs in this process (one core), and its time is the wall time of decoding
alone. Rows: greedy, our prefix beam search (no LM, and with the LM), pyctcdecode
(no LM, LM) and flashlight-text (no LM, LM) at each beam width.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.builder import load_model  # noqa: E402
from hw_asr.text_encoder.decoders import FlashlightDecoder, PrefixBeamSearchDecoder, PyCTCDecodeDecoder  # noqa: E402
from hw_asr.tools.tune_lm import collect_log_probs, parse_slice, score  # noqa: E402


def run(name, decoder, items):
    start = time.perf_counter()
    wer, cer = score(decoder, items, progress=False)
    return name, wer, cer, len(items) / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("-r", "--resume", required=True)
    parser.add_argument("--lm", required=True, help="KenLM word model (.bin or .arpa) with <name>.unigrams.txt")
    parser.add_argument("--split", default="val")
    parser.add_argument("--beams", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--slice", default=None, help="START:STOP in audio-path order (tune_lm's --slice)")
    parser.add_argument("--fl-alpha", type=float, default=None, help="flashlight's LM weight (default --alpha)")
    parser.add_argument("--fl-beta", type=float, default=None, help="flashlight's word score (default --beta)")
    parser.add_argument("--skip-own-lm", action="store_true", help="leave out our beam search with the LM")
    parser.add_argument("--only-own", action="store_true", help="only greedy and our beam search")
    parser.add_argument("--skip-own", action="store_true", help="leave out our beam search (pure Python)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    model, encoder, config = load_model(args.resume, torch.device("cpu"))
    items = collect_log_probs(
        model, encoder, config, args.split, torch.device("cpu"), args.limit, parse_slice(args.slice)
    )
    unigrams = str(Path(args.lm).with_suffix("")) + ".unigrams.txt"
    ab = dict(alpha=args.alpha, beta=args.beta)
    rows = [run("greedy", lambda lp: [(encoder.decode(encoder.ctc_collapse(lp.argmax(-1).tolist())), 0.0)], items)]
    for beam in args.beams:
        if not args.skip_own:
            own = PrefixBeamSearchDecoder(encoder, beam_size=beam)
            rows.append(run(f"own beam {beam}", own, items))
            if not args.skip_own_lm:
                own_lm = PrefixBeamSearchDecoder(encoder, beam_size=beam, lm=args.lm, **ab)
                rows.append(run(f"own beam {beam} + LM", own_lm, items))
        if args.only_own:
            continue
        pyc = PyCTCDecodeDecoder(encoder, beam_size=beam)
        rows.append(run(f"pyctcdecode {beam}", pyc, items))
        pyc_lm = PyCTCDecodeDecoder(encoder, beam_size=beam, lm_path=args.lm, unigrams_path=unigrams, **ab)
        rows.append(run(f"pyctcdecode {beam} + LM", pyc_lm, items))
        fl = FlashlightDecoder(encoder, beam_size=beam)
        rows.append(run(f"flashlight {beam}", fl, items))
        fl_ab = dict(
            alpha=args.alpha if args.fl_alpha is None else args.fl_alpha,
            beta=args.beta if args.fl_beta is None else args.fl_beta,
        )
        fl_lm = FlashlightDecoder(encoder, beam_size=beam, lm_path=args.lm, **fl_ab)
        rows.append(run(f"flashlight {beam} + LM (lexicon)", fl_lm, items))
    fl_note = f" (flashlight {args.fl_alpha}, {args.fl_beta})" if args.fl_alpha is not None else ""
    print(
        f"\n{args.resume}: {len(items)} utterances of {args.split} (slice {args.slice or 'all'}); LM {args.lm}; "
        f"alpha {args.alpha}, beta {args.beta}{fl_note}; 1 thread\n"
    )
    print("| decoder | WER | CER | utterances/s |\n|---|---:|---:|---:|")
    for name, wer, cer, speed in rows:
        print(f"| {name} | {wer:.4f} | {cer:.4f} | {speed:.1f} |", flush=True)


if __name__ == "__main__":
    main()
