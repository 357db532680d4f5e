"""Train a sentencepiece (BPE or unigram) model on the transcripts of a config's split.

    python -m hw_asr.tools.train_sentencepiece -c configs/deepspeech2_librispeech.json \\
        --split train --vocab-size 256 --model-type bpe -o data/spm/librispeech_bpe256

writes ``<output>.model`` (and ``.vocab``) and prints the ``text_encoder`` block to
put in a config. Transcripts are normalised exactly as the encoder will see them.
"""

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from hw_asr.builder import build_dataset
from hw_asr.config import apply_overrides, load_config
from hw_asr.datasets.base_dataset import dataset_parts
from hw_asr.text_encoder import SentencePieceTextEncoder


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--vocab-size", type=int, default=256)
    parser.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    parser.add_argument("-o", "--output", required=True, help="output prefix (writes <prefix>.model)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = apply_overrides(load_config(args.config), args.overrides)
    dataset = build_dataset(config, args.split, None)
    texts = [row["text"] for part in dataset_parts(dataset) for row in part.index]
    path = SentencePieceTextEncoder.train(texts, args.output, args.vocab_size, args.model_type)
    block = {"type": "SentencePieceTextEncoder", "args": {"model_path": str(path)}}
    print(f"trained on {len(texts)} transcripts: {path}")
    print(f'use it in a config as  "text_encoder": {json.dumps(block)}')
    return path


if __name__ == "__main__":
    main()
