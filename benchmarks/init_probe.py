"""A preset's encoder stack at initialisation, layer by layer: how alike the frames are, how gradients grow.

    python benchmarks/init_probe.py --presets conformer_s quartznet_15x5 \\
        --audio ../shared/data/mini-librispeech/LibriSpeech/train-clean-5 [--utterances 4] [key=value ...]

Two figures after the subsampling and after every layer of the encoder stack (each item of the model's
``ModuleList`` children):

* **cosine**: for each utterance, the mean cosine similarity over all pairs of its (unpadded) frames,
  averaged over the utterances. A stack whose frames all point the same way (cosine near 1) gives the
  CTC head nothing to tell the frames apart by: the model starts on the blank plateau and has to undo
  the collapse first.
* **grad**: the norm of the CTC loss's gradient with respect to the layer's output, divided by that at
  the last layer's output. Figures far above 1 at the first layers mean the gradient grows on its way
  back through the stack (a deep plain ReLU/batch-norm chain does this), so one learning rate cannot
  suit the first and the last layers alike.

(BENCHMARKS.md, "Leaving the blank plateau".) The model runs in training mode (batch norm on the
batch's statistics) with dropout and SpecAugment off; the loss is CTC against random token sequences
of a third of the output frames (seeded). ``key=value`` overrides apply to the preset, e.g.
``arch.args.branch_init=1.0`` for PyTorch's default initialisation.
"""

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.audio import AUDIO_EXTENSIONS, find_audio_files, load_audio  # noqa: E402
from hw_asr.builder import build_model, build_text_encoder  # noqa: E402
from hw_asr.config import apply_overrides, load_config  # noqa: E402

ARCH_DIR = Path(__file__).resolve().parents[1] / "configs" / "arch"


def audio_files(paths, n):
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(find_audio_files(p))
        elif p.is_file():
            files.append(p)
        else:
            raise SystemExit(f"--audio: {p} is neither a file nor a folder")
    if not files:
        raise SystemExit(f"--audio: no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {', '.join(map(str, paths))}")
    step = max(1, len(files) // n)  # spread over speakers rather than the first n files of one chapter
    return files[::step][:n]


def frame_cosine(x, lengths, time_dim):
    """Mean over utterances of the mean pairwise cosine between the valid frames of ``x`` [B, ., .]."""
    x = x.float().movedim(time_dim, 1)  # [B, T, C]
    values = []
    for b in range(x.shape[0]):
        frames = nn.functional.normalize(x[b, : int(lengths[b])], dim=-1)
        k = frames.shape[0]
        if k < 2:
            continue
        sim = frames @ frames.T
        values.append(((sim.sum() - sim.diagonal().sum()) / (k * k - k)).item())
    return sum(values) / len(values)


def probe_layers(model, audio, audio_length, seed=0):
    """[(layer name, mean frame cosine, gradient norm / the last layer's)] for the subsampled input and
    every encoder layer."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    model.spec_augment = None
    layers = [
        (f"{name}.{i}", layer)
        for name, child in model.named_children()
        if isinstance(child, nn.ModuleList)
        for i, layer in enumerate(child)
    ]
    if not layers:
        raise SystemExit(f"{type(model).__name__} has no ModuleList of layers to look into")
    kept = {}  # name -> the tensor a layer received or returned, kept with its gradient

    def keep(name, t):
        if t.requires_grad:
            t.retain_grad()
        kept[name] = t

    handles = [layers[0][1].register_forward_pre_hook(lambda module, args: keep("subsampled input", args[0]))]
    handles += [
        layer.register_forward_hook(
            lambda module, args, out, name=name: keep(name, out[0] if isinstance(out, tuple) else out)
        )
        for name, layer in layers
    ]
    feats, lengths = model.features(audio, audio_length)
    logits, out_lengths, *_ = model.encode(feats, lengths)
    for h in handles:
        h.remove()
    generator = torch.Generator().manual_seed(seed)
    target_lengths = torch.clamp(out_lengths // 3, min=1)
    targets = torch.randint(1, logits.shape[-1], (len(out_lengths), int(target_lengths.max())), generator=generator)
    loss = nn.functional.ctc_loss(
        logits.float().log_softmax(-1).transpose(0, 1), targets, out_lengths, target_lengths, zero_infinity=True
    )
    loss.backward()
    frames = int(out_lengths.max())
    seen = []
    for name in ["subsampled input"] + [n for n, _ in layers]:
        t = kept[name]
        if t.dim() != 3 or frames not in t.shape[1:]:
            continue  # not a frame sequence at the output rate
        time_dim = 1 if t.shape[1] == frames else 2
        grad = t.grad.norm().item() if t.grad is not None else float("nan")
        seen.append((name, frame_cosine(t.detach(), out_lengths, time_dim), grad))
    last = seen[-1][2]
    return [(name, cos, grad / last) for name, cos, grad in seen]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", required=True, help="names of configs/arch presets")
    parser.add_argument(
        "--audio", action="append", required=True, help="an audio file, or a folder searched recursively; repeatable"
    )
    parser.add_argument("--utterances", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="key.path=value applied to each preset")
    args = parser.parse_args(argv)
    files = audio_files(args.audio, args.utterances)
    waves = [torch.from_numpy(load_audio(f)) for f in files]
    audio_length = torch.tensor([len(w) for w in waves])
    audio = nn.utils.rnn.pad_sequence(waves, batch_first=True)
    results = {}
    for name in args.presets:
        path = ARCH_DIR / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"no preset {path}")
        cfg = apply_overrides(load_config(path), args.overrides)
        torch.manual_seed(args.seed)
        model = build_model(cfg, n_tokens=len(build_text_encoder(cfg)))
        rows = probe_layers(model, audio, audio_length, seed=args.seed)
        results[name] = rows
        print(f"{name}: cosine " + ", ".join(f"{n} {c:.2f}" for n, c, _ in rows), flush=True)
        print(f"{name}: grad " + ", ".join(f"{n} {g:.2f}" for n, _, g in rows), flush=True)
    return results


if __name__ == "__main__":
    main()
