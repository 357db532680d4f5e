"""Architectures at their published sizes, and small versions of each that must learn."""

import copy
import json

import pytest
import torch

import train as train_script
from hw_asr.builder import build_model, build_text_encoder
from hw_asr.config import load_config
from hw_asr.model import Conformer, EBranchformer, FastConformer, LogMelFrontend, QuartzNet
from hw_asr.model.conformer import RelPositionMultiHeadAttention
from hw_asr.model.transformer_parts import sinusoids
from tests.conftest import REPO
from tests.test_model import padded_batch


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def preset(name):
    cfg = load_config(REPO / "configs" / "arch" / f"{name}.json")
    return build_model(cfg, n_tokens=len(build_text_encoder(cfg)))


@pytest.mark.parametrize(
    "name,total,head",
    [
        ("quartznet_5x5", 6_713_181, 29_725),
        ("quartznet_15x5", 18_924_381, 29_725),
        ("quartznet_5x5_ru", 6_708_096 + 34_850, 34_850),
        ("ebranchformer_golos", 9_986_850, 8_738),
        ("conformer_s", 12_977_741, 5_133),
        ("conformer_m", 30_512_925, 7_453),
        ("conformer_l", 121_450_013, 14_877),
        ("fastconformer_s", 12_605_373, 5_133),
        ("fastconformer_m", 26_136_093, 7_453),
        ("fastconformer_l", 108_776_989, 14_877),
        ("deepspeech2_large", 86_618_400, 29_696),
        ("deepspeech2_gru800", 41_187_968, 23_200),
    ],
)
def test_preset_parameter_counts(name, total, head):
    model = preset(name)
    assert trainable(model) == total
    assert trainable(model.head) == head


def test_ebranchformer_positions_are_a_buffer_that_varies_over_time():
    model = preset("ebranchformer_golos")
    assert not any("table" in n for n, _ in model.named_parameters())
    assert "positions.table" not in model.state_dict()
    table = model.positions.table
    assert not torch.allclose(table[0], table[1])
    x = torch.zeros(2, 3, 256)
    out = model.positions.eval()(x)
    torch.testing.assert_close(out[0], out[1])  # the same for every utterance of a batch
    assert not torch.allclose(out[0, 0], out[0, 1])  # different for every frame


