"""Faults, bad input and unsafe files: nothing is lost, nothing dies mid-epoch, no code runs."""

import json
import math
import os
import pickle
import random
import subprocess
import sys
import time

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import train as train_script
from hw_asr.builder import build_dataloader
from hw_asr.checkpoint import CheckpointError, load_checkpoint
from hw_asr.config import ConfigError
from hw_asr.datasets import ManifestDataset
from hw_asr.loss import CTCLoss
from hw_asr.metric import CERMetric, WERMetric, calc_cer, calc_wer
from hw_asr.text_encoder import CTCCharTextEncoder
from hw_asr.trainer.trainer import NonFiniteLossError, Trainer
from tests.conftest import REPO, tone
from tests.test_training import TINY, assert_same_weights, run_train, weights

EN = CTCCharTextEncoder()


# ---- a bad-input corpus ------------------------------------------------------------------


def build_bad_corpus(root):
    """Returns (manifest path, {line number: expected outcome}).

    Outcomes: "kept" (loads as is), "skipped" (left out of the index, with a warning),
    "replaced" (indexed, fails to decode, replaced by the next file and counted).
    """
    wav = root / "wav"
    wav.mkdir(parents=True)
    sr = 16000
    rows, expected = [], {}

    def add(name, text, outcome, write=None, raw_line=None):
        if write is not None:
            write(wav / name)
        line = raw_line if raw_line is not None else json.dumps({"audio_filepath": f"wav/{name}", "text": text})
        rows.append(line if isinstance(line, bytes) else line.encode("utf-8"))
        expected[len(rows)] = outcome

    def sound(seconds=0.4, rate=sr, subtype="PCM_16", channels=1, fmt=None, fill=None):
        def write(path):
            x = tone(seconds, rate, channels=channels)
            if fill is not None:
                x[len(x) // 2] = fill
            sf.write(path, x, rate, subtype=subtype, format=fmt)

        return write

    def truncated(fmt):
        def write(path):
            sound(0.8, fmt=fmt)(path)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])

        return write

    add("ok.wav", "a good file", "kept", sound())
    add("pcm8.wav", "eight bit audio", "kept", sound(subtype="PCM_U8"))
    add("pcm24.wav", "twenty four bit", "kept", sound(subtype="PCM_24"))
    add("float.wav", "float samples", "kept", sound(subtype="FLOAT"))
    add("stereo.wav", "two channels", "kept", sound(channels=2))
    add("rate8k.wav", "eight kilohertz", "kept", sound(rate=8000))
    add("rate44k.flac", "forty four point one", "kept", sound(rate=44100, fmt="FLAC"))
    add("mixed.wav", "MiXeD Case, with Punctuation!?", "kept", sound())
    add("ligature.wav", "\ufb01ne \u201cquoted\u201d words", "kept", sound())  # NFKC: "fine"
    add("truncated.wav", "a truncated wav", "kept", truncated("WAV"))  # header says what is there
    add("truncated.flac", "a truncated flac", "replaced", truncated("FLAC"))
    add("nan.wav", "not a number", "replaced", sound(subtype="FLOAT", fill=np.nan))
    add("inf.wav", "infinite sample", "replaced", sound(subtype="FLOAT", fill=np.inf))
    add("corrupt.wav", "garbage bytes", "skipped", lambda p: p.write_bytes(b"RIFF\x00\x00WAVEfmt garbage"))
    add("empty.wav", "no samples", "skipped", lambda p: sf.write(p, np.zeros(0, np.float32), sr))
    add(
        "hour.wav",
        "an hour long",
        "skipped",
        lambda p: sf.write(p, np.zeros(3600 * 8000, np.int16), 8000, subtype="PCM_U8"),
    )
    add("digits.wav", "room 101", "skipped", sound())
    add("unicode.wav", "naïve café", "skipped", sound())
    add("emptytext.wav", "  ", "skipped", sound())
    add("missing.wav", "no such file", "skipped")
    add("ok.wav", "the same file again", "skipped")  # duplicated id
    add("x", "", "skipped", raw_line=b'{"audio_filepath": "wav/ok2.wav", "text": "caf\xe9"}')  # not UTF-8
    add("x", "", "skipped", raw_line='{"audio_filepath": "wav/ok.wav", "te')  # truncated line
    add("x", "", "skipped", raw_line='["a", "list"]')
    manifest = root / "manifest.jsonl"
    manifest.write_bytes(b"\n".join(rows) + b"\n")
    return manifest, expected


