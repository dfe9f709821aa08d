"""A torch module imported as its repeated blocks: nested stacks (transformers models, a lone
nn.Sequential, ModuleDicts), call order, op granularity, workspace buffers, and the inspect /
solve / profile commands on a module factory. Nothing is fetched: the transformers models are
built from small configs inside a factory file written to tmp_path."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
nn = torch.nn

from models.errors import SpecError  # noqa: E402
from models.torch_import import load_module_from_path, module_layers  # noqa: E402
from models.torch_modules import (  # noqa: E402
    build_module_chain,
    build_module_reference,
    module_chain_names,
    module_layer_calls,
)
from solver import Workload, load_model, load_plan, load_profile  # noqa: E402
from solver.cli import main as cachepart  # noqa: E402

# the tiny Llama's sizes, for the hand counts
H, FFN, VOCAB = 16, 64, 32

FACTORIES = f'''
import torch
from torch import nn


def llama(tied=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size={VOCAB}, hidden_size={H}, intermediate_size={FFN}, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=tied, bos_token_id=0, eos_token_id=1, pad_token_id=None))


def llama_tied():
    return llama(tied=True)


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size={VOCAB}, n_positions=16, n_embd={H}, n_layer=2,
                                      n_head=2, bos_token_id=0, eos_token_id=1))


def bert():
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size={VOCAB}, hidden_size={H}, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=16), add_pooling_layer=True)


class Block(nn.Module):
    def __init__(self, d, inplace=False):
        super().__init__()
        self.fc1 = nn.Linear(d, 4 * d)
        self.act = nn.ReLU(inplace=inplace)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(x)))


class Wrapped(nn.Module):
    """A lone nn.Sequential under the root, and a parameter on the root itself."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), Block(16), Block(16), nn.Linear(16, 4))
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return self.net(x * self.scale)


def wrapped():
    return Wrapped()


class DictStack(nn.Module):
    """A ModuleDict stack the forward calls in another order than it was registered in, with
    an entry the forward never calls."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleDict({{"second": Block(8), "unused": nn.Linear(8, 8),
                                      "first": Block(8)}})
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.blocks["second"](self.blocks["first"](x)))


def dict_stack():
    return DictStack()


class Expert(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(d, d) for _ in range(3))
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        return self.norm(sum(e(x) for e in self.experts))


class EncoderDecoder(nn.Module):
    """Two wrappers each holding a stack, blocks that hold a ModuleList of their own."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(Expert(8) for _ in range(2))
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(Expert(8) for _ in range(3))
        self.decoder.out = nn.Linear(8, 4)

    def forward(self, x):
        for layer in self.encoder.layers:
            x = layer(x)
        for layer in self.decoder.layers:
            x = layer(x)
        return self.decoder.out(x)


def encoder_decoder():
    return EncoderDecoder()
