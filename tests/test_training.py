import json
import signal

import pytest
import soundfile as sf
import torch

import train as train_script
from hw_asr import evaluation
from hw_asr.builder import build_lr_scheduler, build_model, build_optimizer, build_text_encoder, compile_options
from hw_asr.checkpoint import load_checkpoint
from hw_asr.config import ConfigError, load_config
from hw_asr.inference import allow_tf32
from hw_asr.text_encoder import CTCCharTextEncoder
from hw_asr.tools import plot_metrics
from hw_asr.trainer.checkpoints import load_matching_weights
from hw_asr.trainer.trainer import Trainer
from tests.conftest import REPO, SAMPLE_MANIFEST

TINY = [
    "arch.type=BaselineModel",
    'arch.args={"hidden": 32, "frontend": {"n_mels": 32}, "spec_augment": {"freq_masks": 1, "freq_width": 4, '
    '"time_masks": 1, "time_width": 5}}',
    "data.train.batch_size=3",
    "data.val.batch_size=4",
    "data.train.datasets.0.args.limit=5",
    "optimizer.args.lr=0.01",
    'lr_scheduler={"type": "OneCycleLR", "args": {"max_lr": 0.01, "total_steps": 8, "pct_start": 0.3}}',
    "trainer.len_epoch=4",
    "trainer.epochs=2",
    "trainer.log_step=2",
    "trainer.save_period=1",
    "trainer.grad_accum_steps=2",
    "trainer.monitor=off",
    "trainer.visualize=null",
]


def run_train(tmp_path, *overrides, config=REPO / "configs" / "one_batch_test.json", resume=None):
    args = ["-r", str(resume)] if resume else ["-c", str(config)]
    return train_script.main(args + [f"trainer.save_dir={tmp_path}", *overrides])


def epoch_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "epoch"]


def test_compiled_training_saves_plain_weights_and_resumes_uncompiled(tmp_path, monkeypatch):
    # the "eager" backend runs torch.compile's graph capture without a C++ toolchain
    calls, compile_fn = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(kw) or compile_fn(model, **kw))
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1", 'trainer.compile="eager"')
    # block by block: the baseline's conv, rnn and head (not its frontend), each with the config's options
    assert len(calls) == 3 and all(kw == {"dynamic": True, "backend": "eager"} for kw in calls)
    state = load_checkpoint(run_dir / "checkpoint-epoch1.pth")
    assert not any(k.startswith("_orig_mod.") for k in state["model"]), "checkpoint holds the plain model"
    rows = epoch_rows(run_dir)
    assert rows and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows)
    run_train(tmp_path, "trainer.epochs=2", "trainer.compile=false", resume=run_dir / "checkpoint-epoch1.pth")
    assert load_checkpoint(run_dir / "checkpoint-epoch2.pth")["epoch"] == 2
    assert compile_options(True) == {"dynamic": True}
    assert compile_options({"mode": "max-autotune", "dynamic": False}) == {
        "dynamic": False,
        "mode": "max-autotune",
    }
    with pytest.raises(train_script.ConfigError, match="trainer.compile"):
        compile_options(3)
    with pytest.raises(train_script.ConfigError, match="trainer.compile"):  # refused before anything is built
        run_train(tmp_path, *TINY, "trainer.compile=3")


@pytest.mark.parametrize(
    "key,value",
    [
        ("tf32", "1"),
        ("tf32", '"yes"'),
        ("sync_batchnorm", "2"),
        ("head_prior", '"yes"'),
        ("keep_freed_memory", '"auto"'),
    ],
)
def test_boolean_trainer_switches_refuse_other_values(tmp_path, key, value):
    with pytest.raises(train_script.ConfigError, match=f"trainer.{key} must be true, false or null"):
        run_train(tmp_path, *TINY, f"trainer.{key}={value}")


