"""What one training step of each preset dispatches: the CPU proxies for its cost on a GPU.

    python benchmarks/step_anatomy.py [--presets conformer_m deepspeech2_large ...] [--batch 4] [--seconds 4]
        [--steps 2] [--device cpu] [--no-graph-breaks] [--json out.json]

A GPU step of a small or mid-sized model is bound by what the host does between kernels, not by
the arithmetic: how many operators it launches, how many dtype casts, and whether the host waits
for the device. Those can be counted on any device, by running the Trainer's own step (the real
``Trainer._train_epoch`` on a stream of identical batches, logging off) under a dispatch counter:

* ``ops/step``: aten operators dispatched per training step (forward, loss, backward, clipping,
  optimiser), each of which is at least one kernel launch on a GPU;
* ``casts/step``: ``aten::_to_copy`` per step with bf16 autocast (the ``--amp`` mode; on the CPU
  torch's CPU autocast stands in for CUDA's, which casts the same operators);
* ``syncs/step``: operators that make the host wait for the device on CUDA: a value read on the
  host (``.item()``, ``float()``, ``bool()``: ``aten::_local_scalar_dense``), an output whose shape
  depends on the data (``nonzero``, ``masked_select``, boolean-mask indexing, ``unique``), and
  packing a padded batch for an RNN (its lengths must be on the host); each with where it comes
  from (the first frame in this project's code); on CUDA, beside it, the synchronising calls CUDA
  itself reports (``torch.cuda.set_sync_debug_mode``);
* ``shapes/epoch``: distinct ``[batch, samples]`` input shapes in one epoch of the preset's
  mini LibriSpeech ``LengthBucketSampler`` (durations of ``--durations`` or a log-normal fit of
  mini LibriSpeech's), each of which a compiled or CUDA-graph step has to handle anew;
* ``graph breaks``: ``torch._dynamo.explain`` of the model's forward (the CTC loss left out);
* ``fwd+bwd graphs``: graphs of the forward compiled whole with AOTAutograd (``aot_eager``: the joint
  forward and backward graphs inductor would get) under bf16 CPU autocast, then the backward;
  1 means the whole step but the loss is one graph, forward and backward, and every gradient came.

Per-step counts are the difference between runs of ``2 * steps`` and ``steps`` steps divided by
``steps``, so that what happens once per epoch (the epoch's mean loss) does not count.
"""

import argparse
import collections
import json
import logging
import math
import random
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from hw_asr.builder import build_model, build_text_encoder  # noqa: E402
from hw_asr.config import load_config  # noqa: E402
from hw_asr.loss import CTCLoss  # noqa: E402
from hw_asr.model.base_model import allow_rnn_capture  # noqa: E402

ARCH_DIR = REPO / "configs" / "arch"
PRESETS = sorted(p.stem for p in ARCH_DIR.glob("*.json"))
# operators whose result the host needs before it can go on (CUDA waits for the device)
HOST_VALUE_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "nonzero_static",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "_pack_padded_sequence",
    "equal",
    "is_nonzero",
}


def _has_bool_index(args):
    indices = args[1] if len(args) > 1 else None
    return isinstance(indices, (list, tuple)) and any(
        torch.is_tensor(i) and i.dtype == torch.bool for i in indices if i is not None
    )


def is_sync(name, args, kwargs):
    """Whether this operator makes the host wait for the device on CUDA."""
    if name in HOST_VALUE_OPS:
        return True
    if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
        return _has_bool_index(args)  # x[mask]: the number of True values sizes the output
    if name == "repeat_interleave":
        return "output_size" not in (kwargs or {}) and not any(isinstance(a, int) for a in args[1:2])
    return False