def test_bad_input_corpus_outcomes(tmp_path, caplog):
    manifest, expected = build_bad_corpus(tmp_path)
    ds = ManifestDataset(manifest, text_encoder=EN, max_audio_length=20.0)
    kept_lines = {int(r["where"].rsplit(":", 1)[1]) for r in ds.index}
    skipped_lines = {int(w.split(" ")[0].rsplit(":", 1)[1]) for w, _ in ds.skipped}
    assert kept_lines | skipped_lines | {n for n, o in expected.items() if o == "skipped"} == set(expected)
    for line, outcome in expected.items():
        if outcome == "skipped":
            assert line not in kept_lines, f"line {line} should be left out"
        else:
            assert line in kept_lines, f"line {line} should be indexed"
    # the hour-long file is filtered by max_audio_length, not reported as bad
    assert len(ds.skipped) == sum(o == "skipped" for o in expected.values()) - 1
    for where, reason in ds.skipped:
        assert str(manifest) in where and reason, "every skip names the file:line and a reason"

    ds.replace_failed_files = True  # training's rule (builder.build_dataset sets it for the train split)
    loader = build_dataloader({"data": {"train": {"batch_size": 4}}}, "train", ds, train=False)
    failures, seen = [], 0
    for batch in loader:
        assert torch.isfinite(batch["audio"]).all() and batch["audio"].dtype == torch.float32
        failures += batch["load_failures"]
        seen += len(batch["text"])
    assert seen == len(ds)
    replaced = {int(r["where"].rsplit(":", 1)[1]) for r in ds.index if r["path"] in failures}
    assert replaced == {n for n, o in expected.items() if o == "replaced"}
    texts = {r["text"] for r in ds.index}
    assert {"mixed case with punctuation", "fine quoted words"} <= texts


def test_training_survives_the_bad_corpus(tmp_path):
    manifest, expected = build_bad_corpus(tmp_path / "data")
    run_dir = run_train(
        tmp_path,
        *TINY,
        "trainer.epochs=1",
        "trainer.len_epoch=6",
        "trainer.grad_accum_steps=1",
        f"data.train.datasets.0.args.manifest_path={manifest}",
        "data.train.datasets.0.args.limit=null",
        "data.train.datasets.0.args.max_audio_length=20",
        "data.train.batch_size=4",
    )
    assert (run_dir / "checkpoint-epoch1.pth").is_file()
    log = (run_dir / "train.log").read_text()
    assert "failed to load and were replaced" in log


# ---- numerical guards and out-of-memory ---------------------------------------------------


def nan_loss_when(condition):
    """A CTCLoss.forward that returns NaN (with a gradient: backward runs) when ``condition(call)``."""
    original = CTCLoss.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        out = original(self, *args, **kwargs)
        return {"loss": out["loss"] * float("nan")} if condition(calls["n"]) else out

    return forward


def test_nonfinite_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(CTCLoss, "forward", nan_loss_when(lambda n: n % 3 == 0))
    run_dir = run_train(tmp_path, *TINY, "trainer.grad_accum_steps=1")
    state = load_checkpoint(run_dir / "checkpoint-epoch2.pth")
    assert state["step"] == 8
    # calls 1-4 are epoch 1's steps, 5-6 its validation, 7-10 epoch 2's steps: steps 3 and 7 are NaN
    log = (run_dir / "train.log").read_text()
    assert "1 optimiser step(s) up to step 4 skipped: non-finite loss or gradient" in log
    assert "1 optimiser step(s) up to step 8 skipped" in log
    assert "2 optimiser steps were skipped for non-finite loss or gradients" in log
    rows = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert all(math.isfinite(r["loss"]) for r in rows), "a skipped step's loss is left out of the mean"
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()), (
        "a NaN gradient never reached the weights"
    )


