"""models.torch_import: the layer chain of a torch nn.Module, traced on the meta device."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from models.errors import SpecError  # noqa: E402
from models.torch_import import ROOT, load_module_from_path, module_layers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def total_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 16 * 16, 10)
    )


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(self.norm(x))


class Stack(nn.Module):
    """Embedding, a ModuleList of blocks, a head, and a parameter on the root itself."""

    def __init__(self, vocab: int = 100, d: int = 16, n: int = 3, tied: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d) for _ in range(n))
        self.head = nn.Linear(d, vocab, bias=False)
        self.scale = nn.Parameter(torch.ones(d))
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) * self.scale
        for block in self.layers:
            x = block(x)
        return self.head(x)


def test_mlp_out_elems_params_flops_by_hand() -> None:
    model = mlp()
    layers = module_layers(model, (5, 16))
    assert [(d.name, d.kind) for d in layers] == [("0", "linear"), ("1", "relu"), ("2", "linear")]
    assert [d.params for d in layers] == [16 * 32 + 32, 0, 32 * 8 + 8]
    assert [d.out_elems for d in layers] == [32, 32, 8]
    assert [d.flops for d in layers] == [2 * 16 * 32, 0, 2 * 32 * 8]
    assert [d.dtype for d in layers] == ["float32", None, "float32"]
    assert all(d.unit == "sample" for d in layers)
    assert layers[0].extra["out_shapes"] == [(5, 32)]
    assert layers[0].extra["out_dtypes"] == ["float32"]
    assert sum(d.params for d in layers) == total_params(model)


def test_units_per_token_and_per_sample() -> None:
    per_token = module_layers(mlp(), (2, 7, 16), unit="token")
    per_sample = module_layers(mlp(), (2, 7, 16), unit="sample")
    assert [d.out_elems for d in per_token] == [32, 32, 8]
    assert [d.out_elems for d in per_sample] == [7 * 32, 7 * 32, 7 * 8]
    assert per_token[0].flops == 2 * 16 * 32
    assert per_sample[0].flops == 7 * 2 * 16 * 32
    assert all(d.unit == "token" for d in per_token)


def test_cnn_out_elems_and_flops_by_hand() -> None:
    model = cnn()
    layers = module_layers(model, (4, 3, 32, 32))
    assert [d.kind for d in layers] == ["conv2d", "relu", "maxpool2d", "flatten", "linear"]
    assert [d.out_elems for d in layers] == [8 * 32 * 32, 8 * 32 * 32, 8 * 16 * 16, 2048, 10]
    assert layers[0].flops == 2 * (3 * 3) * 3 * (8 * 32 * 32)
    assert layers[4].flops == 2 * 2048 * 10
    assert sum(d.flops for d in layers[1:4]) == 0
    assert sum(d.params for d in layers) == total_params(model)


def test_grouped_conv_flops() -> None:
    layers = module_layers(nn.Conv1d(8, 16, 5, groups=4), (2, 8, 20))
    assert [d.name for d in layers] == [ROOT]
    out = 16 * 16  # channels x (20 - 5 + 1)
    assert layers[0].out_elems == out
    assert layers[0].flops == 2 * 5 * (8 // 4) * out


def test_transformer_encoder() -> None:
    d, ffn = 64, 128
    layer = nn.TransformerEncoderLayer(d, 4, ffn, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    layers = module_layers(model, (2, 10, d), unit="token")
    assert [d_.name for d_ in layers] == ["layers.0", "layers.1"]
    assert all(d_.kind == "transformerencoderlayer" for d_ in layers)
    assert sum(d_.params for d_ in layers) == total_params(model)
    assert all(d_.out_elems == d for d_ in layers)
    # two FFN linears + Q, K, V and output projections (attention scores excluded)
    assert all(d_.flops == 2 * d * ffn * 2 + 2 * d * d * 4 for d_ in layers)


def test_module_list_chain_root_params_and_token_unit() -> None:
    model = Stack()
    layers = module_layers(model, (2, 5), input_dtype=torch.long, unit="token")
    names = [d.name for d in layers]
    assert names == ["embed", "layers.0", "layers.1", "layers.2", "head"]
    assert [d.kind for d in layers] == ["embedding", "block", "block", "block", "linear"]
    assert sum(d.params for d in layers) == total_params(model)
    # the root's own parameter is attached to the first layer
    assert layers[0].params == 100 * 16 + 16
    assert layers[0].extra["root_params"] == 16
    assert [d.out_elems for d in layers] == [16, 16, 16, 16, 100]
    assert layers[1].flops == 2 * 16 * 16
    assert layers[4].flops == 2 * 16 * 100


def test_tied_parameters_counted_once() -> None:
    model = Stack(tied=True)
    layers = module_layers(model, (1, 4), input_dtype="long", unit="token")
    assert sum(d.params for d in layers) == total_params(model)
    head = layers[-1]
    assert head.params == 0
    assert head.stored_params == 100 * 16
    assert head.weight_params == 100 * 16


def test_same_module_twice_in_a_sequential() -> None:
    lin = nn.Linear(8, 8)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    layers = module_layers(model, (3, 8))
    assert [d.name for d in layers] == ["0", "1", "2"]
    assert [d.params for d in layers] == [72, 0, 0]
    assert layers[2].stored_params == 72
    assert [d.extra["calls"] for d in layers] == [1, 1, 1]
    assert layers[0].flops == layers[2].flops == 2 * 8 * 8
    assert sum(d.params for d in layers) == total_params(model)


def test_tuple_outputs_are_summed() -> None:
    class Split(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            return x, {"half": x[:, :2]}

    layers = module_layers(nn.Sequential(nn.Linear(4, 6), Split()), (2, 4))
    assert layers[1].out_elems == 6 + 2
    assert layers[1].extra["out_shapes"] == [(2, 6), (2, 2)]


def test_bfloat16_dtype_recorded() -> None:
    model = mlp().to(torch.bfloat16)
    layers = module_layers(model, (2, 16), input_dtype=torch.bfloat16)
    assert [d.dtype for d in layers] == ["bfloat16", None, "bfloat16"]
    assert layers[2].extra["out_dtypes"] == ["bfloat16"]


def test_user_module_untouched() -> None:
    model = mlp()
    before = [p.clone() for p in model.parameters()]
    model.train()
    module_layers(model, (2, 16))
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_lazy_modules_materialize_on_meta() -> None:
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(3))
    layers = module_layers(model, (2, 5))
    assert [d.params for d in layers] == [5 * 8 + 8, 0, 8 * 3 + 3]
    assert isinstance(model[0].weight, nn.parameter.UninitializedParameter)


def test_too_big_for_ram_imports_without_allocating() -> None:
    width, depth = 65536, 8  # 8 x 4.3 G parameters: ~137 GB in fp32
    with torch.device("meta"):
        model = nn.Sequential(*(nn.Linear(width, width) for _ in range(depth)))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    layers = module_layers(model, (1, width))
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert sum(d.params for d in layers) == depth * (width * width + width)
    assert all(d.flops == 2 * width * width for d in layers)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert rss_growth < 1024 * 1024  # < 1 GiB


@pytest.mark.parametrize(
    "shape", [(), (0, 4), (2, -1), (2.5, 4), (True, 4), [], "2,4"], ids=repr
)
def test_bad_input_shape(shape: object) -> None:
    with pytest.raises(SpecError, match="input_shape"):
        module_layers(mlp(), shape)  # type: ignore[arg-type]


def test_bad_unit_dtype_and_module() -> None:
    with pytest.raises(SpecError, match="unit 'token' needs"):
        module_layers(mlp(), (16,), unit="token")
    with pytest.raises(SpecError, match="unit"):
        module_layers(mlp(), (2, 16), unit="batch")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="input_dtype"):
        module_layers(mlp(), (2, 16), input_dtype="not_a_dtype")
    with pytest.raises(SpecError, match=r"torch\.nn\.Module"):
        module_layers(object(), (2, 16))  # type: ignore[arg-type]


def test_forward_failing_on_meta_names_the_layer() -> None:
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x.sum().item()  # .item() has no value on meta

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Linear(4, 4)
            self.router = DataDependent()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.router(self.encoder(x))

    with pytest.raises(SpecError, match=r"layer 'router'.*meta.*item\(\)") as info:
        module_layers(Net(), (2, 4))
    assert "\n" not in str(info.value)


def test_shape_mismatch_names_the_layer() -> None:
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), 2, enable_nested_tensor=False
    )
    with pytest.raises(SpecError, match=r"layer 'layers\.0'.*embed"):
        module_layers(encoder, (2, 10, 32))  # d_model is 64
    with pytest.raises(SpecError, match=r"layer '2'.*RuntimeError"):
        module_layers(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(9, 2)), (2, 4))


def test_float_input_to_embedding_hints_input_dtype() -> None:
    with pytest.raises(SpecError, match=r"layer 'embed'.*input_dtype=torch.long"):
        module_layers(Stack(), (2, 5))


def test_missing_torch_raises_spec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(SpecError, match="pip install torch"):
        module_layers(object(), (1,))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="pip install torch"):
        load_module_from_path("x.py:build")


def test_package_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import models, models.layers, models.errors, models.transformer, models.torch_import\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


MODEL_FILE = """
from torch import nn