def where_from():
    """The innermost frame of this project's code (not torch's, not this benchmark's)."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        path = frame.filename
        if str(REPO) in path and "/benchmarks/" not in path and "/.venv/" not in path:
            return f"{Path(path).relative_to(REPO)}:{frame.lineno}"
    return "?"


class OpCounter(TorchDispatchMode):
    """Counts every aten operator dispatched, the dtype casts, and the sync-forcing ones by origin."""

    def __init__(self):
        super().__init__()
        self.ops, self.casts = 0, 0
        self.syncs = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops += 1
        if name == "_to_copy":
            self.casts += 1
        if is_sync(name, args, kwargs):
            self.syncs[f"{name} @ {where_from()}"] += 1
        return func(*args, **(kwargs or {}))


def synthetic_batch(encoder, batch, seconds, device, seed=0):
    """``batch`` utterances of noise, the longest ``seconds`` long, the others shorter (padding is real),
    with transcripts of about 15 characters a second, collated as the data pipeline does."""
    g = torch.Generator().manual_seed(seed)
    sr = 16000
    lengths = [int(sr * seconds * (1 - 0.3 * i / max(1, batch - 1))) for i in range(batch)]
    audio = torch.zeros(batch, lengths[0])
    for i, n in enumerate(lengths):
        audio[i, :n] = 0.1 * torch.randn(n, generator=g)
    n_chars = [max(1, int(15 * n / sr)) for n in lengths]
    text = torch.randint(1, len(encoder), (batch, max(n_chars)), generator=g)
    return {
        "audio": audio,
        "audio_length": torch.tensor(lengths),
        "text_encoded": text,
        "text_encoded_length": torch.tensor(n_chars),
        "text": ["a" * n for n in n_chars],
        "audio_path": [f"u{i}" for i in range(batch)],
        "duration": [n / sr for n in lengths],
        "load_failures": [],
        "skipped": [],
        "num_samples": sum(lengths),
    }


def preset_model(preset, batch, seconds, device="cpu"):
    """``preset``'s model (seed 0, training mode) on ``device``, its text encoder and a synthetic batch."""
    device = torch.device(device)
    cfg = load_config(ARCH_DIR / f"{preset}.json")
    encoder = build_text_encoder(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, n_tokens=len(encoder)).to(device).train()
    return model, encoder, synthetic_batch(encoder, batch, seconds, device)


def sample_manifest(encoder, folder):
    """A manifest of two seconds of noise transcribed in ``encoder``'s own tokens (any preset's alphabet)."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "noise.wav", 0.1 * torch.randn(32000, generator=torch.Generator().manual_seed(0)).numpy(), 16000)
    text = encoder.decode(list(range(1, min(len(encoder), 8)))).strip()
    rows = [{"audio_filepath": str(folder / "noise.wav"), "text": text, "duration": 2.0}] * 2
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


def make_trainer(preset, device, amp, log_step=10**9):
    """``preset``'s Trainer as ``train.py`` assembles it (:func:`hw_asr.run.build_training`; seed 0, AdamW
    at 1e-4, fused as by default, clipping at 10, no schedule, no metrics), in a temporary run folder. Its
    loader reads a manifest of noise (:func:`sample_manifest`); :func:`count_steps` feeds it synthetic
    batches instead."""
    from hw_asr.builder import validate_config
    from hw_asr.run import build_training
    from hw_asr.trainer.distributed import DistInfo

    preset_config = load_config(ARCH_DIR / f"{preset}.json")
    manifest = sample_manifest(build_text_encoder(preset_config), Path(_RUNS.name) / preset)
    config = {
        "name": f"step_anatomy_{preset}",
        "seed": 0,
        **{k: preset_config[k] for k in ("text_encoder", "arch", "sample_rate") if k in preset_config},
        "data": {
            "train": {
                "batch_size": 2,
                "datasets": [{"type": "ManifestDataset", "args": {"manifest_path": str(manifest)}}],
            }
        },
        "optimizer": {"type": "AdamW", "args": {"lr": 1e-4}},
        "metrics": [],
        "trainer": {
            "epochs": 1,
            "len_epoch": 1,
            "log_step": log_step,
            "grad_norm_clip": 10,
            "amp": amp,
            "monitor": "off",
            "visualize": None,
            "device": str(device),
            "save_dir": _RUNS.name,
        },
    }
    training = build_training(validate_config(config), DistInfo(device=torch.device(device)))
    logging.getLogger().setLevel(logging.WARNING)  # build_training logs at INFO
    return training.trainer


_RUNS = tempfile.TemporaryDirectory(prefix="step_anatomy_")  # the run folders of make_trainer


def count_steps(trainer, batch, steps):
    """Counts over one epoch of ``steps`` identical batches, logging off. On CUDA also
    ``counter.cuda_syncs``: the synchronising calls CUDA itself reports
    (``torch.cuda.set_sync_debug_mode("warn")``), the check of the dispatch counter's list."""
    trainer.len_epoch, trainer.epoch_batches = steps, 0
    counter = OpCounter()
    if torch.device(trainer.device).type != "cuda":
        with counter:
            trainer._train_epoch(1, iter([batch] * steps))
        return counter
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with counter:
                trainer._train_epoch(1, iter([batch] * steps))
        finally:
            torch.cuda.set_sync_debug_mode(0)
    counter.cuda_syncs = sum("synchroniz" in str(w.message) for w in caught)
    return counter