def test_run_stops_after_k_nonfinite_steps_with_last_good_weights(tmp_path, monkeypatch):
    good = {}
    original_step = Trainer._optimizer_step

    def remember(self, ok):
        out = original_step(self, ok)
        if self.step == 2:
            good.update({k: v.clone() for k, v in self.model.state_dict().items()})
        return out

    monkeypatch.setattr(CTCLoss, "forward", nan_loss_when(lambda n: n > 2))  # every loss from step 3 on
    monkeypatch.setattr(Trainer, "_optimizer_step", remember)
    # checked at logging steps (log_step 2): steps 3 to 6 are 4 in a row at step 6
    with pytest.raises(NonFiniteLossError, match="4 optimiser steps in a row") as err:
        run_train(
            tmp_path,
            *TINY,
            "trainer.grad_accum_steps=1",
            "trainer.max_nonfinite_steps=3",
            "trainer.epochs=5",
            "lr_scheduler.args.total_steps=20",
        )
    ckpt = next(tmp_path.glob("*/checkpoint-nonfinite.pth"))
    assert str(ckpt) in str(err.value) and load_checkpoint(ckpt)["step"] == 6
    assert_same_weights(load_checkpoint(ckpt)["model"], good)


def test_a_fused_optimiser_skips_a_nonfinite_step_without_the_host_reading_it(tmp_path, monkeypatch):
    monkeypatch.setattr(CTCLoss, "forward", nan_loss_when(lambda n: n == 3))
    run_dir = run_train(
        tmp_path,
        *TINY,
        "trainer.grad_accum_steps=1",
        "trainer.epochs=1",
        "trainer.log_step=100",
        'optimizer={"type": "AdamW", "args": {"lr": 0.01, "fused": true}}',
    )
    state = load_checkpoint(run_dir / "checkpoint-epoch1.pth")
    # the optimiser's step count: 4 steps, the NaN one not counted (the fused kernel skipped it)
    assert int(state["optimizer"]["state"][0]["step"]) == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert "1 optimiser step(s) up to step 4 skipped" in (run_dir / "train.log").read_text()


def test_out_of_memory_skips_the_batch_and_goes_on(tmp_path, monkeypatch):
    original = Trainer._forward_backward
    calls = {"n": 0}

    def oom_once(self, batch, sync=True):
        calls["n"] += 1
        if calls["n"] == 2:
            model_forward = self.model.forward

            def raise_oom(*a, **k):
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

            self.model.forward = raise_oom
            try:
                return original(self, batch, sync)
            finally:
                self.model.forward = model_forward
        return original(self, batch, sync)

    monkeypatch.setattr(Trainer, "_forward_backward", oom_once)
    run_dir = run_train(tmp_path, *TINY, "trainer.grad_accum_steps=1")
    log = (run_dir / "train.log").read_text()
    assert "out of memory on a batch of 2 utterances" in log  # the second batch: 5 utterances in batches of 3
    assert "1 batches were skipped for running out of device memory" in log
    assert (run_dir / "checkpoint-epoch2.pth").is_file()


# ---- safe loading --------------------------------------------------------------------------


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "config": {}, "payload": _RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(evil)
    assert not marker.exists(), "the pickled code did not run"
    # a plain pickle of the same payload is also refused
    with open(tmp_path / "evil2.pth", "wb") as f:
        pickle.dump({"model": _RunsCode(marker)}, f)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil2.pth")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused|not a readable"):
        train_script.main(["-r", str(evil)])
    assert not marker.exists()


def test_resume_with_a_config_whose_model_does_not_fit_is_refused_before_anything_is_written(tmp_path):
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1")
    written = (run_dir / "config.json").read_text()
    with pytest.raises(
        CheckpointError,
        match=r"its weights do not fit .* \(first: convs\..*It was trained as "
        r"BaselineModel, this config builds DeepSpeech2.*trainer.init_weights=",
    ):
        train_script.main(
            [
                "-r",
                str(run_dir / "checkpoint-epoch1.pth"),
                "-c",
                str(REPO / "configs" / "one_batch_test.json"),
                "trainer.visualize=null",
            ]
        )
    assert (run_dir / "config.json").read_text() == written
    # a change that keeps every tensor's name and shape resumes
    train_script.main(["-r", str(run_dir / "checkpoint-epoch1.pth"), "trainer.epochs=2", "arch.args.hidden=32"])
    with pytest.raises(CheckpointError, match=r"differ in shape \(first: "):
        train_script.main(["-r", str(run_dir / "checkpoint-epoch1.pth"), "trainer.epochs=2", "arch.args.hidden=48"])


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1")
    data = (run_dir / "checkpoint-epoch1.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "notes.pth").write_text("epoch 1 went well\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="notes.pth: not a checkpoint: .*begins b'epoc'"):
        load_checkpoint(tmp_path / "notes.pth")
    with pytest.raises(CheckpointError, match="empty.pth: not a checkpoint: .*empty"):
        load_checkpoint(tmp_path / "empty.pth")