def build():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

class Factory:
    @staticmethod
    def make():
        return build()

def broken():
    raise RuntimeError("no config")

def not_a_module():
    return 42
"""


def test_load_module_from_path_file(tmp_path: Path) -> None:
    path = tmp_path / "my_model.py"
    path.write_text(MODEL_FILE)
    model = load_module_from_path(f"{path}:build")
    assert isinstance(model, nn.Sequential)
    assert all(p.device.type == "meta" for p in model.parameters())
    layers = module_layers(model, (3, 4))
    assert sum(d.params for d in layers) == 4 * 8 + 8 + 8 * 2 + 2
    assert [d.out_elems for d in layers] == [8, 8, 2]
    assert isinstance(load_module_from_path(f"{path}:Factory.make"), nn.Sequential)


def test_load_module_from_path_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "cachepart_test_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(MODEL_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cachepart_test_pkg", raising=False)
    monkeypatch.delitem(sys.modules, "cachepart_test_pkg.nets", raising=False)
    model = load_module_from_path("cachepart_test_pkg.nets:build")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert isinstance(load_module_from_path("torch.nn:Identity"), nn.Identity)
    sys.modules.pop("cachepart_test_pkg.nets", None)
    sys.modules.pop("cachepart_test_pkg", None)


@pytest.mark.parametrize(
    ("suffix", "match"),
    [
        ("{path}", "expected path/to/file.py:factory"),
        ("{path}:", "expected path/to/file.py:factory"),
        ("{missing}:build", "no such file"),
        ("{path}:nope", "no attribute 'nope'"),
        ("{path}:broken", r"broken\(\) failed: RuntimeError: no config"),
        ("{path}:not_a_module", "returned int, not a torch.nn.Module"),
        ("{syntax}:build", "importing .* failed: SyntaxError"),
        ("no_such_package_xyz.mod:build", "cannot import 'no_such_package_xyz.mod'"),
    ],
)
def test_load_module_from_path_errors(tmp_path: Path, suffix: str, match: str) -> None:
    path = tmp_path / "my_model.py"
    path.write_text(MODEL_FILE)
    syntax = tmp_path / "bad_syntax.py"
    syntax.write_text("def build(:\n")
    spec = suffix.format(path=path, missing=tmp_path / "missing.py", syntax=syntax)
    with pytest.raises(SpecError, match=match) as info:
        load_module_from_path(spec)
    assert repr(spec) in str(info.value)