'''


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nested") / "nets.py"
    path.write_text(FACTORIES)
    return path


def src(path: Path, factory: str) -> str:
    return f"{path}:{factory}"


def total_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def trace(path: Path, factory: str, **kw: object) -> tuple[torch.nn.Module, list]:
    module = load_module_from_path(src(path, factory))
    kw.setdefault("input_dtype", "long")
    kw.setdefault("unit", "token")
    return module, module_layers(module, (2, 8), **kw)  # type: ignore[arg-type]


# ----- the chain ------------------------------------------------------------------------------
def test_llama_is_its_blocks_in_call_order(factories: Path) -> None:
    module, layers = trace(factories, "llama")
    # rotary_emb is registered after norm, but the forward calls it before the first block
    assert [d.name for d in layers] == ["model.embed_tokens", "model.rotary_emb", "model.layers.0",
                                        "model.layers.1", "model.norm", "lm_head"]
    assert module_chain_names(src(factories, "llama")) == [
        "model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm",
        "model.rotary_emb", "lm_head"]
    assert sum(d.params for d in layers) == total_params(module)
    assert [d.kind for d in layers[2:4]] == ["llamadecoderlayer"] * 2
    assert layers[0].params == VOCAB * H and layers[-1].params == VOCAB * H
    assert all(d.extra["calls"] == 1 for d in layers)
    assert [d.out_elems for d in layers] == [H, 4, H, H, H, VOCAB]  # rotary: cos + sin, 2 x 4 / 2


def test_tied_llama_head_counted_once(factories: Path) -> None:
    module, layers = trace(factories, "llama_tied")
    assert sum(d.params for d in layers) == total_params(module)
    head = layers[-1]
    assert head.name == "lm_head" and head.params == 0 and head.stored_params == VOCAB * H


def test_gpt2_and_bert_chains(factories: Path) -> None:
    module, layers = trace(factories, "gpt2")
    assert [d.name for d in layers] == ["transformer.wte", "transformer.wpe", "transformer.drop",
                                        "transformer.h.0", "transformer.h.1", "transformer.ln_f",
                                        "lm_head"]
    assert sum(d.params for d in layers) == total_params(module)
    assert layers[-1].params == 0  # GPT-2 ties its head to wte
    # transformers' Conv1D projections count: QKV 3H, output H, MLP 4H and back, per token
    assert layers[3].flops == 2 * H * (3 * H + H + 4 * H + 4 * H)

    module, layers = trace(factories, "bert")
    assert [d.name for d in layers] == ["embeddings", "encoder.layer.0", "encoder.layer.1",
                                        "pooler"]
    assert sum(d.params for d in layers) == total_params(module)


def test_op_granularity_splits_each_block(factories: Path) -> None:
    expected = {
        "llama": ["input_layernorm", "self_attn", "post_attention_layernorm", "mlp"],
        "gpt2": ["ln_1", "attn", "ln_2", "mlp"],
        "bert": ["attention", "intermediate", "output"],
    }
    blocks = {"llama": "model.layers", "gpt2": "transformer.h", "bert": "encoder.layer"}
    for factory, parts in expected.items():
        module, block = trace(factories, factory)
        _, ops = trace(factories, factory, granularity="op")
        assert sum(d.params for d in ops) == total_params(module)
        want = []
        for d in block:
            if d.name.startswith(blocks[factory] + "."):
                want += [f"{d.name}.{p}" for p in parts]
            else:
                want.append(d.name)
        assert [d.name for d in ops] == want, factory


def test_lone_sequential_is_opened(factories: Path) -> None:
    module = load_module_from_path(src(factories, "wrapped"))
    layers = module_layers(module, (5, 8))
    assert [d.name for d in layers] == ["net.0", "net.1", "net.2", "net.3"]
    assert sum(d.params for d in layers) == total_params(module)
    assert layers[0].extra["root_params"] == 8  # the root's own scale
    ops = module_layers(module, (5, 8), granularity="op")
    assert [d.name for d in ops] == ["net.0", "net.1.fc1", "net.1.act", "net.1.fc2", "net.2.fc1",
                                     "net.2.act", "net.2.fc2", "net.3"]


def test_module_dict_in_call_order_with_an_uncalled_entry(factories: Path) -> None:
    module = load_module_from_path(src(factories, "dict_stack"))
    layers = module_layers(module, (3, 8))
    # called: first, second, head; unused keeps its place after its registration predecessor
    assert [d.name for d in layers] == ["blocks.first", "blocks.second", "blocks.unused", "head"]
    assert [d.extra["calls"] for d in layers] == [1, 1, 0, 1]
    assert layers[2].out_elems == 0
    assert sum(d.params for d in layers) == total_params(module)


def test_every_stack_is_opened_but_never_a_block(factories: Path) -> None:
    module = load_module_from_path(src(factories, "encoder_decoder"))
    layers = module_layers(module, (2, 8))
    assert [d.name for d in layers] == ["encoder.layers.0", "encoder.layers.1", "decoder.layers.0",
                                        "decoder.layers.1", "decoder.layers.2", "decoder.out"]
    assert sum(d.params for d in layers) == total_params(module)
    ops = module_layers(module, (2, 8), granularity="op")
    # a block's stack child gives its entries
    assert [d.name for d in ops[:4]] == ["encoder.layers.0.experts.0", "encoder.layers.0.experts.1",
                                         "encoder.layers.0.experts.2", "encoder.layers.0.norm"]
    assert sum(d.params for d in ops) == total_params(module)


def test_bad_granularity() -> None:
    with pytest.raises(SpecError, match="granularity: expected 'block' or 'op', got 'layer'"):
        module_layers(nn.Linear(2, 2), (1, 2), granularity="layer")  # type: ignore[arg-type]


# ----- buffers -------------------------------------------------------------------------------
def test_mlp_block_workspace_by_hand(factories: Path) -> None:
    module = load_module_from_path(src(factories, "wrapped"))
    layers = module_layers(module, (5, 8))
    d = 16
    # x + fc2(act(fc1(x))): fc1's output (4d) is alive while act makes its own (4d): 8d per
    # sample; fc2's output and the sum are no larger than the block's output: not counted
    assert [x.buffer_elems for x in layers] == [0, 8 * d, 8 * d, 0]
    # a single Linear creates nothing but its output
    assert all(x.buffer_elems == 0 for x in module_layers(module, (5, 8), granularity="op"))


def test_in_place_activation_creates_nothing() -> None:
    class Block(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(d, 4 * d), nn.ReLU(inplace=True), nn.Linear(4 * d, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.fc2(self.act(self.fc1(x)))

    layers = module_layers(nn.Sequential(Block(16), Block(16)), (5, 16))
    assert [x.buffer_elems for x in layers] == [4 * 16, 4 * 16]  # fc1's output, ReLU'd in place


def test_hidden_sized_temporaries_are_not_workspace() -> None:
    class Residual(nn.Module):  # the runner tests' block: a norm's output beside the Linear's
        def __init__(self, d: int) -> None:
            super().__init__()
            self.norm, self.fc = nn.LayerNorm(d), nn.Linear(d, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.fc(self.norm(x))

    class Scores(nn.Module):  # eager attention over (batch, seq, d): seq x seq scores
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x @ x.transpose(1, 2)).softmax(-1) @ x

    assert module_layers(nn.Sequential(Residual(8), Residual(8)), (2, 8))[0].buffer_elems == 0
    # scores (seq x seq per sample) and their softmax are alive together: 2 x 10 x 10
    assert module_layers(nn.Sequential(Scores(), Scores()), (2, 10, 4))[0].buffer_elems == 200


def test_llama_workspace_by_hand(factories: Path) -> None:
    _, layers = trace(factories, "llama")
    by_name = {d.name: d for d in layers}
    # decoder layer peak, at the MLP's product act(gate(x)) * up(x): act, up and the product
    # (3 x FFN per token) are alive together; everything else it makes is hidden-sized (norm
    # outputs, Q, the attention output, the residual sums: at most H) or smaller (K, V with 2
    # KV heads), and the KV cache it fills outlives it
    assert by_name["model.layers.0"].buffer_elems == 3 * FFN
    assert by_name["model.norm"].buffer_elems == 0  # RMSNorm: hidden-sized and smaller only
    assert by_name["lm_head"].buffer_elems == by_name["model.embed_tokens"].buffer_elems == 0
    _, ops = trace(factories, "llama", granularity="op")
    assert {d.name: d.buffer_elems for d in ops}["model.layers.1.mlp"] == 3 * FFN

    # and in bytes: elements x tokens x the activation dtype
    loaded = load_model(src(factories, "llama"), Workload(batch=2, seq_len=8), input_shape=(2, 8),
                        input_dtype="long")
    row = {r["name"]: r for r in loaded.graph.layers()}["model.layers.0"]
    assert row["buffer_bytes"] == 3 * FFN * 2 * 8 * 2  # bf16


# ----- splitting and profiling the real module -------------------------------------------------
STACK = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return x + self.fc(self.norm(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Module()
        self.body.embed = nn.Embedding(30, 8)
        self.body.layers = nn.ModuleList(Block(8) for _ in range(3))
        self.head = nn.Linear(8, 30)

    def forward(self, ids):
        x = self.body.embed(ids)
        for block in self.body.layers:
            x = block(x)
        return self.head(x)


def build():
    return Net()
'''


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("stack") / "stack_net.py"
    path.write_text(STACK)
    return f"{path}:build"


