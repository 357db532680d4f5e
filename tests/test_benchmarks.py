"""The benchmarks' own logic: the precision / MFU FLOP count, device table and refusals;
the pipeline benchmark's timing."""

import time

import pytest
import torch

from benchmarks import attention, precision
from hw_asr.builder import build_model, build_text_encoder
from hw_asr.config import load_config
from hw_asr.loss import CTCLoss
from hw_asr.trainer.host_memory import keep_freed_memory


def test_step_flops_count_forward_and_backward_and_scale_with_batch():
    cfg = load_config(precision.ARCH_DIR / "conformer_s.json")
    n_tokens = len(build_text_encoder(cfg))
    torch.manual_seed(0)
    model = build_model(cfg, n_tokens=n_tokens)
    f, frames = {}, None
    for b in (1, 2, 3):
        batch, frames = precision.make_batch(model, n_tokens, b, 1.0, torch.device("cpu"))
        f[b] = precision.count_step_flops(model, CTCLoss(), batch)
    # per utterance plus the relative-position projection, computed once per batch
    assert f[3] - f[2] == f[2] - f[1] > 0 and f[1] > f[2] - f[1]
    f1 = f[1]
    assert all(p.grad is None for p in model.parameters()), "counting leaves no gradients behind"
    # a training step is about 6 FLOPs per parameter per output frame (forward 2, backward 4);
    # the subsampling convolutions run on 4x the frames, so somewhat more -- forward alone would be ~1/3
    n = sum(p.numel() for p in model.parameters())
    assert 1.0 < f1 / (6 * n * frames) < 3.0


def test_benchmark_runs_on_cpu_and_refuses_autocast_there(capsys):
    rows = precision.main(
        [
            "--preset",
            "conformer_s",
            "--device",
            "cpu",
            "--batch",
            "1",
            "--seconds",
            "1",
            "--warmup",
            "1",
            "--steps",
            "2",
            "--modes",
            "fp32",
            "--peak-tflops",
            "1",
        ]
    )[0]
    assert [r["mode"] for r in rows] == ["fp32"] and rows[0]["step_s"] > 0 and rows[0]["non_finite_steps"] == 0
    assert rows[0]["mfu"] == pytest.approx(rows[0]["tflops_per_s"])  # against a 1 TFLOPS peak
    assert "| fp32 |" in capsys.readouterr().out
    for mode in ("bf16", "fp16+compile", "tf32"):
        with pytest.raises(SystemExit, match="needs CUDA"):
            precision.main(["--preset", "conformer_s", "--device", "cpu", "--modes", mode])
    with pytest.raises(SystemExit, match="expected one of"):
        precision.main(["--preset", "conformer_s", "--device", "cpu", "--modes", "int8"])
    with pytest.raises(SystemExit, match="no preset"):
        precision.main(["--preset", "conformer_xxl", "--device", "cpu"])


def test_peak_table():
    assert precision.device_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert precision.device_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert precision.device_peak_tflops("NVIDIA H200") == 989.0
    assert precision.device_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert precision.device_peak_tflops("NVIDIA L40S") == 362.0
    assert precision.device_peak_tflops("NVIDIA GeForce GTX 1080") is None


