"""What a new user meets on the first day: the README's commands and the usual mistakes end in a
run that works or one clear line, never a hang, a traceback, another file's scores or a lost file."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

import train as train_script
from hw_asr import evaluation
from hw_asr.checkpoint import load_checkpoint
from hw_asr.config import ConfigError, load_config, write_config
from hw_asr.datasets.librispeech_dataset import URLS
from hw_asr.trainer.trainer import Trainer
from tests.conftest import REPO, write_audio
from tests.test_distributed import torchrun
from tests.test_training import TINY, interrupt_at_step, run_train

DEMO = REPO / "configs" / "one_batch_test.json"
ONE_CYCLE = 'lr_scheduler={"type": "OneCycleLR", "args": {"max_lr": 0.01, "pct_start": 0.3}}'


def strict_json(path):
    """Parse as standard JSON does (no NaN or Infinity)."""

    def refuse(name):
        raise ValueError(f"not standard JSON: {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ---- torchrun on the demo -------------------------------------------------------------------------


def torchrun_demo(tmp_path, *overrides, timeout=120):
    start = time.monotonic()
    result = torchrun(tmp_path / "runs", *overrides, check=False, timeout=timeout)
    return result, time.monotonic() - start


def test_torchrun_demo_with_too_few_utterances_for_two_ranks_is_refused_at_once(tmp_path):
    # 8 utterances, batch 8 per rank x 2 ranks: no rank would ever get a batch
    result, seconds = torchrun_demo(tmp_path)
    assert result.returncode != 0
    assert "8 utterances, fewer than one global batch of 8 x 2 = 16" in result.stderr
    assert "data.train.batch_size to at most 4" in result.stderr
    assert "error: data.train gives no batch" in result.stderr  # each rank's one line (torchrun adds its own report)
    assert not (tmp_path / "runs").exists(), "no run folder for a run that never started"
    assert seconds < 60


@pytest.mark.slow
def test_torchrun_demo_as_the_readme_gives_it_trains(tmp_path):
    result, _ = torchrun_demo(
        tmp_path,
        "data.train.batch_size=4",
        "trainer.epochs=1",
        "trainer.len_epoch=2",
        "trainer.visualize=null",
        "trainer.run_name=ddp",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "ddp" / "checkpoint-epoch1.pth").is_file()


def test_length_buckets_too_few_for_the_ranks_are_refused(tmp_path):
    from hw_asr.batch_sampler import LengthBucketSampler
    from hw_asr.builder import check_batches
    from hw_asr.datasets import ManifestDataset
    from tests.conftest import SAMPLE_MANIFEST

    ds = ManifestDataset(SAMPLE_MANIFEST, limit=3)
    sampler = LengthBucketSampler(ds, max_batch_seconds=100, rank=1, world_size=2)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler)
    with pytest.raises(ConfigError, match="make 1 batch.* of at most 100 s.*max_batch_seconds"):
        check_batches({}, "train", loader, world_size=2)


def test_the_stream_never_spins_on_an_empty_loader(tmp_path):
    trainer = Trainer.__new__(Trainer)
    trainer.spec, trainer.data_epoch, trainer.data_batch = SimpleNamespace(seed=42), 0, 0

    class Empty:
        def set_epoch(self, epoch, start):
            pass

    class Loader:
        batch_sampler, generator, dataset, passes = Empty(), torch.Generator(), [], 0

        def __iter__(self):
            Loader.passes += 1
            assert Loader.passes < 100, "the stream spins on an empty loader"
            return iter(())

    trainer.train_loader = Loader()
    with pytest.raises(ConfigError, match="gave no batch in a whole pass"):
        next(trainer._train_stream())


def test_a_signal_before_the_first_step_is_honoured(tmp_path, monkeypatch):
    def signalled_train(self):
        self._on_signal(signal.SIGTERM, None)  # arrives while the first batch would be loading
        return Trainer._train(self)

    monkeypatch.setattr(Trainer, "train", signalled_train)
    run_dir = run_train(tmp_path, *TINY)
    state = load_checkpoint(run_dir / "checkpoint-interrupted.pth")
    assert state["step"] == 0 and state["epoch_batches"] == 0


# ---- resume -----------------------------------------------------------------------------------------


def test_resume_with_more_epochs_rebuilds_a_one_cycle_schedule(tmp_path):
    run_dir = run_train(tmp_path, *TINY, ONE_CYCLE, "trainer.epochs=1")
    first = load_checkpoint(run_dir / "checkpoint-epoch1.pth")
    assert first["lr_scheduler"]["total_steps"] == 2 and first["step"] == 2
    run_train(tmp_path, "trainer.epochs=3", resume=run_dir / "checkpoint-epoch1.pth")
    assert "planned for 2 steps and this run now takes 6" in (run_dir / "train.log").read_text()
    last = load_checkpoint(run_dir / "checkpoint-epoch3.pth")
    assert last["step"] == 6 and last["lr_scheduler"]["total_steps"] == 6
    # the rate the 6-step plan has at step 2 was used from there: the same as a 6-step run's
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    plan = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.01, total_steps=6, pct_start=0.3)
    lrs = []
    for _ in range(5):
        optimizer.step()
        plan.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    logged = [
        r["lr"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"
    ]
    # log_step 2: rates logged after steps 2, 4 (resumed), 6 (resumed); a 6-step plan has lrs[k-1] after step k
    assert logged[1] == pytest.approx(lrs[3]) and logged[1] != pytest.approx(0.01 / 25 / 1e4)


def test_resuming_a_finished_run_says_so(tmp_path):
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1")
    config_before = (run_dir / "config.json").read_bytes()
    with pytest.raises(ConfigError, match="already finished at epoch 1; raise trainer.epochs to continue"):
        run_train(tmp_path, resume=run_dir)
    assert (run_dir / "config.json").read_bytes() == config_before


def test_a_one_cycle_total_shorter_than_the_run_is_refused_before_anything_is_written(tmp_path):
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1")  # TINY's OneCycleLR says total_steps 8
    config_before = (run_dir / "config.json").read_bytes()
    files_before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(ConfigError, match="total_steps to 8, but the run takes 10 optimiser steps"):
        run_train(tmp_path, "trainer.epochs=5", resume=run_dir / "checkpoint-epoch1.pth")
    assert (run_dir / "config.json").read_bytes() == config_before
    assert sorted(p.name for p in run_dir.iterdir()) == files_before


def test_the_interrupted_checkpoint_goes_once_a_newer_one_is_complete(tmp_path, monkeypatch):
    undo = interrupt_at_step(monkeypatch, 1)
    run_dir = run_train(tmp_path, *TINY)
    assert (run_dir / "checkpoint-interrupted.pth").is_file()
    undo()
    run_train(tmp_path, resume=run_dir)  # a folder: its newest checkpoint, the interrupted one
    assert (run_dir / "checkpoint-epoch2.pth").is_file()
    assert not (run_dir / "checkpoint-interrupted.pth").exists()


# ---- test.py ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch TINY run: its folder and checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    run_dir = run_train(root, *TINY)
    return run_dir


def broken_folder(root):
    """Five files: three good (with transcripts), two whose header reads but whose audio does not decode
    (a truncated FLAC, a WAV holding NaN), and one whose header is garbage (left out when indexing)."""
    for i, text in enumerate(["one", "two", "three"]):
        write_audio(root / f"good{i}.wav", seconds=0.4 + 0.1 * i, freq=300 + 50 * i)
        (root / f"good{i}.txt").write_text(text)
    write_audio(root / "full.flac", seconds=0.8)
    data = (root / "full.flac").read_bytes()
    (root / "a_truncated.flac").write_bytes(data[: len(data) // 2])
    (root / "full.flac").unlink()
    x = np.full(8000, 0.1, np.float32)
    x[100] = np.nan
    sf.write(root / "b_nan.wav", x, 16000, subtype="FLOAT")
    (root / "c_garbage.wav").write_bytes(b"RIFF\x00\x00WAVEfmt garbage")
    for name in ("a_truncated", "b_nan", "c_garbage"):
        (root / f"{name}.txt").write_text("bad")
    return root


def test_test_py_never_scores_other_audio_in_place_of_a_broken_file(tmp_path, trained, capsys):
    folder = broken_folder(tmp_path / "audio")
    out = tmp_path / "r.json"
    result = evaluation.main(
        ["-r", str(trained / "checkpoint-epoch2.pth"), "-o", str(out), "-t", str(folder), "-b", "2"]
    )
    paths = [r["audio_path"] for r in result["utterances"]]
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["good0.wav", "good1.wav", "good2.wav"]
    assert len(set(paths)) == len(paths)
    skipped = {r["audio_path"].rsplit("/", 1)[1]: r["reason"] for r in strict_json(out)["skipped"]}
    assert set(skipped) == {"a_truncated.flac", "b_nan.wav", "c_garbage.wav"}
    assert "NaN" in skipped["b_nan.wav"] and skipped["c_garbage.wav"]
    assert result["counts"] == {"decoded": 3, "scored": 3, "skipped": 3}
    assert "3 utterances decoded, 3 scored against a transcript, 3 skipped" in capsys.readouterr().out


def test_test_py_writes_standard_json_when_nothing_has_a_transcript(tmp_path, trained):
    folder = tmp_path / "audio"
    write_audio(folder / "a.wav")
    write_audio(folder / "b.wav", freq=500)
    out = tmp_path / "r.json"
    evaluation.main(["-r", str(trained / "checkpoint-epoch2.pth"), "-o", str(out), "-t", str(folder)])
    result = strict_json(out)
    assert result["decoders"]["argmax"] == {"WER": None, "CER": None}
    assert all(r["ground_truth"] is None and isinstance(r["pred_argmax"], str) for r in result["utterances"])
    assert result["counts"] == {"decoded": 2, "scored": 0, "skipped": 0}


def test_test_py_with_a_training_config_leaves_out_the_train_split(tmp_path, trained):
    config = trained / "config.json"
    result = evaluation.main(
        ["-r", str(trained / "checkpoint-epoch2.pth"), "-o", str(tmp_path / "a.json"), "-c", str(config)]
    )
    assert list(result["splits"]) == ["val"] and {r["split"] for r in result["utterances"]} == {"val"}
    both = evaluation.main(["-r", str(trained), "-o", str(tmp_path / "b.json"), "--splits", "train,val"])
    assert list(both["splits"]) == ["train", "val"]
    with pytest.raises(ConfigError, match=r"--splits names \['test'\].*it has: \['train', 'val'\]"):
        evaluation.main(["-r", str(trained), "-o", str(tmp_path / "c.json"), "--splits", "test"])


def test_test_py_takes_a_run_folder(tmp_path, trained):
    result = evaluation.main(["-r", str(trained), "-o", str(tmp_path / "r.json")])
    assert result["checkpoint"] == str(trained / "checkpoint-epoch2.pth")  # TINY monitors nothing: no model_best
    (trained / "model_best.pth").write_bytes((trained / "checkpoint-epoch1.pth").read_bytes())
    try:
        result = evaluation.main(["-r", str(trained), "-o", str(tmp_path / "r.json")])
        assert result["checkpoint"] == str(trained / "model_best.pth")
    finally:
        (trained / "model_best.pth").unlink()
    with pytest.raises(Exception, match="no model_best.pth or checkpoint-\\*.pth in the folder"):
        evaluation.main(["-r", str(tmp_path), "-o", str(tmp_path / "r.json")])


def test_a_missing_language_model_is_named_with_the_command_that_builds_it(tmp_path, trained):
    recipe = REPO / "configs" / "recipes" / "mini_librispeech_baseline.json"
    assert not (REPO / "data" / "lm" / "mini_librispeech_4gram.bin").exists() or pytest.skip("LM built here")
    with pytest.raises(
        ConfigError,
        match=r"decoders.beam_lm.args.lm_path: file not found: "
        r"data/lm/mini_librispeech_4gram.bin; build one with .*build_lm",
    ):
        train_script.main(["-c", str(recipe), f"trainer.save_dir={tmp_path}"])
    decoders = json.dumps(load_config(recipe)["decoders"])
    with pytest.raises(ConfigError, match="file not found: data/lm/mini_librispeech_4gram.bin"):
        evaluation.main(["-r", str(trained), "-o", str(tmp_path / "r.json"), f"decoders={decoders}"])
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(ConfigError, match=r"librispeech_4gram.bin; ./download_artifacts.sh"):
        evaluation.main(
            [
                "-r",
                str(trained),
                "-o",
                str(tmp_path / "r.json"),
                'decoders={"lm": {"type": "PyCTCDecodeDecoder", "args": {"lm_path": "data/lm/librispeech_4gram.bin"}}}',
            ]
        )


# ---- start-up checks ---------------------------------------------------------------------------------


def test_a_missing_librispeech_folder_leaves_nothing_behind(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data_dir = tmp_path / "no" / "such" / "folder"
    with pytest.raises(Exception, match="could not download .*Put the part there by hand") as err:
        train_script.main(
            [
                "-c",
                str(REPO / "configs" / "deepspeech2_mini_librispeech.json"),
                f"trainer.save_dir={tmp_path / 'runs'}",
                f"data.train.datasets.0.args.data_dir={data_dir}",
            ]
        )
    assert type(err.value).__name__ == "DownloadError"
    assert not (tmp_path / "runs").exists(), "no run folder"
    assert not (tmp_path / "no").exists(), "no data folder made for a download that failed"


def test_train_py_reports_a_download_error_in_one_line(tmp_path):
    code = (
        "import urllib.error, urllib.request, sys\n"
        "def offline(*a, **k):\n    raise urllib.error.URLError('no network')\n"
        "urllib.request.urlopen = offline\n"
        "sys.argv = ['train.py', '-c', 'configs/deepspeech2_mini_librispeech.json', "
        f"'trainer.save_dir={tmp_path}', 'data.train.datasets.0.args.data_dir={tmp_path}/none']\n"
        "import runpy\nrunpy.run_path('train.py', run_name='__main__')\n"
    )
    # a generous timeout: on a loaded machine importing torch alone can take minutes
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: could not download")


def test_an_unknown_optimizer_lists_optimizers_only(tmp_path):
    with pytest.raises(ConfigError) as err:
        run_train(tmp_path, *TINY, "optimizer.type=AdamWW")
    known = str(err.value).split("known types in torch.optim: ")[1].split(", ")
    assert "AdamW" in known and "SGD" in known
    assert not {"lr_scheduler", "swa_utils", "Optimizer"} & set(known)
    with pytest.raises(ConfigError) as err:
        run_train(tmp_path, *TINY, "lr_scheduler.type=OneCycle")
    known = str(err.value).split(": ")[-1].split(", ")
    assert "OneCycleLR" in known and "WarmupLR" in known and "LRScheduler" not in known
    assert "Optimizer" not in known and "LambdaLR" in known


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.visualize=wandb", 'trainer.visualize must be "comet", "tensorboard" or null'),
        (
            'arch={"type": "Conformer", "args": {"dim": 32, "heads": 2, "layers": 1, "pos_encoding": "rope"}}',
            r"arch.args \(Conformer\): pos_encoding must be 'rel' or 'abs', got 'rope'",
        ),
        (
            'arch={"type": "Conformer", "args": {"dim": 30, "heads": 4, "layers": 1}}',
            r"arch.args \(Conformer\): dim 30 is not divisible by heads 4",
        ),
    ],
)
def test_bad_values_are_config_errors_before_any_data_is_read(tmp_path, monkeypatch, override, message):
    import hw_asr.builder as builder

    monkeypatch.setattr(builder, "build_dataset", lambda *a, **k: pytest.fail("data read before the check"))
    with pytest.raises(ConfigError, match=message):
        run_train(tmp_path / "runs", *TINY, override)
    assert not (tmp_path / "runs").exists()


def test_a_value_a_class_refuses_is_a_config_error_naming_the_block(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizer.args \(Adam\): Invalid learning rate: -1"):
        run_train(tmp_path / "runs", *TINY, "optimizer.type=Adam", "optimizer.args={}", "optimizer.args.lr=-1")
    assert not (tmp_path / "runs").exists()


def test_init_weights_from_another_architecture_warns_and_counts_no_counters(tmp_path):
    source = run_train(
        tmp_path / "a",
        *TINY,
        "trainer.epochs=1",
        'arch={"type": "Conformer", "args": {"dim": 32, "heads": 2, "layers": 1, "conv_kernel": 7, '
        '"frontend": {"n_mels": 32}}}',
    )
    run_dir = run_train(
        tmp_path / "b", *TINY, "trainer.epochs=1", f"trainer.init_weights={source}/checkpoint-epoch1.pth"
    )
    line = next(x for x in (run_dir / "train.log").read_text().splitlines() if "init_weights " in x)
    assert " WARNING " in line
    assert "loaded only 1 of this model's 12 weight tensors" in line  # the mel filterbank; no counter counted
    assert "the checkpoint is a Conformer, this model a BaselineModel" in line
    # the Conformer's BatchNorm counter matches nothing here; loading a Conformer into a Conformer counts
    # weights only (the counter is copied but not counted)
    again = run_train(
        tmp_path / "c",
        *TINY,
        "trainer.epochs=1",
        f"trainer.init_weights={source}/checkpoint-epoch1.pth",
        'arch={"type": "Conformer", "args": {"dim": 32, "heads": 2, "layers": 1, "conv_kernel": 7, '
        '"frontend": {"n_mels": 32}}}',
    )
    line = next(x for x in (again / "train.log").read_text().splitlines() if "init_weights " in x)
    model_tensors = load_checkpoint(source / "checkpoint-epoch1.pth")["model"]
    n_weights = sum(not k.endswith("num_batches_tracked") for k in model_tensors)
    assert " INFO " in line and f"loaded {n_weights} of {n_weights} weight tensors" in line


def test_config_json_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    write_config({"a": 1}, path)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_config({"a": 2}, path)
    assert json.loads(path.read_text()) == {"a": 1}, "the old config is whole"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"], "no temporary file left"


def test_mini_librispeech_configs_use_the_downloadable_parts():
    paths = [p for p in sorted((REPO / "configs").rglob("*.json")) if "mini_librispeech" in p.name]
    paths.append(REPO / "configs" / "eval" / "librispeech.json")
    assert len(paths) >= 10
    for path in paths:
        cfg = load_config(path)
        for split, spec in cfg["data"].items():
            for d in spec["datasets"]:
                if d["type"] == "LibrispeechDataset":
                    assert d["args"]["part"] in URLS, f"{path.name}: {split} uses {d['args']['part']}"
                    assert "shared" not in d["args"].get("data_dir", ""), path.name