def test_allow_tf32_sets_matrix_products_and_convolutions_together():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for enabled in (True, False):
            allow_tf32(enabled)
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (enabled, enabled)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_one_batch_overfit(tmp_path):
    """The README's demo config: loss falls and greedy CER ends below 0.1."""
    run_dir = run_train(tmp_path, "trainer.epochs=4")
    rows = epoch_rows(run_dir)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] / 5
    assert rows[-1]["val_CER (argmax)"] < 0.1
    assert (run_dir / "model_best.pth").is_file() and (run_dir / "config.json").is_file()
    assert json.loads((run_dir / "config.json").read_text())["trainer"]["epochs"] == 4
    assert list((run_dir / "comet").glob("*.zip")), "comet-ml wrote an offline archive"
    plot_metrics.main([str(run_dir / "metrics.jsonl"), "-o", str(tmp_path / "curves.png")])
    assert (tmp_path / "curves.png").stat().st_size > 1000
    # word timestamps from the trained model: its words in order, inside the utterance, confident
    result = evaluation.main(["-r", str(run_dir), "-o", str(tmp_path / "words.json"), "--timestamps"])
    right = [r for r in result["utterances"] if r["pred_argmax"] == r["ground_truth"]]
    assert len(right) >= 6
    for row in right:
        words = row["words"]
        duration = sf.info(row["audio_path"]).duration
        assert [w["word"] for w in words] == row["ground_truth"].split()
        assert all(0 <= w["start"] < w["end"] <= duration + 0.05 for w in words)
        assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:]))
        assert all(0.3 < w["min_confidence"] <= w["confidence"] <= 1 for w in words)


def test_train_rows_report_audio_throughput_and_data_wait(tmp_path):
    """Each batch is the whole sample, so audio seconds per second / batches per second is its length."""
    run_dir = run_train(
        tmp_path,
        "data.train.datasets.0.args.limit=null",
        "data.train.batch_size=16",
        "arch.args.rnn_layers=1",
        "arch.args.rnn_hidden=32",
        "trainer.epochs=1",
        "trainer.len_epoch=4",
        "trainer.log_step=2",
        "trainer.visualize=null",
    )
    rows = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    sample = [
        SAMPLE_MANIFEST.parent / json.loads(line)["audio_filepath"] for line in SAMPLE_MANIFEST.read_text().splitlines()
    ]
    seconds = sum(sf.info(str(p)).frames for p in sample) / 16000
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert r["audio_s_per_s"] / r["batches_per_s"] == pytest.approx(seconds, rel=1e-6)
        assert 0 < r["data_wait_share"] < 1


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=atol, msg=k)


def test_resume_continues_the_same_curve(tmp_path):
    straight = run_train(tmp_path / "a", *TINY)
    half = run_train(tmp_path / "b", *TINY, "trainer.epochs=1")
    resumed = run_train(tmp_path / "b", "trainer.epochs=2", resume=half / "checkpoint-epoch1.pth")
    assert resumed == half
    assert_same_weights(weights(straight / "checkpoint-epoch2.pth"), weights(resumed / "checkpoint-epoch2.pth"))
    state = load_checkpoint(resumed / "checkpoint-epoch2.pth")
    assert state["step"] == 4 and state["epoch"] == 2  # 8 batches, accumulation 2


def interrupt_at_step(monkeypatch, step):
    """Runs stop as on SIGTERM after optimiser step ``step`` (the signal's handler, called in-process);
    returns the function that undoes it."""
    original = Trainer._optimizer_step

    def stopping(self, finite):
        out = original(self, finite)
        if self.step == step:
            self._on_signal(signal.SIGTERM, None)
        return out

    monkeypatch.setattr(Trainer, "_optimizer_step", stopping)
    return lambda: monkeypatch.setattr(Trainer, "_optimizer_step", original)


def test_signal_saves_and_resume_mid_epoch_matches(tmp_path, monkeypatch):
    straight = run_train(tmp_path / "a", *TINY)
    undo = interrupt_at_step(monkeypatch, 3)
    run_dir = run_train(tmp_path / "b", *TINY)
    ckpt = run_dir / "checkpoint-interrupted.pth"
    assert ckpt.is_file() and not (run_dir / "checkpoint-epoch2.pth").exists()
    assert load_checkpoint(ckpt)["epoch_batches"] == 2  # step 3 = the second step of epoch 2
    undo()
    run_train(tmp_path / "b", resume=ckpt)
    assert_same_weights(weights(straight / "checkpoint-epoch2.pth"), weights(run_dir / "checkpoint-epoch2.pth"))


