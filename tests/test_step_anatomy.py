"""The CPU proxies of a GPU step (benchmarks/step_anatomy.py): no host-device synchronisation in a
non-logging training step and no graph break in the compiled forward and backward of the presets."""

import collections
import sys

import pytest
import torch
from torch import nn

from hw_asr.model.base_model import masked_apply
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import step_anatomy  # noqa: E402


def test_the_counter_sees_what_makes_a_gpu_wait():
    x = torch.randn(4, 3)
    mask = torch.tensor([True, False, True, True])
    with step_anatomy.OpCounter() as counter:
        x.sum().item()
        bool((x > 0).any())
        x[mask]
        x.nonzero()
        x[:, 1:]  # a plain slice does not
        x * 2
    kinds = collections.Counter()
    for key, n in counter.syncs.items():
        kinds[key.split(" @ ")[0]] += n
    assert kinds == {"_local_scalar_dense": 2, "index": 1, "nonzero": 1}
    assert all(key.split(" @ ")[1].startswith("tests/test_step_anatomy.py:") for key in counter.syncs)
    assert counter.ops >= 8


@pytest.mark.parametrize("preset", step_anatomy.PRESETS)
def test_a_training_step_never_waits_for_the_device(preset):
    row = step_anatomy.step_anatomy(preset, batch=2, seconds=1.0, steps=1)
    assert row["ops_per_step"] > 100  # the step ran under the counter
    assert row["syncs_per_step"] == 0, row["sync_sources"]


@pytest.mark.parametrize(
    "preset", ["conformer_s", "fastconformer_s", "deepspeech2_gru800", "quartznet_5x5", "ebranchformer_golos"]
)
def test_forward_and_backward_compile_into_one_graph_under_bf16_autocast(preset):
    # half a second of audio: the graph count does not depend on the length, and CPU bf16 is slow
    graphs, bad = step_anatomy.compiled_backward(preset, "bf16", batch=2, seconds=0.5)
    if graphs != 1:
        pytest.fail(f"{graphs} graphs; breaks: {step_anatomy.graph_breaks(preset, batch=2, seconds=0.5)[1]}")
    assert bad == []


def test_the_compiled_step_check_sees_a_graph_break():
    def read_a_length_on_the_host(model):
        encode = model.encode

        def encode_after_a_host_read(feats, lengths):
            if int(lengths.max()) > 0:  # a host read of a device value: dynamo must break here
                return encode(feats, lengths)
            return encode(feats, lengths)

        model.encode = encode_after_a_host_read

    graphs, bad = step_anatomy.compiled_backward("quartznet_5x5", "fp32", seconds=0.5, patch=read_a_length_on_the_host)
    assert graphs >= 2
    assert bad == []  # a break costs speed, not gradients


def test_masked_batch_norm_matches_batch_norm_on_the_real_frames():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 5)
    lengths = torch.tensor([7, 4, 2])
    mask = torch.arange(7)[None, :] < lengths[:, None]
    ours, reference = nn.BatchNorm1d(5), nn.BatchNorm1d(5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    reference.load_state_dict(ours.state_dict())
    for _ in range(3):
        out = masked_apply(ours, x, mask)
        expected = torch.zeros_like(x)
        expected[mask] = reference(x[mask])
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    assert int(ours.num_batches_tracked) == int(reference.num_batches_tracked) == 3
    ours.eval()
    reference.eval()
    expected = torch.zeros_like(x)
    expected[mask] = reference(x[mask])
    torch.testing.assert_close(masked_apply(ours, x, mask), expected, rtol=1e-5, atol=1e-6)
    # gradients flow to the real frames and the affine parameters as through torch's kernel
    ours.train()
    reference.train()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    masked_apply(ours, xa, mask).square().sum().backward()
    out = torch.zeros_like(xb)
    out[mask] = reference(xb[mask])
    out.square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-5)
    # the input's dtype is kept (no promotion to fp32 of what follows under autocast)
    assert masked_apply(nn.BatchNorm1d(5), x.bfloat16(), mask).dtype == torch.bfloat16


def test_bucketed_input_shapes_are_counted():
    shapes = step_anatomy.shapes_per_epoch(max_batch_seconds=60.0, durations=[2.0, 2.0, 3.0, 10.0, 10.0, 20.0])
    assert shapes["shapes"] == shapes["batches"] >= 2
    assert 0 <= shapes["padding"] < 0.5