def test_saved_bytes_counts_each_activation_storage_once_and_skips_weights():
    weight = torch.randn(8, 16, requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    y, saved = attention.saved_bytes(lambda: torch.tanh(x @ weight), exclude=[weight])
    # the matmul keeps x (4x8) and the weight (skipped); tanh keeps its output (4x16)
    assert saved == (4 * 8 + 4 * 16) * 4
    _, saved = attention.saved_bytes(lambda: x.expand(1000, 4, 8).pow(2).sum(), exclude=[])
    assert saved == 4 * 8 * 4  # the expanded view holds x's storage, not 1000 copies


def test_attention_benchmark_agrees_with_the_materialised_baseline_and_keeps_less_for_backward(capsys):
    rows = attention.main(
        ["--dim", "32", "--heads", "2", "--batch", "2", "--seconds", "4", "--warmup", "0", "--steps", "1"]
    )
    assert rows["max_abs_difference"] < 1e-5
    assert rows["frames"] == 100
    assert rows["saved_ratio"] < 0.9  # the softmax output is no longer kept
    assert "sdpa / materialised" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        attention.main(["--amp", "bf16"])


def test_flop_counter_sees_the_fused_attention():
    """MFU counts the attention: the SDPA path must count what the explicit matrix products do."""
    fused = attention.RelPositionMultiHeadAttention(32, 2)
    explicit = attention.MaterialisedRelAttention(32, 2)
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(2, 50, 32, requires_grad=True)
    mask = torch.arange(50)[None] < torch.tensor([[50], [30]])
    counts = []
    for module in (fused, explicit):
        counter = precision.FlopCounterMode(display=False)
        with counter:
            module(x, mask).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


def test_pipeline_benchmark_times_one_logging_window_by_default(capsys, monkeypatch):
    from benchmarks import pipeline

    monkeypatch.chdir(pipeline.Path(pipeline.__file__).resolve().parents[1])  # the config's relative paths
    common = ["-c", "configs/one_batch_test.json", "--repeats", "1"]
    figures = pipeline.main(common + ["trainer.log_step=2", "trainer.visualize=comet"])  # --steps: log_step + 1
    out = capsys.readouterr()
    assert figures["ratio"] > 0 and figures["pair_median"] > 0
    assert figures["timed_logs"] == [2] and figures["timed_media"] == [2]
    assert "step 3 (with step 2's logging and comet media)" in out.out
    assert "no logging step" not in out.err and 0 < figures["data_wait_share"] < 1
    # the allocator setting train.py would use on the CPU, unless the config turns it off
    kept = keep_freed_memory()  # True wherever glibc's mallopt is there, as on CI
    assert figures["keep_freed_memory"] is kept and f"trainer.keep_freed_memory {'on' if kept else 'off'}" in out.out
    # step 2 logs after the last timed stamp
    figures = pipeline.main(
        common + ["--steps", "2", "trainer.log_step=2", "trainer.visualize=null", "trainer.keep_freed_memory=false"]
    )
    out = capsys.readouterr()
    assert figures["timed_logs"] == [] and "no logging step falls in the timed steps 2..2" in out.err
    assert figures["keep_freed_memory"] is False and "trainer.keep_freed_memory off" in out.out


def test_pipeline_lockstep_leaves_the_bare_steps_out_of_the_trainers_time(monkeypatch):
    """Lock-step: the bare loop's step k runs right after the Trainer's step k; a bare step made
    1 s slower must show in the bare loop's time and not in the Trainer's."""
    from benchmarks import pipeline

    monkeypatch.chdir(pipeline.Path(pipeline.__file__).resolve().parents[1])
    build = pipeline.BareLoop.__init__

    def slow_bare_loop(self, *args):
        build(self, *args)
        step = self.optimizer.step
        self.optimizer.step = lambda: (time.sleep(1.0), step())[1]

    monkeypatch.setattr(pipeline.BareLoop, "__init__", slow_bare_loop)
    figures = pipeline.main(
        [
            "-c",
            "configs/one_batch_test.json",
            "--repeats",
            "1",
            "--steps",
            "3",
            "trainer.log_step=2",
            "trainer.visualize=null",
        ]
    )
    assert figures["bare_s"] > 1.0
    assert figures["full_s"] < figures["bare_s"] - 0.5


def test_hotword_benchmark_counts_names_found_and_splits_the_wer():
    from benchmarks.hotwords import score

    refs = ["becky met dobbin", "becky and becky", "no names here"]
    hyps = ["becky met dobin", "becky and becky becky", "no name here"]
    r = score(refs, hyps, {"becky", "dobbin"})
    # 4 name occurrences in the references; found: becky (1), becky x2 (capped at 2), dobbin missed
    assert (r["names"], r["recall"]) == (4, 0.75)
    assert (r["utts_with_names"], r["utts_rest"]) == (2, 1)
    assert r["wer_with_names"] == pytest.approx((1 + 1) / 6)  # one substitution, one insertion over 6 words
    assert r["wer_rest"] == pytest.approx(1 / 3)


def test_timestamp_benchmark_knows_where_words_are_and_scores_an_oracle_within_a_frame():
    import numpy as np

    from benchmarks import timestamps
    from hw_asr.model import LogMelFrontend
    from hw_asr.text_encoder import CTCCharTextEncoder

    sr = 16000
    t = np.arange(int(0.25 * sr)) / sr
    word = np.concatenate([np.zeros(1600), 0.5 * np.sin(2 * np.pi * 300 * t), np.zeros(3200)]).astype(np.float32)
    assert abs(len(timestamps.trim(word, sr)) - len(t)) <= 0.005 * sr  # the silence around a word goes
    words = [("cat", word), ("dog", word * 0.3), ("bird", word)]
    rng = np.random.default_rng(0)
    audio, truth = timestamps.build_utterance(words, rng, sr, gap=(0.1, 0.2), noise=0.0)
    assert [w for w, _, _ in truth] == ["cat", "dog", "bird"]
    assert truth[0][1] == 0.3 and abs(len(audio) / sr - truth[-1][2] - 0.3) < 1e-9
    for (_, start, end), (_, next_start, _) in zip(truth, truth[1:] + [(None, None, None)]):
        assert abs(end - start - 0.25) <= 0.005
        assert np.abs(audio[int(start * sr) : int(end * sr)]).max() > 0.1
        if next_start is not None:
            assert 0.1 <= next_start - end <= 0.2
            assert np.abs(audio[int(end * sr) + 1 : int(next_start * sr) - 1]).max() == 0

    encoder = CTCCharTextEncoder("en")

    class Oracle(torch.nn.Module):
        """Log-probs of a model that emits each word's letters evenly over the word's true frames
        and a space in the middle of each gap."""

        frontend = LogMelFrontend(n_mels=40)

        def forward(self, audio, audio_length):
            frames = int(self.frontend.output_lengths(audio_length)[0]) // 4
            lp = torch.full((1, frames, len(encoder)), -20.0)
            lp[0, :, 0] = 0.0
            for w, start, end in truth:
                first, last = round(start / 0.04), round(end / 0.04) - 1
                ids = encoder.encode(w)
                for k, tok in enumerate(ids):
                    f = first + round(k * (last - first) / max(len(ids) - 1, 1))
                    lp[0, f, 0], lp[0, f, tok] = -20.0, 0.0
            space = encoder.encode(" ")[0]
            for (_, _, end), (_, next_start, _) in zip(truth, truth[1:]):
                f = round((end + next_start) / 2 / 0.04)
                lp[0, f, 0], lp[0, f, space] = -20.0, 0.0
            return {"log_probs": lp.log_softmax(-1), "log_probs_length": torch.tensor([frames])}

    starts, ends, refs, hyps, unaligned, frame_s = timestamps.measure(Oracle(), encoder, [(audio, truth)], sr)
    assert frame_s == 0.04 and unaligned == 0 and hyps == refs == ["cat dog bird"]
    assert len(starts) == len(ends) == 3
    assert max(abs(e) for e in starts + ends) <= 1.0
    s = timestamps.summary(starts)
    assert s["within_1"] == 1.0 and s["mean_abs"] <= 1.0


def test_gpu_checks_refuses_an_unknown_part_before_it_touches_the_gpu(tmp_path):
    import subprocess

    from tests.conftest import REPO

    run = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_checks.sh"), str(tmp_path), "syncs", "warp"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "unknown part 'warp'" in run.stdout and "learning" in run.stdout and "plateau" in run.stdout
    assert "nvidia-smi" not in run.stdout + run.stderr  # refused before any GPU work started
