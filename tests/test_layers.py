"""The package's layers (docs/architecture.md): imports point down only, and none is deferred to dodge a cycle."""

import ast

import torch

from tests.conftest import REPO

# lowest first; a module may import its own layer and those below
LAYERS = [
    ("core", {"config", "schema", "audio", "files", "manifests", "checkpoint", "device"}),
    (
        "components",
        {
            "model",
            "datasets",
            "augmentations",
            "text_encoder",
            "metric",
            "loss",
            "lr_schedulers",
            "batch_sampler",
            "collate_fn",
            "logger",
            "inference",
            "alignment",
            "export",
            "visual",
            "data",
        },
    ),
    ("builder", {"builder"}),
    ("top", {"trainer", "ensemble", "evaluation", "run"}),
    ("cli", {"tools"}),
]


def layer_of(module):
    """``hw_asr.x.y`` -> the rank of ``x``'s layer."""
    top = module.split(".")[1] if module.count(".") else None
    for rank, (_, names) in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: not placed in a layer (add it to LAYERS and docs/architecture.md)")


def imports(path):
    """``(imported hw_asr module, deferred)`` for each import in a file; deferred: inside a function."""
    tree = ast.parse(path.read_text())
    deferred_nodes = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(fn)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            names = [n for n in names if n.count(".") <= 2]
        else:
            continue
        for name in names:
            if name.startswith("hw_asr.") and name.count("."):
                yield name, id(node) in deferred_nodes


def module_name(path):
    rel = path.relative_to(REPO).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def edges():
    for path in sorted((REPO / "hw_asr").rglob("*.py")):
        src = module_name(path)
        if src == "hw_asr":
            continue
        for dst, deferred in imports(path):
            if dst.split(".")[1] in {n for _, names in LAYERS for n in names}:
                yield src, dst, deferred


def test_imports_point_down_the_layers():
    upward = [(s, d) for s, d, _ in edges() if layer_of(d) > layer_of(s)]
    assert not upward, f"imports from a lower layer to a higher one: {upward}"


def test_no_deferred_import_inside_the_package_layers():
    """Imports inside functions are for optional libraries; within hw_asr only the tools defer some."""
    deferred = [(s, d) for s, d, late in edges() if late and layer_of(s) < layer_of("hw_asr.tools")]
    assert not deferred, f"deferred imports of hw_asr modules: {deferred}"


def test_a_model_in_three_lines_without_a_config():
    from hw_asr.model import Conformer, LogMelFrontend

    model = Conformer(29, dim=64, heads=4, layers=2, frontend=LogMelFrontend(n_mels=40)).eval()
    out = model(torch.randn(2, 16000), torch.tensor([16000, 12000]))
    assert out["log_probs"].shape == (2, 26, 29) and out["log_probs_length"].tolist() == [26, 19]