# ---- fail fast -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.type=Adamm", "optimizer.type: unknown type 'Adamm'"),
        ("arch.type=Quartznet", "arch.type: unknown type"),
        ("data.val.datasets.0.type=Manifest", "data.val.datasets.0.type"),
        ("data.train.datasets.0.args.manifest_path=nope.jsonl", "file not found: nope.jsonl"),
        (
            'augmentations={"wave": [{"type": "RandomApply", "args": {"augmentation": {"type": "Gian"}}}]}',
            "augmentations.wave.0.args.augmentation.type",
        ),
        ("trainer.init_weights=missing.pth", "init_weights: checkpoint not found"),
        ("data.val.datasets=[]", "data.val.datasets must be a non-empty list"),
        ('trainer.epochs="ten"', "trainer.epochs must be a whole number >= 1, got 'ten'"),
        ("trainer.log_step=0", "trainer.log_step must be a whole number >= 1, got 0"),
        ("trainer.keep_last=true", "trainer.keep_last must be a whole number >= 0 or null, got True"),
        ("trainer.grad_norm_clip=-1", "trainer.grad_norm_clip must be a positive number or null"),
        ("trainer.time_budget_s=0", "trainer.time_budget_s must be a positive number of seconds or null, got 0"),
        ("trainer.amp=bf61", "trainer.amp must be one of"),
        ("trainer.monitor=3", "trainer.monitor must be 'off' or"),
        ("trainer.device=gpu", "device 'gpu' is not a device: use auto, cpu, cuda or cuda:N"),
        ("trainer.epochz=3", "trainer.epochz: unknown key, did you mean 'epochs'?"),
        ("data.val.batchsize=3", "data.val.batchsize: unknown key, did you mean 'batch_size'?"),
        ('augmentation={"wave": []}', "config.augmentation: unknown key, did you mean 'augmentations'?"),
        ('augmentations={"spec": []}', "augmentations.spec: unknown key"),
        (
            "data.train.datasets.0.args.limt=3",  # a dataset's own arguments and those it passes to BaseDataset
            "data.train.datasets.0.args: unexpected argument 'limt' for ManifestDataset, did you mean 'limit'?",
        ),
        ("optimizer.args.weight_decy=0.1", "optimizer.args: unexpected argument 'weight_decy' for AdamW"),
        ('arch.args.frontend={"n_mel": 64}', "arch.args.frontend: unexpected argument 'n_mel' for LogMelFrontend"),
        ('arch.args.spec_augment={"freq_mask": 1}', "arch.args.spec_augment: unexpected argument 'freq_mask'"),
        (
            'arch.args.frontend={"type": "SpectrogramFrontend", "args": {"nfft": 400}}',
            "arch.args.frontend.args: unexpected argument 'nfft' for SpectrogramFrontend, did you mean 'n_fft'?",
        ),
    ],
)
def test_config_mistakes_fail_fast_before_anything_is_built(tmp_path, monkeypatch, override, message):
    import hw_asr.builder as builder
    import hw_asr.run as run

    def must_not_build(*a, **k):
        raise AssertionError("a dataset was built before the config was checked")

    monkeypatch.setattr(run, "build_dataset", must_not_build)  # where the run is assembled
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", ".")):
        run_train(tmp_path, override)
    assert time.perf_counter() - start < 2.0
    assert builder.validate_config  # the check lives in the builder


# ---- checkpoints: retention, resume from a folder, determinism ------------------------------