def test_split_at_nested_names_equals_the_whole(stack: str) -> None:
    names = module_chain_names(stack)
    assert names == ["body.embed", "body.layers.0", "body.layers.1", "body.layers.2", "head"]
    ids = torch.randint(0, 30, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = build_module_reference(stack, seed=3)(ids)
        x = build_module_chain(stack, names[:2], seed=3)(ids)
        x = build_module_chain(stack, names[2:], seed=3)(x)
    assert torch.equal(x, want)


def test_op_layers_take_their_blocks_weights(stack: str) -> None:
    block = build_module_chain(stack, ["body.layers.1"], seed=5).layers[0]
    ops = build_module_chain(stack, ["body.layers.1.norm", "body.layers.1.fc"], seed=5)
    assert torch.equal(ops.layers[0].weight, block.norm.weight)
    assert torch.equal(ops.layers[1].weight, block.fc.weight)
    with pytest.raises(SpecError, match=r"no chain layer 'body\.layers\.9'"):
        build_module_chain(stack, ["body.layers.9"])


def test_each_layer_is_fed_the_previous_layers_real_output(stack: str) -> None:
    layers = module_layer_calls(stack, (2, 5), input_dtype="long", seed=1)
    assert [la.name for la in layers] == ["body.embed", "body.layers.0", "body.layers.1",
                                          "body.layers.2", "head"]
    assert all(len(la.calls) == 1 for la in layers)
    with torch.no_grad():
        for before, after in itertools.pairwise(layers):
            args, kwargs = before.calls[0]
            assert torch.equal(before.module(*args, **kwargs), after.calls[0][0][0])
    ids = layers[0].calls[0][0][0]
    assert ids.dtype == torch.int64 and int(ids.max()) < 30


# ----- the commands ----------------------------------------------------------------------------
def test_inspect_and_solve_plan_over_the_blocks(factories: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model = src(factories, "llama")
    shape = ["--input-shape", "2,8", "--input-dtype", "long"]
    assert cachepart(["inspect", model, *shape, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = [row["name"] for row in doc["layers"]]
    assert names[2:4] == ["model.layers.0", "model.layers.1"]
    assert doc["params"] == sum(row["params"] for row in doc["layers"])
    assert all(row["buffer_bytes"] > 0 for row in doc["layers"][2:4])
    total = sum(row["weight_bytes"] + row["activation_bytes"] + row["buffer_bytes"]
                for row in doc["layers"])
    plan = tmp_path / "plan.json"
    assert cachepart(["solve", model, *shape, "--devices", "2", "--capacity", str(total * 6 // 10),
                      "-m", "dp", "-q", "-o", str(plan)]) == 0
    stages = [list(st.layers) for st in load_plan(plan).stages]
    assert len(stages) == 2 and [n for st in stages for n in st] == names
    assert {n for st in stages for n in st if n.startswith("model.layers.")} == set(names[2:4])

    assert cachepart(["inspect", model, *shape, "--granularity", "op", "--json"]) == 0
    ops = [row["name"] for row in json.loads(capsys.readouterr().out)["layers"]]
    assert "model.layers.1.mlp" in ops and "model.layers.1" not in ops


@pytest.mark.parametrize("granularity", ["block", "op"])
def test_profile_feeds_solve(factories: Path, tmp_path: Path, granularity: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    model = src(factories, "llama")
    shape = ["--input-shape", "2,8", "--input-dtype", "long", "--granularity", granularity]
    prof = tmp_path / "prof.json"
    assert cachepart(["profile", model, *shape, "--torch-device", "cpu", "--repeats", "2",
                      "--warmup", "1", "-o", str(prof)]) == 0
    assert "profile written" in capsys.readouterr().out
    doc = json.loads(prof.read_text())
    assert doc["model"] == "llama" and doc["workload"]["batch"] == 2
    assert doc["workload"]["seq_len"] == 8 and doc["workload"]["granularity"] == granularity
    graph = load_model(model, Workload(batch=2, seq_len=8), granularity=granularity,
                       input_shape=(2, 8), input_dtype="long").graph
    assert [row["name"] for row in doc["layers"]] == graph.order()
    assert all(row["latency_s"] > 0 and row["repeats"] == 2 for row in doc["layers"])
    assert load_profile(prof).model == "llama"
    plan = tmp_path / "plan.json"
    assert cachepart(["solve", model, *shape, "--devices", "2", "--capacity", "hbm", "-m", "dp",
                      "-q", "--profile", str(prof), "-o", str(plan)]) == 0, capsys.readouterr().err


def test_profile_of_float_input_and_an_uncalled_layer(factories: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = src(factories, "dict_stack")
    prof = tmp_path / "prof.json"
    assert cachepart(["profile", model, "--input-shape", "3,8", "--torch-device", "cpu",
                      "--repeats", "1", "--warmup", "0", "-o", str(prof)]) == 0
    rows = {row["name"]: row for row in json.loads(prof.read_text())["layers"]}
    assert list(rows) == ["blocks.first", "blocks.second", "blocks.unused", "head"]
    assert rows["blocks.unused"]["latency_s"] == 0 and rows["blocks.unused"]["repeats"] == 0
    assert "seq_len" not in json.loads(prof.read_text())["workload"]  # per sample: no sequence
    assert cachepart(["solve", model, "--input-shape", "3,8", "--devices", "2", "--capacity",
                      "hbm", "-q", "--profile", str(prof), "-o", str(tmp_path / "p.json")]) == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["profile", "{llama}"], "--input-shape: MODEL '{llama}' is a torch module"),
    (["profile", "{llama}", "--input-shape", "2,8", "--batch", "4"],
     "--batch: a torch module MODEL takes its batch from --input-shape"),
    (["profile", "{llama}", "--input-shape", "2,8", "--seq", "16"],
     "--seq: a torch module MODEL takes its seq from --input-shape"),
    (["profile", "{llama}", "--input-shape", "2,x"], "--input-shape: expected whole numbers"),
    (["profile", "{llama}", "--input-shape", "8", "--input-dtype", "long"],
     "--input-shape: token ids need B,S, got '8'"),
    (["profile", "{llama}", "--input-shape", "2,8"],
     "layer 'model.embed_tokens': forward of LlamaForCausalLM failed on the meta device"),
    (["profile", "tiny-llama", "--input-shape", "2,8"],
     "--input-shape: applies to a torch module MODEL (file.py:factory) only"),
    (["profile", "tiny-llama", "--granularity", "op"],
     "--granularity: op: a zoo decoder is profiled per block"),
    (["profile", "{missing}", "--input-shape", "2,8"], "no such file"),
    (["inspect", "{llama}", "--input-shape", "2,8", "--input-dtype", "long", "--granularity",
      "op", "--batch", "0"], "--batch"),
])
def test_bad_input_is_one_line_exit_2(factories: Path, tmp_path: Path, argv: list[str],
                                      message: str, capsys: pytest.CaptureFixture[str]) -> None:
    names = {"llama": src(factories, "llama"), "missing": str(tmp_path / "none.py") + ":build"}
    argv = [a.format(**names) for a in argv]
    if argv[0] == "profile":
        argv += ["--torch-device", "cpu", "-o", str(tmp_path / "p.json")]
    assert cachepart(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cachepart: error: ") and message.format(**names) in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "p.json").exists()