def test_test_py_reproduces_validation_metrics(tmp_path):
    run_dir = run_train(tmp_path, *TINY)
    logged = epoch_rows(run_dir)[-1]
    out = tmp_path / "result.json"
    result = evaluation.main(["-r", str(run_dir / "checkpoint-epoch2.pth"), "-o", str(out), "-b", "3"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    val = result["splits"]["val"]["argmax"]
    assert val["WER"] == pytest.approx(logged["val_WER (argmax)"], abs=1e-9)
    assert val["CER"] == pytest.approx(logged["val_CER (argmax)"], abs=1e-9)
    assert 0 < val["CER"], "a half-trained tiny model makes errors, so the comparison means something"
    rows = result["utterances"]
    assert len(rows) == 8 and {"audio_path", "ground_truth", "pred_argmax"} <= rows[0].keys()
    assert "words" not in rows[0]
    timed = evaluation.main(["-r", str(run_dir / "checkpoint-epoch2.pth"), "-o", str(out), "--timestamps"])
    for row in timed["utterances"]:  # a half-trained model: whatever it says, its words are timed in order
        assert [w["word"] for w in row["words"]] == row["pred_argmax"].split()
        assert all(w["start"] < w["end"] for w in row["words"])
    with pytest.raises(ConfigError, match="--timestamps names decoder 'beam'"):
        evaluation.main(["-r", str(run_dir / "checkpoint-epoch2.pth"), "-o", str(out), "--timestamps", "beam"])

    folder = evaluation.main(
        [
            "-r",
            str(run_dir / "checkpoint-epoch2.pth"),
            "-o",
            str(tmp_path / "f.json"),
            "-t",
            str(SAMPLE_MANIFEST.parent / "audio"),
        ]
    )
    assert len(folder["utterances"]) == 16 and folder["decoders"]["argmax"]["WER"] >= 0


def test_init_weights_with_new_vocabulary_keeps_encoder_and_resets_head(tmp_path):
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1")
    ckpt = run_dir / "checkpoint-epoch1.pth"
    config = load_checkpoint(ckpt)["config"]
    ru = CTCCharTextEncoder("ru")
    torch.manual_seed(123)
    model = build_model(config, n_tokens=len(ru))
    fresh_head = model.head.weight.detach().clone()
    loaded, skipped = load_matching_weights(model, ckpt)
    assert set(skipped) == {"head.weight", "head.bias"}
    source = weights(ckpt)
    for k in loaded:
        torch.testing.assert_close(model.state_dict()[k], source[k])
    assert torch.equal(model.head.weight, fresh_head)
    assert model.head.weight.shape[0] == 34


def test_resume_refuses_a_missing_checkpoint(tmp_path):
    from hw_asr.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="not found"):
        train_script.main(["-r", str(tmp_path / "none.pth")])


def test_every_config_builds(tmp_path):
    """Each shipped config resolves: text encoder, model, optimiser and schedule."""
    # training configs: configs/*.json and configs/recipes/ (arch/ presets, eval/ and
    # ensemble/ configs are not complete training configs)
    from hw_asr.tools import train_sentencepiece

    paths = sorted((REPO / "configs").glob("*.json")) + sorted((REPO / "configs" / "recipes").glob("*.json"))
    assert len(paths) >= 24
    spm = None
    for path in paths:
        cfg = load_config(path)
        spm_args = cfg["text_encoder"]["args"] if cfg["text_encoder"]["type"] == "SentencePieceTextEncoder" else {}
        if spm_args and not (REPO / spm_args["model_path"]).is_file():  # built by train_sentencepiece (README)
            spm = spm or train_sentencepiece.main(
                ["-c", str(REPO / "configs" / "one_batch_test.json"), "--vocab-size", "40", "-o", str(tmp_path / "bpe")]
            )
            spm_args["model_path"] = str(spm)
        encoder = build_text_encoder(cfg)
        model = build_model(cfg, n_tokens=len(encoder))
        optimizer = build_optimizer(cfg, model.parameters())
        build_lr_scheduler(cfg, optimizer, total_steps=100)
        assert cfg["trainer"]["epochs"] > 0, path.name
        head_outputs = getattr(model.head, "out_channels", None) or model.head.out_features
        assert head_outputs == len(encoder), path.name
        if cfg["trainer"].get("head_prior"):  # the prior is set on the head's bias
            assert getattr(model.head, "bias", None) is not None, path.name
        for split, spec in cfg["data"].items():
            kinds = {d["type"] for d in spec["datasets"]}
            assert not ("golos" in path.name and kinds != {"GolosDataset"}), f"{path.name}: {split} is {kinds}"


def test_sentencepiece_run_and_test_py(tmp_path):
    from hw_asr.tools import train_sentencepiece

    spm = train_sentencepiece.main(
        [
            "-c",
            str(REPO / "configs" / "one_batch_test.json"),
            "--vocab-size",
            "40",
            "-o",
            str(tmp_path / "spm" / "bpe40"),
        ]
    )
    run_dir = run_train(
        tmp_path,
        *TINY,
        "trainer.epochs=1",
        f'text_encoder={{"type": "SentencePieceTextEncoder", "args": {{"model_path": "{spm}"}}}}',
    )
    ckpt = run_dir / "checkpoint-epoch1.pth"
    spm.unlink()  # the checkpoint alone must be enough
    state = load_checkpoint(ckpt)
    assert state["text_encoder"]["type"] == "SentencePieceTextEncoder"
    result = evaluation.main(["-r", str(ckpt), "-o", str(tmp_path / "r.json")])
    assert len(result["utterances"]) == 8


def test_eval_and_ensemble_configs_are_well_formed():
    from hw_asr.ensemble.build import validate

    for path in sorted((REPO / "configs" / "eval").glob("*.json")):
        cfg = load_config(path)
        assert list(cfg["data"]) == ["test"] and cfg["data"]["test"]["datasets"], path.name
    for path in sorted((REPO / "configs" / "ensemble").glob("*.json")):
        validate(load_config(path))


@pytest.mark.parametrize("media_step,expected", [(4, [2, 4, 8]), (0, []), (None, []), ("default", [2])])
def test_comet_media_every_media_step(tmp_path, monkeypatch, media_step, expected):
    # log_step 2: scalars at steps 2, 4, 6, 8; media at the first log step of each media_step window
    from unittest import mock

    from hw_asr.logger import writer

    steps = []
    monkeypatch.setattr(writer, "_make_comet", lambda *a: mock.MagicMock())  # a comet that records, offline
    monkeypatch.setattr(writer.Writer, "log_spectrogram", lambda self, step, *a: steps.append(step))
    extra = [] if media_step == "default" else [f"trainer.media_step={json.dumps(media_step)}"]
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=4", "trainer.visualize=comet", *extra)
    assert [
        r["step"]
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if r["split"] == "train"
    ] == [2, 4, 6, 8]
    assert steps == expected
    with pytest.raises(train_script.ConfigError, match="media_step"):
        run_train(tmp_path, *TINY, "trainer.media_step=-1")


def test_ctc_infeasible_counts_tokens_and_the_blanks_repeats_need():
    from hw_asr.loss import CTCLoss, ctc_infeasible

    # against the loss itself: CTC has a finite loss exactly when an alignment exists
    targets = torch.tensor([[1, 2, 3, 0], [1, 1, 2, 0], [2, 2, 2, 2], [3, 0, 0, 0]])
    lengths = torch.tensor([3, 3, 4, 1])
    for frames in range(1, 8):
        out = torch.full((4,), frames)
        log_probs = torch.randn(4, frames, 5).log_softmax(-1)
        flags = ctc_infeasible(targets, lengths, out)
        for b in range(4):
            loss = CTCLoss(zero_infinity=False)(
                log_probs[b : b + 1], out[b : b + 1], targets[b : b + 1], lengths[b : b + 1]
            )
            assert bool(flags[b]) == (not torch.isfinite(loss["loss"])), (b, frames)


def test_training_warns_once_when_ctc_cannot_align_the_transcripts(tmp_path):
    fast = (
        'arch={"type": "FastConformer", "args": {"dim": 32, "heads": 2, "layers": 1, "subsampling_channels": 8, '
        '"frontend": {"n_mels": 32}}}'
    )
    run_dir = run_train(tmp_path / "fast", *TINY, fast, "trainer.epochs=1")
    rows = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert rows and all(r["ctc_infeasible_share"] > 0.5 for r in rows)  # characters at 8x: 12.5 frames a second
    log = (run_dir / "train.log").read_text()
    assert log.count("CTC cannot align them") == 1 and "FastConformer" in log
    plain = run_train(tmp_path / "plain", *TINY, "trainer.epochs=1")
    rows = [r for r in map(json.loads, (plain / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert all(r["ctc_infeasible_share"] == 0 for r in rows)
    assert "CTC cannot align" not in (plain / "train.log").read_text()


def test_average_checkpoints_of_a_run(tmp_path, capsys):
    from hw_asr.tools import average_checkpoints

    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=3", "trainer.keep_last=3", "trainer.monitor=min val_loss")
    paths = [run_dir / f"checkpoint-epoch{e}.pth" for e in (1, 2, 3)]
    states = [load_checkpoint(p) for p in paths]
    out = average_checkpoints.main([str(run_dir), "--last", "2"])
    avg = load_checkpoint(out)
    assert avg["averaged_from"] == [str(p) for p in paths[1:]] and avg["step"] == states[2]["step"]
    for k, v in avg["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (states[1]["model"][k] + states[2]["model"][k]) / 2)
        else:  # BatchNorm's step counter: the newest
            assert torch.equal(v, states[2]["model"][k])
    # --best reads the per-epoch val_loss from metrics.jsonl
    losses = {r["epoch"]: r["val_loss"] for r in epoch_rows(run_dir)}
    best_two = sorted(sorted(losses, key=losses.get)[:2])
    out = average_checkpoints.main([str(run_dir), "--best", "2", "-o", str(tmp_path / "best.pth")])
    assert load_checkpoint(out)["averaged_from"] == [str(run_dir / f"checkpoint-epoch{e}.pth") for e in best_two]
    # loadable by test.py, refused by a resume
    evaluation.main(["-r", str(out), "-o", str(tmp_path / "result.json")])
    assert json.loads((tmp_path / "result.json").read_text())["counts"]["decoded"] > 0
    with pytest.raises(ConfigError, match="holds no optimiser state"):
        train_script.main(["-r", str(out), "trainer.epochs=5"])
    with pytest.raises(SystemExit, match="no checkpoint-epoch"):
        average_checkpoints.main([str(tmp_path), "--last", "2"])


def test_tensorboard_writes_the_same_scalars_and_the_media_into_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=4", "trainer.visualize=tensorboard", "trainer.media_step=4")
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "audio": 0, "tensors": 0})
    events.Reload()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    logged = events.Scalars("train/loss")
    assert [e.step for e in logged] == [r["step"] for r in train] == [2, 4, 6, 8]
    assert [e.value for e in logged] == pytest.approx([r["loss"] for r in train])
    val = [e.value for e in events.Scalars("epoch/val_CER (argmax)")]
    assert val == pytest.approx([r["val_CER (argmax)"] for r in epoch_rows(run_dir)])
    tags = events.Tags()
    assert [e.step for e in events.Images("train/spectrogram")] == [2, 4, 8]  # first log step of each window
    assert [e.step for e in events.Audio("train/audio")] == [2, 4, 8]
    assert events.Audio("train/audio")[0].sample_rate == 16000
    assert {"train/predictions", "val/predictions", "config"} <= {t.split("/text_summary")[0] for t in tags["tensors"]}
    # one alignment picture per evaluation
    assert [e.step for e in events.Images("val/alignment")] == [r["step"] for r in epoch_rows(run_dir)]
    table = events.Tensors("val/predictions/text_summary")[0].tensor_proto.string_val[0].decode()
    assert table.startswith("| target | pred_argmax |")


def test_train_window_counts_finite_losses_and_reduces_to_the_logged_numbers():
    from hw_asr.trainer.window import TrainWindow

    window = TrainWindow(torch.device("cpu"))
    window.add_batch(audio_seconds=12.0, wait_seconds=0.0)
    window.add_batch(audio_seconds=8.0, wait_seconds=0.0)
    window.add_loss(torch.tensor(2.0), torch.tensor(True))
    window.add_loss(torch.tensor(float("nan")), torch.tensor(False))  # a skipped batch does not count
    window.add_loss(torch.tensor(4.0), torch.tensor(True))
    window.add_infeasible(torch.tensor([True, False, False, False]))
    logs = window.reduce(world_size=1)
    assert logs["loss"] == pytest.approx(3.0) and window.epoch_loss() == {"train_loss": pytest.approx(3.0)}
    assert logs["ctc_infeasible_share"] == pytest.approx(0.25) and (logs["infeasible"], logs["utterances"]) == (1, 4)
    assert logs["audio_s_per_s"] / logs["batches_per_s"] == pytest.approx(10.0)
    assert 0 <= logs["data_wait_share"] < 0.01
    window.reset()
    assert window.epoch_loss() == {} and window.reduce(1)["loss"] == 0.0


def test_step_runner_skips_a_nonfinite_step_and_counts_runs_of_skips():
    from hw_asr.trainer.distributed import DistInfo
    from hw_asr.trainer.step import StepRunner

    class Squares(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, audio, **_):
            return {"y": (self.w * audio).sum()}

    def criterion(y, scale, **_):
        return {"loss": y * scale}

    cpu = torch.device("cpu")
    model = Squares()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    runner = StepRunner(model, criterion, optimizer, None, cpu, DistInfo(device=cpu), clip=1.0)
    batch = {"audio": torch.tensor([1.0, 2.0, 2.0])}
    _, loss = runner.forward_backward({**batch, "scale": torch.tensor(1.0)})
    norm = runner.optimizer_step(torch.isfinite(loss))
    assert float(loss) == 5.0 and float(norm) == pytest.approx(3.0)  # the gradient is the input
    assert model.w.detach().tolist() == pytest.approx([1 - 0.1 / 3, 1 - 0.2 / 3, 1 - 0.2 / 3])  # clipped to norm 1
    before = model.w.detach().clone()
    for _ in range(2):  # two non-finite steps in a row change nothing
        _, loss = runner.forward_backward({**batch, "scale": torch.tensor(float("nan"))})
        runner.optimizer_step(torch.isfinite(loss))
    assert torch.equal(model.w.detach(), before) and model.w.grad is None
    assert runner.read_skips() == (2, 2)
    _, loss = runner.forward_backward({**batch, "scale": torch.tensor(float("inf"))})
    runner.optimizer_step(torch.isfinite(loss))
    assert runner.read_skips() == (1, 3)  # the run in progress goes on across reads
    _, loss = runner.forward_backward({**batch, "scale": torch.tensor(1.0)})
    runner.optimizer_step(torch.isfinite(loss))
    assert runner.read_skips()[0] == 0 and not torch.equal(model.w.detach(), before)


def ten_seconds_a_step(monkeypatch):
    """The trainer's clock moves 10 s at each optimiser step and stands still otherwise."""
    now = [0.0]
    original = Trainer._optimizer_step

    def step(self, finite):
        now[0] += 10.0
        return original(self, finite)

    monkeypatch.setattr(Trainer, "_clock", staticmethod(lambda: now[0]))
    monkeypatch.setattr(Trainer, "_optimizer_step", step)


def one_cycle_rates(positions):
    """OneCycleLR of TINY (max 0.01, 8 steps, 30% warm-up) at each position."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=8, pct_start=0.3)
    rates = {0: opt.param_groups[0]["lr"]}
    for p in range(1, max(positions) + 1):
        opt.step()
        sched.step()
        rates[p] = opt.param_groups[0]["lr"]
    return [rates[p] for p in positions]


def train_rates(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if r["split"] == "train"}


def test_time_budget_moves_the_schedule_on_with_the_clock(tmp_path, monkeypatch):
    # TINY: 4 optimiser steps, a OneCycleLR planned for 8. At 10 s a step a 40 s budget is spent at step 4:
    # the schedule sits at the budget's share (step k -> position 2k), up to the plan's last position (7).
    ten_seconds_a_step(monkeypatch)
    plain = train_rates(run_train(tmp_path / "plain", *TINY))
    budget = train_rates(run_train(tmp_path / "budget", *TINY, "trainer.time_budget_s=40"))
    assert plain == pytest.approx(dict(zip((2, 4), one_cycle_rates([2, 4]))))
    assert budget == pytest.approx(dict(zip((2, 4), one_cycle_rates([4, 7]))))
    assert budget[4] < 1e-5 < plain[4]  # the decay finished with the budget, not with the plan


def test_time_budget_ends_the_epoch_evaluates_saves_and_resume_goes_on(tmp_path, monkeypatch):
    # 3 epochs of 2 steps, 10 s a step, a 25 s budget: spent after step 3, the first step of epoch 2
    ten_seconds_a_step(monkeypatch)
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=3", "trainer.time_budget_s=25")
    log = (run_dir / "train.log").read_text()
    assert "the time budget of 25 s is spent at step 3: epoch 2 ends after 2 of 4 batches" in log
    assert [r["epoch"] for r in epoch_rows(run_dir)] == [1, 2]  # the cut epoch was evaluated
    assert all("val_WER (argmax)" in r for r in epoch_rows(run_dir))
    state = load_checkpoint(run_dir / "checkpoint-epoch2.pth")
    assert (state["step"], state["epoch"], state["epoch_batches"], state["elapsed_s"]) == (3, 2, 0, 30.0)
    assert not (run_dir / "checkpoint-epoch3.pth").exists()
    # resumed with a larger budget: the clock goes on from 30 s and the last epoch runs
    run_train(tmp_path, "trainer.time_budget_s=1000", resume=run_dir / "checkpoint-epoch2.pth")
    assert "time budget 1000 s (30 s already trained)" in (run_dir / "train.log").read_text()
    state = load_checkpoint(run_dir / "checkpoint-epoch3.pth")
    assert (state["step"], state["epoch"], state["elapsed_s"]) == (5, 3, 50.0)
    # resumed with the budget already spent: nothing trains
    run_train(tmp_path, "trainer.epochs=4", "trainer.time_budget_s=40", resume=run_dir / "checkpoint-epoch3.pth")
    assert "the time budget of 40 s is spent: not starting epoch 4" in (run_dir / "train.log").read_text()
    assert not (run_dir / "checkpoint-epoch4.pth").exists()


def test_trainer_hands_spec_augment_the_optimiser_step_and_resume_goes_on(tmp_path, monkeypatch):
    from hw_asr.model.spec_augment import SpecAugment

    seen, forward = [], SpecAugment.forward

    def record(self, feats, lengths):
        if self.training:
            seen.append((self.train_step, self.strength()))
        return forward(self, feats, lengths)

    monkeypatch.setattr(SpecAugment, "forward", record)
    schedule = ["arch.args.spec_augment.start_step=2", "arch.args.spec_augment.ramp_steps=1"]
    run_dir = run_train(tmp_path, *TINY, *schedule, "trainer.epochs=1")
    # 2 batches per optimiser step: steps 0 and 1 masked nothing
    assert seen == [(0, 0.0), (0, 0.0), (1, 0.0), (1, 0.0)]
    seen.clear()
    run_train(tmp_path, "trainer.epochs=2", resume=run_dir / "checkpoint-epoch1.pth")
    assert seen == [(2, 0.5), (2, 0.5), (3, 1.0), (3, 1.0)], "the resumed run goes on from the saved step"
    with pytest.raises(train_script.ConfigError, match="spec_augment.start_step must be a whole number"):
        run_train(tmp_path, *TINY, "arch.args.spec_augment.start_step=-5")