def test_keep_last_k_plus_best_and_resume_from_folder(tmp_path):
    run_dir = run_train(
        tmp_path,
        *TINY,
        "trainer.epochs=5",
        "trainer.keep_last=2",
        "trainer.len_epoch=2",
        "trainer.monitor=min val_loss",
    )
    names = sorted(p.name for p in run_dir.glob("*.pth"))
    assert names == ["checkpoint-epoch4.pth", "checkpoint-epoch5.pth", "model_best.pth"]
    (run_dir / ".checkpoint-epoch6.pth.tmp123").write_bytes(b"half a file")
    again = train_script.main(["-r", str(run_dir), "trainer.epochs=6"])
    assert again == run_dir and (run_dir / "checkpoint-epoch6.pth").is_file()
    assert not (run_dir / ".checkpoint-epoch6.pth.tmp123").exists()
    assert load_checkpoint(run_dir / "checkpoint-epoch6.pth")["epoch"] == 6


def test_cpu_runs_are_reproducible_step_for_step(tmp_path):
    a = run_train(tmp_path / "a", *TINY)
    b = run_train(tmp_path / "b", *TINY)
    assert_same_weights(weights(a / "checkpoint-epoch2.pth"), weights(b / "checkpoint-epoch2.pth"))
    losses = [[json.loads(line).get("loss") for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b)]
    assert losses[0] == losses[1] and any(v is not None for v in losses[0])


# ---- fault injection: SIGKILL at random moments ---------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(tmp_path):
    epochs = 40  # with the demo's DeepSpeech2, about 20 s of training: ten kills land before the end
    tiny_but_arch = [o for o in TINY if not o.startswith("arch")]
    common = [
        *tiny_but_arch,
        f"trainer.epochs={epochs}",
        "trainer.len_epoch=2",
        "trainer.grad_accum_steps=1",
        "trainer.keep_last=2",
        'lr_scheduler={"type": "WarmupLR", "args": {"warmup_steps": 3, '
        f'"decay": "cosine", "total_steps": {2 * epochs}}}}}',
    ]
    reference = run_train(tmp_path / "ref", *common)
    run_dir = tmp_path / "faulty" / "run"
    base_cmd = [sys.executable, "train.py"]
    start = [
        *base_cmd,
        "-c",
        str(REPO / "configs" / "one_batch_test.json"),
        f"trainer.save_dir={run_dir.parent}",
        "trainer.run_name=run",
        *common,
    ]
    rng = random.Random(1234)
    kills = 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    metrics = run_dir / "metrics.jsonl"

    def logged_epochs():
        return metrics.read_text().count('"split": "epoch"') if metrics.exists() else 0

    while kills < 10:
        has_ckpt = list(run_dir.glob("checkpoint-*.pth"))
        cmd = [*base_cmd, "-r", str(run_dir)] if has_ckpt else start
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a random moment: after 0-2 more logged epochs, then up to half a second more
        target = logged_epochs() + rng.randint(0, 2)
        deadline = time.time() + 120
        while logged_epochs() < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:
            break  # finished before the kill
        proc.kill()
        proc.wait()
        kills += 1
        for ckpt in run_dir.glob("checkpoint-*.pth"):
            load_checkpoint(ckpt)  # every checkpoint on disk is complete
    while not (run_dir / f"checkpoint-epoch{epochs}.pth").exists():
        cmd = [*base_cmd, "-r", str(run_dir)] if list(run_dir.glob("checkpoint-*.pth")) else start
        subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert kills == 10, "every kill landed before the run could finish"
    assert_same_weights(
        weights(reference / f"checkpoint-epoch{epochs}.pth"), weights(run_dir / f"checkpoint-epoch{epochs}.pth")
    )


# ---- metrics against jiwer --------------------------------------------------------------------

words = st.lists(st.sampled_from(["a", "b", "cat", "dog", "x"]), min_size=1, max_size=8).map(" ".join)
maybe_empty = st.lists(st.sampled_from(["a", "b", "cat", "dog", "x"]), max_size=8).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(words, maybe_empty), min_size=1, max_size=6))
def test_wer_cer_equal_jiwer_on_random_strings(pairs):
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    wer, cer = WERMetric(), CERMetric()
    half = len(pairs) // 2
    for m in (wer, cer):
        m.update(refs[:half], hyps[:half])
        m.update(refs[half:], hyps[half:])
    assert wer.result() == pytest.approx(jiwer.wer(refs, hyps))
    assert cer.result() == pytest.approx(jiwer.cer(refs, hyps))
    for r, h in pairs:
        assert calc_wer(r, h) == pytest.approx(jiwer.wer(r, h))
        assert calc_cer(r, h) == pytest.approx(jiwer.cer(r, h))
