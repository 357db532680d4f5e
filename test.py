"""Evaluate a checkpoint, a run folder or a confidence ensemble: predictions per utterance and WER/CER per
decoder, as one JSON (``python test.py --help``; the code is ``hw_asr/evaluation.py``)."""

import sys

from hw_asr.evaluation import CLI_ERRORS, main

if __name__ == "__main__":
    try:
        main()
    except CLI_ERRORS as e:
        sys.exit(f"error: {e}")