def step_anatomy(preset, batch=4, seconds=4.0, steps=2, device="cpu", amp="fp32"):
    """Per-step operator, cast and sync counts of ``preset``'s training step."""
    device = torch.device(device)
    trainer = make_trainer(preset, device, amp)
    data = synthetic_batch(trainer.text_encoder, batch, seconds, device)
    count_steps(trainer, data, 1)  # warm-up: lazy initialisation (optimiser state, cuDNN plans)
    once, twice = count_steps(trainer, data, steps), count_steps(trainer, data, 2 * steps)
    syncs = twice.syncs.copy()
    syncs.subtract(once.syncs)
    per_step = {k: v / steps for k, v in syncs.items() if v}
    return {
        "preset": preset,
        "ops_per_step": (twice.ops - once.ops) / steps,
        "casts_per_step": (twice.casts - once.casts) / steps,
        "syncs_per_step": sum(per_step.values()),
        "sync_sources": per_step,
        **({"cuda_syncs_per_step": (twice.cuda_syncs - once.cuda_syncs) / steps} if device.type == "cuda" else {}),
    }


def cast_count(preset, batch=2, seconds=2.0):
    """``aten::_to_copy`` per step under bf16 autocast on the CPU (counts only: CPU bf16 is slow)."""
    model, _, data = preset_model(preset, batch, seconds)
    criterion = CTCLoss()
    counts = []
    for _ in range(2):
        counter = OpCounter()
        with counter, torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = model(**data)
            loss = criterion(**data, **outputs)["loss"]
        with counter:
            loss.backward()
        counts.append(counter.casts)
    return counts[-1]


def graph_breaks(preset, batch=2, seconds=2.0):
    """Graph breaks of the model's forward (frontend to log-probs, in training mode), as
    ``torch._dynamo.explain`` finds them. The CTC loss is left out: its output shape depends on the
    targets (``aten._ctc_loss``), so it always breaks a graph and stays eager after the model."""
    import torch._dynamo

    model, _, data = preset_model(preset, batch, seconds)

    def forward(audio, audio_length):
        return model(audio=audio, audio_length=audio_length)["log_probs"]

    allow_rnn_capture(model)  # as CTCModel.compile_blocks does
    torch._dynamo.reset()
    explained = torch._dynamo.explain(forward)(data["audio"], data["audio_length"])
    reasons = []
    for b in explained.break_reasons:
        text = str(getattr(b, "reason", b))
        explanation = [line.strip() for line in text.splitlines() if line.strip().startswith("Explanation:")]
        reasons.append((explanation[0] if explanation else text.splitlines()[0])[:200])
    return explained.graph_break_count, reasons


def compiled_backward(preset, amp="fp32", batch=2, seconds=1.0, patch=None):
    """The model's forward compiled whole (``torch.compile`` with the ``aot_eager`` backend: dynamo's
    graphs, and AOTAutograd's joint forward and backward graphs traced as inductor would receive them,
    without generating code), the CTC loss eager after it (its output shape depends on the targets),
    then ``backward``; under ``amp`` ("fp32", or "bf16" with CPU autocast). AOTAutograd derives each
    backward graph from one forward graph, so one forward graph is one backward graph too.

    Returns ``(graphs, bad)``: the number of graphs dynamo compiled (1: no break anywhere in the step
    but the loss) and the parameters that eager gives a gradient but the compiled step gives none or a
    non-finite one. ``patch(model)``, if given, changes the built model first (the tests break it)."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounterWithBackend

    if amp not in ("fp32", "bf16"):
        raise ValueError(f"amp must be 'fp32' or 'bf16', got {amp!r}")
    model, _, data = preset_model(preset, batch, seconds)
    if patch is not None:
        patch(model)
    criterion = CTCLoss()

    def step(forward):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            outputs = forward(data["audio"], data["audio_length"])
        criterion(**data, **outputs)["loss"].backward()
        return {name for name, p in model.named_parameters() if p.grad is not None}

    def forward(audio, audio_length):
        return model(audio=audio, audio_length=audio_length)

    expected = step(forward)
    allow_rnn_capture(model)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    got = step(torch.compile(forward, backend=counter))
    params = dict(model.named_parameters())
    bad = sorted(n for n in expected if n not in got or not torch.isfinite(params[n].grad).all())
    return counter.frame_count, bad


def shapes_per_epoch(max_batch_seconds=160.0, durations=None, seed=0, length_grid=None):
    """Distinct ``[batch, samples]`` input shapes in one epoch of a ``LengthBucketSampler`` (with its
    ``length_grid``, padded as collate_fn pads) and the share of padding, over ``durations`` (seconds)
    or 1,500 draws from a log-normal fit of mini LibriSpeech's utterance lengths (median 14 s, 2 to 35 s)."""
    from hw_asr.batch_sampler import LengthBucketSampler

    if durations is None:
        rng = random.Random(seed)
        durations = [min(35.0, max(2.0, rng.lognormvariate(math.log(14.0), 0.35))) for _ in range(1500)]

    class Index:
        index = [{"duration": d} for d in durations]

        def __len__(self):
            return len(self.index)

    sampler = LengthBucketSampler(Index(), max_batch_seconds=max_batch_seconds, length_grid=length_grid)
    shapes, real, padded = set(), 0.0, 0.0
    for b in sampler.all_batches():
        longest = round(sampler.padded(max(durations[i] for i in b)) * 16000)
        shapes.add((len(b), longest))
        real += sum(durations[i] for i in b)
        padded += len(b) * longest / 16000
    return {"batches": len(sampler.all_batches()), "shapes": len(shapes), "padding": 1 - real / padded}