# QuartzNet's blocks start as their residual paths (branch_init 0): these numerical checks (lengths,
# padding, ONNX parity) start them at 1 so that every block's separable convolutions count in the output
SMALL = {
    "quartznet_s2": lambda: QuartzNet(29, blocks=5, repeat=1, branch_init=1.0, frontend=LogMelFrontend(n_mels=32)),
    "quartznet_s4": lambda: QuartzNet(
        34, blocks=5, repeat=2, c1_stride=4, conv_bias=True, branch_init=1.0, frontend=LogMelFrontend(n_mels=32)
    ),
    "conformer_rel": lambda: Conformer(
        29, dim=32, heads=4, layers=2, conv_kernel=7, frontend=LogMelFrontend(n_mels=32)
    ),
    "conformer_abs_ln": lambda: Conformer(
        29,
        dim=32,
        heads=2,
        layers=2,
        conv_kernel=7,
        pos_encoding="abs",
        conv_norm="layer",
        frontend=LogMelFrontend(n_mels=32),
    ),
    "ebranchformer": lambda: EBranchformer(
        34, dim=32, heads=4, layers=2, ffn_units=64, cgmlp_units=64, frontend=LogMelFrontend(n_mels=32)
    ),
    "fastconformer": lambda: FastConformer(
        29, dim=32, heads=4, layers=2, subsampling_channels=16, frontend=LogMelFrontend(n_mels=32)
    ),
}
FRAMES = lambda n: n // 160 + 1  # noqa: E731
EXPECTED_LENGTHS = {
    "quartznet_s2": lambda n: (FRAMES(n) - 1) // 2 + 1,
    "quartznet_s4": lambda n: (FRAMES(n) - 1) // 4 + 1,
    "conformer_rel": lambda n: ((FRAMES(n) - 1) // 2) // 2 + 1,
    "conformer_abs_ln": lambda n: ((FRAMES(n) - 1) // 2) // 2 + 1,
    "ebranchformer": lambda n: -(-FRAMES(n) // 4),
    "fastconformer": lambda n: (((FRAMES(n) - 1) // 2) // 2) // 2 + 1,
}


@pytest.mark.parametrize("name", SMALL)
def test_output_lengths_for_odd_inputs(name):
    model = SMALL[name]().eval()
    lengths = [16001, 3333, 1601, 161]
    out = model(*padded_batch(lengths))
    assert out["log_probs_length"].tolist() == [EXPECTED_LENGTHS[name](n) for n in lengths]
    assert out["log_probs"].shape[1] == max(out["log_probs_length"])
    assert out["log_probs"].shape[2] == model.n_tokens
    torch.testing.assert_close(out["log_probs"].exp().sum(-1), torch.ones(out["log_probs"].shape[:2]))


@pytest.mark.parametrize("name", SMALL)
def test_padding_invariance(name):
    torch.manual_seed(0)
    model = SMALL[name]()
    model.train()
    model(*padded_batch([32000, 20000, 8000], seed=1))  # move batch-norm statistics off their init
    model.eval()
    audio, lengths = padded_batch([64000, 7001], seed=2)
    batched = model(audio, lengths)
    alone = model(audio[1:, :7001], lengths[1:])
    n = alone["log_probs_length"][0]
    assert batched["log_probs_length"][1] == n
    torch.testing.assert_close(batched["log_probs"][1, :n], alone["log_probs"][0], atol=1e-4, rtol=0)


def test_fastconformer_subsampling_is_depthwise_separable_and_8x():
    model = preset("fastconformer_s")
    convs = [m for m in model.subsampling.modules() if isinstance(m, torch.nn.Conv2d)]
    # one full 3x3 convolution, then two (depthwise 3x3 stride 2, pointwise 1x1) pairs, 256 channels
    assert [(c.kernel_size, c.stride, c.groups) for c in convs] == [((3, 3), (2, 2), 1)] + [
        ((3, 3), (2, 2), 256),
        ((1, 1), (1, 1), 1),
    ] * 2
    assert all(c.out_channels == 256 for c in convs)
    assert {layer.conv.depthwise.kernel_size for layer in model.layers} == {(9,)}
    audio, lengths = padded_batch([16000 * 4])
    assert model.eval()(audio, lengths)["log_probs"].shape[1] == 51  # 401 frames / 8, rounded up


def test_conformer_loads_checkpoints_with_the_old_subsampling_names():
    torch.manual_seed(0)
    model = Conformer(29, dim=32, heads=4, layers=1, conv_kernel=7, frontend=LogMelFrontend(n_mels=32))
    state = model.state_dict()
    old = {
        k.replace("subsampling.stages.0.", "subsampling.conv1.").replace(
            "subsampling.stages.1.", "subsampling.conv2."
        ): v
        for k, v in state.items()
    }
    assert "subsampling.conv1.weight" in old
    fresh = Conformer(29, dim=32, heads=4, layers=1, conv_kernel=7, frontend=LogMelFrontend(n_mels=32))
    fresh.load_state_dict(old)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_relative_position_attention_matches_the_transformer_xl_formula():
    """Scores a(i, j) = ((q_i + u) . k_j + (q_i + v) . W p(i - j)) / sqrt(d_k), padded keys masked, written out
    element by element; the module's fused SDPA path, its relative shift included, must give the same outputs."""
    torch.manual_seed(0)
    dim, heads, t = 16, 2, 7
    attn = RelPositionMultiHeadAttention(dim, heads).eval()
    x = torch.randn(2, t, dim)
    lengths = torch.tensor([t, 4])
    mask = torch.arange(t)[None] < lengths[:, None]
    d_k = dim // heads
    q, k, v = (layer(x).view(2, t, heads, d_k) for layer in (attn.q, attn.k, attn.v))
    expected = torch.zeros(2, t, heads, d_k)
    for b in range(2):
        for h in range(heads):
            for i in range(t):
                scores = torch.full((t,), float("-inf"))
                for j in range(int(lengths[b])):
                    w_p = attn.pos(sinusoids(torch.tensor([i - j]), dim))[0].view(heads, d_k)[h]
                    scores[j] = (
                        (q[b, i, h] + attn.pos_bias_u[h]) @ k[b, j, h] + (q[b, i, h] + attn.pos_bias_v[h]) @ w_p
                    ) / d_k**0.5
                expected[b, i, h] = torch.softmax(scores, 0) @ v[b, :, h]
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask), attn.out(expected.reshape(2, t, dim)), atol=1e-5, rtol=1e-5)
        one = torch.randn(1, 1, dim)  # a single frame: the shift has nothing to move
        torch.testing.assert_close(attn(one, torch.ones(1, 1, dtype=torch.bool)), attn.out(attn.v(one)))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed dtypes (bf16 activations, fp32 biases) agree
            half = attn(x, mask)
        assert half.dtype == torch.bfloat16
        torch.testing.assert_close(half.float(), attn(x, mask), atol=5e-2, rtol=5e-2)


OVERFIT = {
    "quartznet": ('{"type": "QuartzNet", "args": {"blocks": 5, "repeat": 1, "frontend": {"n_mels": 64}}}', 3),
    "conformer": (
        '{"type": "Conformer", "args": {"dim": 96, "heads": 4, "layers": 2, "kernel": 15, "dropout": 0.0, '
        '"frontend": {"n_mels": 64}}}',
        4,
    ),
    "ebranchformer": (
        '{"type": "EBranchformer", "args": {"dim": 96, "heads": 4, "layers": 2, "ffn_units": 192, '
        '"cgmlp_units": 192, "dropout": 0.0, "frontend": {"n_mels": 64}}}',
        4,
    ),
    # 4x here: the sample's characters need more than 8x's 12.5 frames a second (the FastConformer
    # recipes use a sub-word vocabulary); the depthwise-separable subsampling and kernel 9 are kept
    "fastconformer": (
        '{"type": "FastConformer", "args": {"dim": 96, "heads": 4, "layers": 2, "subsampling_channels": 64, '
        '"subsampling_factor": 4, "dropout": 0.0, "frontend": {"n_mels": 64}}}',
        4,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", OVERFIT)
def test_one_batch_overfit_small(tmp_path, name):
    arch, epochs = OVERFIT[name]
    run_dir = train_script.main(
        [
            "-c",
            str(REPO / "configs" / "one_batch_test.json"),
            f"trainer.save_dir={tmp_path}",
            f"arch={arch}",
            f"trainer.epochs={epochs}",
            "optimizer.args.lr=2e-3",
            "trainer.visualize=null",
        ]
    )
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs_logged = [r for r in rows if r["split"] == "epoch"]
    assert epochs_logged[-1]["val_loss"] < epochs_logged[0]["val_loss"] / 3
    assert epochs_logged[-1]["val_CER (argmax)"] < 0.1


def test_conformer_compiles_block_by_block_with_dynamic_lengths():
    # Inductor with dynamic shapes: a whole-model graph of a Conformer fails to lower in
    # torch 2.13 (nested floor divisions of the sample count); block by block it must
    # compile, match eager, and keep the parameter names.
    torch.manual_seed(0)
    eager = Conformer(
        29, dim=32, heads=2, layers=2, conv_kernel=7, dropout=0.0, frontend=LogMelFrontend(n_mels=32)
    ).train()
    compiled = copy.deepcopy(eager)
    blocks = compiled.compile_blocks(dynamic=True)
    assert compiled.layers[0] in blocks and compiled.layers[1] in blocks and compiled.frontend not in blocks
    assert list(compiled.state_dict()) == list(eager.state_dict())
    for lengths in ([16000, 12000], [20800, 9000], [27200, 27200]):  # new lengths must not break it
        audio, lens = padded_batch(lengths)
        out, ref = compiled(audio, lens), eager(audio, lens)
        assert torch.equal(out["log_probs_length"], ref["log_probs_length"])
        torch.testing.assert_close(out["log_probs"], ref["log_probs"], atol=1e-4, rtol=1e-4)
        out["log_probs"].sum().backward()
        ref["log_probs"].sum().backward()
    # absolute tolerance relative to the largest gradient (660 here): the bias before each batch norm has a
    # gradient that is zero in exact arithmetic, so what it holds is float32 rounding of large sums
    scale = max(float(q.grad.abs().max()) for q in eager.parameters())
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=max(1e-3, 1e-5 * scale), rtol=1e-3, msg=name)


def test_intermediate_ctc_taps_layers_through_the_shared_head_in_training_only():
    from hw_asr.loss import CTCLoss

    torch.manual_seed(0)
    model = Conformer(
        29, dim=32, heads=4, layers=3, conv_kernel=7, inter_ctc_layers=[1, 2], frontend=LogMelFrontend(n_mels=32)
    )
    audio, lengths = padded_batch([16000, 12000])
    taps = []
    hooks = [model.layers[i].register_forward_hook(lambda m, i, o: taps.append(o)) for i in (0, 1)]
    out = model.train()(audio, lengths)
    assert len(out["inter_log_probs"]) == 2
    for lp, tap in zip(out["inter_log_probs"], taps):  # layer 1's and 2's outputs through the one head
        torch.testing.assert_close(lp, model.head(tap).log_softmax(-1))
    for h in hooks:
        h.remove()
    assert "inter_log_probs" not in model.eval()(audio, lengths)
    targets = {"text_encoded": torch.tensor([[3, 4, 5], [6, 7, 0]]), "text_encoded_length": torch.tensor([3, 2])}
    final = CTCLoss(inter_weight=0.3)(out["log_probs"], out["log_probs_length"], **targets)["loss"]
    inter = [
        CTCLoss()(lp, out["log_probs_length"], **targets)["loss"] for lp in [out["log_probs"], *out["inter_log_probs"]]
    ]
    combined = CTCLoss(inter_weight=0.3)(**out, **targets)["loss"]
    torch.testing.assert_close(final, inter[0])  # nothing to mix in without intermediate outputs
    torch.testing.assert_close(combined, 0.7 * inter[0] + 0.3 * (inter[1] + inter[2]) / 2)
    with pytest.raises(ValueError, match="inter_ctc_layers must be distinct layer numbers from 1 to 2"):
        Conformer(29, dim=32, heads=4, layers=3, inter_ctc_layers=[3], frontend=LogMelFrontend(n_mels=32))


def test_xscaling_multiplies_the_subsampled_input_by_the_root_of_the_width():
    torch.manual_seed(0)
    scaled = Conformer(29, dim=64, heads=4, layers=1, conv_kernel=7, frontend=LogMelFrontend(n_mels=32))
    plain = Conformer(29, dim=64, heads=4, layers=1, conv_kernel=7, xscaling=False, frontend=LogMelFrontend(n_mels=32))
    plain.load_state_dict(scaled.state_dict())
    feats, lengths = torch.randn(2, 32, 50), torch.tensor([50, 30])
    a, la = scaled.subsampling(feats, lengths)
    b, lb = plain.subsampling(feats, lengths)
    assert torch.equal(la, lb)
    torch.testing.assert_close(a, b * 8.0)


def test_former_argument_names_build_the_same_conformer():
    """Configs written before the rename (``ff_mult``, ``kernel``), as checkpoints keep them, still load."""
    torch.manual_seed(0)
    new = Conformer(29, dim=32, heads=4, layers=1, ffn_units=96, conv_kernel=7, frontend=LogMelFrontend(n_mels=32))
    old = Conformer(29, dim=32, heads=4, layers=1, ff_mult=3, kernel=7, frontend=LogMelFrontend(n_mels=32))
    assert {k: v.shape for k, v in new.state_dict().items()} == {k: v.shape for k, v in old.state_dict().items()}
    assert FastConformer(29, dim=32, heads=4, layers=1, kernel=9).layers[0].conv.depthwise.kernel_size == (9,)
    with pytest.raises(ValueError, match="ffn_units or its former name ff_mult"):
        Conformer(29, dim=32, heads=4, layers=1, ffn_units=96, ff_mult=3)


def test_branch_init_scales_the_last_layer_of_every_residual_branch_and_zero_starts_each_layer_at_its_norm():
    def conformer(**kw):
        torch.manual_seed(0)
        return Conformer(29, dim=32, heads=4, layers=2, conv_kernel=7, frontend=LogMelFrontend(n_mels=32), **kw)

    plain, scaled, zero = conformer(branch_init=1.0), conformer(branch_init=0.25), conformer(branch_init=0.0)
    for a, b in zip(plain.layers, scaled.layers):
        for out_a, out_b in zip(a.branch_outputs(), b.branch_outputs()):
            torch.testing.assert_close(out_b.weight, 0.25 * out_a.weight)
            assert not out_b.bias.any()
    x, mask = torch.randn(2, 9, 32), torch.ones(2, 9, dtype=torch.bool)
    layer = zero.layers[0].eval()
    torch.testing.assert_close(layer(x, mask, **zero.shared_inputs(x)), layer.final_norm(x))
    # nothing else moves: the same parameters, and the same state-dict keys as a model from before the option
    assert plain.state_dict().keys() == zero.state_dict().keys()
    torch.testing.assert_close(plain.layers[0].attn.q.weight, zero.layers[0].attn.q.weight)


def test_quartznet_branch_init_starts_every_block_as_its_residual_path():
    torch.manual_seed(0)
    model = QuartzNet(29, blocks=5, repeat=2, branch_init=0.0, frontend=LogMelFrontend(n_mels=32)).eval()
    block = model.blocks[0]
    assert not block.sub_blocks[-1].norm.weight.any() and block.sub_blocks[0].norm.weight.all()
    x, lengths = torch.randn(2, 256, 40), torch.tensor([40, 25])
    out, _ = block(x, lengths)
    res, _ = block.residual(x, lengths)
    torch.testing.assert_close(out, torch.relu(res))


def test_quartznet_identity_residual_copies_channels_and_keeps_the_gradient_from_growing():
    def quartznet(**kw):
        torch.manual_seed(0)
        return QuartzNet(29, blocks=15, repeat=1, frontend=LogMelFrontend(n_mels=32), **kw)

    plain, ident = quartznet(), quartznet(identity_residual=True)
    torch.testing.assert_close(ident.blocks[0].residual.conv.weight[:, :, 0], torch.eye(256))
    widen = ident.blocks[6].residual.conv.weight[:, :, 0]  # 256 -> 512: channel j copies input j mod 256
    assert widen.shape == (512, 256)
    torch.testing.assert_close(widen, torch.cat([torch.eye(256), torch.eye(256)]))
    # only the residual convolutions' initial values differ
    assert plain.state_dict().keys() == ident.state_dict().keys()
    for name, value in plain.state_dict().items():
        if ".residual.conv." not in name:
            torch.testing.assert_close(ident.state_dict()[name], value, msg=name)

    def growth(model):
        """Gradient norm at the first block's input over that at the last block's output."""
        model.train()
        torch.manual_seed(1)
        x = torch.relu(torch.randn(4, 256, 60)).requires_grad_()
        lengths = torch.full((4,), 60)
        h = x
        for block in model.blocks:
            h, _ = block(h, lengths)
        h.retain_grad()
        (h * torch.randn_like(h)).sum().backward()
        return (x.grad.norm() / h.grad.norm()).item()

    assert growth(plain) > 5.0  # a plain chain of 15 random pointwise conv + batch norm + ReLU layers
    assert growth(ident) < 2.0


def test_a_checkpoint_from_before_branch_init_loads_and_gives_the_same_outputs(tmp_path):
    """Old configs have no ``branch_init`` (the model now starts at 0.1); the weights loaded override the init."""
    from hw_asr.builder import load_model
    from hw_asr.checkpoint import save_checkpoint
    from hw_asr.text_encoder import CTCCharTextEncoder

    encoder = CTCCharTextEncoder()
    args = {"dim": 32, "heads": 4, "layers": 2, "conv_kernel": 7, "frontend": {"n_mels": 32}}
    config = {"arch": {"type": "Conformer", "args": args}, "text_encoder": {"type": "CTCCharTextEncoder"}}
    torch.manual_seed(0)
    old = Conformer(len(encoder), branch_init=1.0, **{**args, "frontend": LogMelFrontend(n_mels=32)}).eval()
    path = tmp_path / "old.pth"
    save_checkpoint({"model": old.state_dict(), "config": config, "text_encoder": encoder.state()}, path)
    loaded, _, _ = load_model(path)
    assert loaded.layers[0].conv.pointwise2.bias.abs().sum() > 0  # the old weights, not the new init's zeros
    audio, lengths = torch.randn(2, 16000), torch.tensor([16000, 9000])
    torch.testing.assert_close(loaded(audio, lengths)["log_probs"], old(audio, lengths)["log_probs"])