def optimizer_step_ms(preset, fused, repeats=20, pairs=2):
    """Median time of one AdamW update of every parameter of ``preset`` (random gradients), torch's
    default implementation vs the fused kernel, in alternating runs (milliseconds)."""
    import statistics
    import time

    cfg = load_config(ARCH_DIR / f"{preset}.json")
    encoder = build_text_encoder(cfg)
    times = []
    for _ in range(pairs):
        torch.manual_seed(0)
        model = build_model(cfg, n_tokens=len(encoder))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused or None)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        optimizer.step()  # state allocated
        for _ in range(repeats):
            start = time.perf_counter()
            optimizer.step()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=PRESETS)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="fp32", choices=["fp32", "fp16", "bf16"], help="the Trainer's amp (CUDA)")
    parser.add_argument(
        "--no-graph-breaks", action="store_true", help="skip torch._dynamo.explain and the compiled backward (slow)"
    )
    parser.add_argument("--no-casts", action="store_true", help="skip the CPU bf16 autocast cast count")
    parser.add_argument(
        "--optimizer", action="store_true", help="only time AdamW's update per preset: torch's default vs fused"
    )
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.optimizer:
        for preset in args.presets:
            default, fused = optimizer_step_ms(preset, False), optimizer_step_ms(preset, True)
            print(f"{preset:<20} AdamW update: default {default:.1f} ms, fused {fused:.1f} ms ({default / fused:.2f}x)")
        return None
    rows = []
    print(
        f"{'preset':<20} {'ops/step':>9} {'casts/step (bf16)':>18} {'syncs/step':>11} {'graph breaks':>13}"
        f" {'fwd+bwd graphs (bf16)':>22}"
    )
    for preset in args.presets:
        row = step_anatomy(preset, args.batch, args.seconds, args.steps, args.device, args.amp)
        if not args.no_casts:
            row["bf16_casts_per_step"] = cast_count(preset)
        if not args.no_graph_breaks:
            row["graph_breaks"], row["break_reasons"] = graph_breaks(preset)
            row["fwd_bwd_graphs_bf16"], row["missing_gradients"] = compiled_backward(preset, "bf16")
        rows.append(row)
        print(
            f"{preset:<20} {row['ops_per_step']:>9.0f} {row.get('bf16_casts_per_step', float('nan')):>18.0f} "
            f"{row['syncs_per_step']:>11.1f} {row.get('graph_breaks', float('nan')):>13}"
            f" {row.get('fwd_bwd_graphs_bf16', float('nan')):>22}"
        )
        if row.get("missing_gradients"):
            print(f"    compiled step without a finite gradient for: {', '.join(row['missing_gradients'][:5])}")
        if "cuda_syncs_per_step" in row:
            n = row["cuda_syncs_per_step"]
            print(f"    CUDA's own count (set_sync_debug_mode): {n:.1f} synchronising calls/step")
        for source, n in sorted(row["sync_sources"].items(), key=lambda kv: -kv[1]):
            print(f"    sync {n:>5.1f}/step  {source}")
        for reason in row.get("break_reasons", [])[:5]:
            print(f"    break  {reason}")
    shapes = {str(grid): shapes_per_epoch(length_grid=grid) for grid in (None, 1.05, 1.1)}
    for grid, row in shapes.items():
        print(
            f"LengthBucketSampler, 160 s batches, 1,500 utterances, length_grid {grid}: {row['batches']} batches, "
            f"{row['shapes']} distinct input shapes per epoch, {100 * row['padding']:.1f}% padding"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "shapes": shapes}, indent=2) + "\n")
    return rows, shapes


if __name__ == "__main__":
    main()
