"""Fuzz the command line (issue 15): hypothesis writes chain JSON documents, model spec YAML
documents, mutated plan JSON documents and option vectors, and every example runs
``python -m solver.cli`` in a subprocess. Whatever the input, the command must end with exit
code 0, 2 (bad input), 3 (infeasible) or 4 (solver failure); on 2 or 3 with exactly one error
line on stderr (``cachepart: warning:`` lines aside); never with a traceback; never hang.

The run is deterministic (``derandomize``) and small by default, about two minutes;
``CACHEPART_FUZZ_EXAMPLES=N`` runs N examples per strategy (the option vectors share N across
their commands, see ``CLI_EXAMPLES``).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "models" / "zoo"

EXAMPLES = max(1, int(os.environ.get("CACHEPART_FUZZ_EXAMPLES", "25")))
# Seven commands share the option-vector budget: about 1/3 of EXAMPLES each.
CLI_EXAMPLES = max(3, math.ceil(EXAMPLES / 3))
TIMEOUT_S = 60
# A tiny input must not need gigabytes: above this the child fails (MemoryError, a crash),
# which the checks report, instead of taking the machine's memory.
MEMORY_LIMIT_BYTES = 8 * 2**30
OK_EXITS = frozenset({0, 2, 3, 4})
ONE_LINE_EXITS = frozenset({2, 3})
WARNING = "cachepart: warning:"

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])
CLI_FUZZ = settings(FUZZ, max_examples=CLI_EXAMPLES)


# --------------------------------------------------------------------------------------------
# Running one case


class Case:
    """Files to write into an empty folder, the argv to run there, and commands to run after it
    when it exits 0 (a plan the first one wrote, read back). Not a dataclass: hypothesis prints
    a falsifying example with this repr, which cuts long files short."""

    def __init__(self, argv: Sequence[str], files: Sequence[tuple[str, bytes]] = (),
                 then: Sequence[Sequence[str]] = (), fixed: Sequence[str] = ()) -> None:
        self.argv = tuple(argv)
        self.files = tuple(files)
        self.then = tuple(tuple(a) for a in then)
        self.fixed = frozenset(fixed)  # files the same in every example: named, not shown

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        files = "".join(f"\n  file {name} ({len(data)} bytes): {data[:1500]!r}"
                        + (" ..." if len(data) > 1500 else "")
                        for name, data in self.files if name not in self.fixed)
        then = "".join(f"\n  then: cachepart {shlex.join(argv)}" for argv in self.then)
        return f"Case(cachepart {shlex.join(self.argv)}{files}{then})"


@dataclass
class Outcome:
    argv: tuple[str, ...]
    code: int | None  # None: killed at TIMEOUT_S
    stderr: str
    problem: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _limit_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass


def verdict(code: int | None, stderr: str) -> str | None:
    """What is wrong with a command's ending, or None."""
    if code is None:
        return f"no answer in {TIMEOUT_S} s"
    if "Traceback" in stderr:
        return f"a traceback (exit {code})"
    if code not in OK_EXITS:
        return f"exit code {code}, expected one of {sorted(OK_EXITS)}"
    if code in ONE_LINE_EXITS:
        lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(WARNING)]
        if len(lines) != 1:
            return f"exit {code} with {len(lines)} error lines on stderr, expected 1"
    return None


def run_cli(argv: Sequence[str], cwd: Path) -> Outcome:
    import time

    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONIOENCODING": "utf-8"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "solver.cli", *argv], cwd=cwd, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S,
                              preexec_fn=_limit_memory if os.name == "posix" else None)
    except subprocess.TimeoutExpired as exc:
        err = (exc.stderr or b"").decode("utf-8", "replace")
        return Outcome(tuple(argv), None, err, verdict(None, err), time.perf_counter() - start)
    err = proc.stderr.decode("utf-8", "replace")
    return Outcome(tuple(argv), proc.returncode, err, verdict(proc.returncode, err),
                   time.perf_counter() - start)


def execute(case: Case) -> list[Outcome]:
    """Run a case in a fresh folder: its first command, then (after exit 0) the others; stops
    at the first problem."""
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="cachepart-fuzz-") as tmp:
        cwd = Path(tmp)
        for name, data in case.files:
            path = cwd / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for i, argv in enumerate((case.argv, *case.then)):
            outcome = run_cli(argv, cwd)
            outcomes.append(outcome)
            if outcome.problem is not None or (i == 0 and outcome.code != 0):
                break
    return outcomes


def check(case: Case) -> None:
    for outcome in execute(case):
        if outcome.problem is not None:
            lines = outcome.stderr.strip().splitlines()
            tail = "\n".join(lines if len(lines) <= 6 else [*lines[:3], "...", *lines[-3:]])
            raise AssertionError(f"cachepart {shlex.join(outcome.argv)}: {outcome.problem}\n"
                                 f"--- stderr ---\n{tail}\n--- case ---\n{case!r}")


# --------------------------------------------------------------------------------------------
# Values of every type


class Raw:
    """A token written verbatim into a JSON or YAML document (NaN, 1e400, 5,000 digits...)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"Raw({self.token[:40]!r})"


JSON_RAW = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "1" + "0" * 5000,
            "1.5e+308", "123456789012345678901234567890.5"]
YAML_RAW = [".nan", ".inf", "-.inf", "1e400", "0x1F", "0o17", "1_000", "9" * 5000, "~", "yes",
            "off", "12:30:00", "2001-12-14", "!!binary aGk=", "!!float 3", "!!str 5",
            "!!python/object/apply:os.getcwd []", "&anchor 3", "*nowhere", "'unterminated",
            "[1, 2", "{a: 1", "|\n  text", "!!set {a, b}", "!!timestamp 2001-12-14t21:59:43.10-05:00"]

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
NAMES = st.one_of(
    st.sampled_from(["embed", "block0", "block0", "head", "", " ", "é", "层", "a\nb", "tab\there",
                     "\u202eevil", "x" * 300, "\ud800", "null", "0", "../up", "a,b", "-k",
                     "\x00nul", "😀"]),
    TEXT)


def numbers(json: bool = True) -> st.SearchStrategy[Any]:
    """Numbers plausible and not: huge, negative, zero, tiny, non-finite, quoted, raw tokens."""
    raw = JSON_RAW if json else YAML_RAW
    return st.one_of(
        st.integers(0, 10**6),
        st.integers(-10**6, -1),
        st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**62, 2**62 + 1, 2**63, 2**64, 10**30,
                         -(2**63), 10**100]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e308, 0.5, 1.5, 3.0, 1e20]),
        st.sampled_from(["NaN", "nan", "inf", "-inf", "Infinity", "1e400", "12", "", "0x10",
                         "1,000", "1 000", "3.0", "-5", "1e3"]),
        st.sampled_from(raw).map(Raw),
    )


KEYS = st.one_of(TEXT, NAMES.filter(lambda s: "\ud800" not in s))


def _nest(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4))


_ANY = {kind: st.recursive(st.one_of(st.none(), st.booleans(), numbers(kind), TEXT, NAMES),
                           _nest, max_leaves=8) for kind in (True, False)}


def anything(json: bool = True) -> st.SearchStrategy[Any]:
    """Any JSON (or YAML) value, nested a little."""
    return _ANY[json]


PERCENT = st.sampled_from(range(100))  # uniform (st.integers draws its bounds far more often)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any],
           percent_good: int = 75) -> st.SearchStrategy[Any]:
    """``good`` with probability ``percent_good`` %, else ``bad`` (shrinks towards good)."""
    return PERCENT.flatmap(lambda n: good if n < percent_good else bad)


def chance(percent: int) -> st.SearchStrategy[bool]:
    """True with probability ``percent`` % (shrinks towards False)."""
    return PERCENT.map(lambda n: n >= 100 - percent)


def _raw_hook(tokens: list[str]):
    def hook(value: object) -> str:
        if isinstance(value, Raw):
            tokens.append(value.token)
            return f"RAWTOKEN{len(tokens) - 1}Q"
        raise TypeError(f"cannot write {type(value).__name__}")
    return hook


def dump_json(doc: Any, ascii_only: bool = True, indent: int | None = None) -> bytes:
    tokens: list[str] = []
    text = json.dumps(doc, default=_raw_hook(tokens), ensure_ascii=ascii_only, indent=indent)
    for i, token in enumerate(tokens):
        text = text.replace(f'"RAWTOKEN{i}Q"', token, 1)
    return text.encode("utf-8", "surrogatepass")


def _plain(doc: Any, tokens: list[str]) -> Any:
    """``doc`` with every Raw a marker string, for yaml.safe_dump."""
    if isinstance(doc, Raw):
        tokens.append(doc.token)
        return f"RAWTOKEN{len(tokens) - 1}Q"
    if isinstance(doc, dict):
        return {_plain(k, tokens): _plain(v, tokens) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_plain(v, tokens) for v in doc]
    return doc


def dump_yaml(doc: Any, unicode: bool = True) -> bytes:
    tokens: list[str] = []
    text = yaml.safe_dump(_plain(doc, tokens), allow_unicode=unicode, sort_keys=False, width=100)
    for i, token in enumerate(tokens):
        text = text.replace(f"RAWTOKEN{i}Q", token, 1)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` as it is, or broken as text: cut short, a byte changed, bytes inserted, a BOM,
    not UTF-8, empty, or something else entirely."""
    how = draw(st.sampled_from(["keep"] * 14 + ["cut", "flip", "insert", "bom", "latin1",
                                                "empty", "nest", "other"]))
    if how == "keep" or not data:
        return data
    at = draw(st.integers(0, len(data)))
    if how == "cut":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    if how == "insert":
        return data[:at] + draw(st.sampled_from([b"\t", b"\x00", b"\xff\xfe", b"\n- ", b": ",
                                                  b"{", b"]", b",", b"\\", b"\xc3"])) + data[at:]
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "latin1":
        return data + "\nnote: caf\xe9".encode("latin-1")
    if how == "empty":
        return draw(st.sampled_from([b"", b" ", b"\n", b"null", b"[]", b"{}", b"0", b'""']))
    if how == "nest":
        depth = draw(st.sampled_from([150, 250, 1000, 100_000]))
        return b"[" * depth + b"]" * depth
    return draw(st.binary(max_size=64))


# --------------------------------------------------------------------------------------------
# (1) Chain JSON documents

DEVICE_KINDS = ["h100-sxm", "h100-pcie", "h200", "a100-80gb", "b200", "l4", "mi300x"]
LAYER_FIELDS = ["kind", "params", "flops", "bytes_moved", "kv_cache_bytes", "latency_hbm_s",
                "kv_bytes_per_token", "backward_latency_s", "stash_bytes", "train_state_bytes",
                "backward_flops", "recompute_flops", "buffer_bytes"]
BYTES = st.integers(0, 2 * 10**6)
SECONDS = st.floats(0, 1, allow_nan=False)


def _layer_value(key: str, good: int) -> st.SearchStrategy[Any]:
    if key == "kind":
        plausible: st.SearchStrategy[Any] = st.sampled_from(["embed", "block", "head", "attention"])
    elif key.endswith("_s") or "flops" in key:
        plausible = SECONDS
    else:
        plausible = BYTES
    return mostly(plausible, anything(), good)


@st.composite
def chain_layer(draw: st.DrawFn, good: int, name: str) -> Any:
    """One layer; each field is plausible with probability ``good`` percent."""
    if draw(chance(100 - max(good, 98))):
        return draw(anything())  # not an object at all
    sure = max(good, 95)
    layer: dict[str, Any] = {}
    if not draw(chance(100 - sure)):
        layer["name"] = draw(mostly(st.just(name), mostly(NAMES, anything(), 80), good))
    for key in ("weight_bytes", "activation_bytes"):
        if not draw(chance(100 - sure)):
            layer[key] = draw(mostly(BYTES, anything(), good))
    if not draw(chance(100 - sure)):
        per_kind = st.dictionaries(st.one_of(st.sampled_from(DEVICE_KINDS), TEXT),
                                   mostly(SECONDS, anything(), good), max_size=3)
        layer["latency_s"] = draw(mostly(SECONDS, st.one_of(anything(), per_kind), good))
    for key in draw(st.lists(st.sampled_from(LAYER_FIELDS), max_size=3, unique=True)):
        layer[key] = draw(_layer_value(key, good))
    if draw(chance(100 - sure)):
        layer[draw(TEXT)] = draw(anything())
    return layer


@st.composite
def chain_document(draw: st.DrawFn) -> Any:
    """A chain JSON document: all plausible, a little broken or thoroughly broken."""
    if draw(chance(3)):
        return draw(anything())
    good = draw(st.sampled_from([100, 100, 97, 90, 75, 50]))
    sure = max(good, 95)
    link = st.fixed_dictionaries({}, optional={
        "bandwidth_bytes_per_s": mostly(st.floats(1e6, 1e12), anything(), good),
        "latency_s": mostly(st.floats(0, 1e-3), anything(), good),
        "extra": anything()} if good < 100 else {
        "bandwidth_bytes_per_s": st.floats(1e6, 1e12), "latency_s": st.floats(0, 1e-3)})
    doc = draw(st.fixed_dictionaries({}, optional={
        "name": mostly(NAMES, anything(), good),
        "input_bytes": mostly(BYTES, anything(), good),
        "link": mostly(link, anything(), good),
        "metadata": mostly(st.dictionaries(TEXT, anything(), max_size=3), anything(), good),
        "source": mostly(TEXT, anything(), good),
    }))
    if not draw(chance(100 - sure)):
        count = draw(st.sampled_from(range(9)))
        names = draw(st.sampled_from([
            [f"layer{i}" for i in range(count)],
            [f"层{i}é" for i in range(count)],
            draw(st.lists(NAMES, min_size=count, max_size=count))]))  # duplicates, odd names
        layers = [draw(chain_layer(good, name)) for name in names]
        doc["layers"] = draw(mostly(st.just(layers), anything(), sure))
    if draw(chance(100 - sure)):
        doc[draw(TEXT)] = draw(anything())
    return doc


@st.composite
def chain_cases(draw: st.DrawFn) -> Case:
    # The command first: a choice drawn after a large document leans to its first option.
    command = draw(st.sampled_from(["solve", "inspect", "solve", "compare"]))
    k = draw(st.sampled_from(["2", "1", "3"]))
    c = draw(st.sampled_from(["10MB", "1000", "100kB", "1GB", "hbm"]))
    then: tuple[tuple[str, ...], ...] = ()
    if command == "inspect":
        argv = ["inspect", "chain.json", *draw(st.sampled_from([[], ["--json"]]))]
    elif command == "compare":
        methods = draw(st.sampled_from(["dp,greedy,parametric", "uniform,params", "ilp,dp"]))
        argv = ["compare", "chain.json", "-k", k, "-c", c, "--methods", methods,
                "--time-limit", "20"]
    else:
        argv = ["solve", "chain.json", "-k", k, "-c", c, "--time-limit", "20", "-o", "plan.json"]
        argv += draw(st.sampled_from([[], ["-m", "ilp"], ["-m", "dp"], ["-m", "greedy"],
                                      ["--phase", "train"], ["--memory-model", "peak"],
                                      ["--cluster", "1x2-h100-sxm"], ["--objective", "kv-capacity"]]))
        then = (draw(st.sampled_from([("simulate", "plan.json"), ("show", "plan.json"),
                                      ("export", "plan.json", "--to", "accelerate")])),)
    doc = draw(chain_document())
    data = draw(corrupted(dump_json(doc, ascii_only=draw(st.booleans()),
                                    indent=draw(st.sampled_from([None, 1])))))
    return Case(tuple(argv), (("chain.json", data),), then)


@FUZZ
@given(case=chain_cases())
def test_fuzz_chain_json(case: Case) -> None:
    check(case)


# --------------------------------------------------------------------------------------------
# (2) Model spec YAML documents

SPEC_BASES = ["tiny-llama", "gpt2", "bert-large", "vit-b16", "mixtral-8x7b", "llama2-70b",
              "resnet50", "paper-dense-16l"]
TRANSFORMER_FIELDS = {
    "hidden": "int", "layers": "int", "heads": "int", "ffn": "int", "kv_heads": "int",
    "head_dim": "int", "vocab": "int", "kind": ["decoder", "encoder", "vit"],
    "mlp": ["gated", "plain"], "norm": ["rmsnorm", "layernorm"], "norms_per_layer": [1, 2, 4],
    "attn_bias": "bool", "qkv_bias": "bool", "mlp_bias": "bool", "lm_head": "bool",
    "tied_embeddings": "bool", "positions": "int", "token_types": "int", "embed_norm": "bool",
    "final_norm": "bool", "pooler": "bool", "experts": "int", "experts_per_token": "int",
    "classes": "int", "image": "int", "patch": "int", "channels": "int", "fused_qkv": "bool",
    "quantization": "any",
}
RESNET_FIELDS = {"blocks": "ints", "widths": "ints", "expansion": "int", "image": "int",
                 "classes": "int", "channels": "int"}
TOP_FIELDS = {"name": "name", "architecture": ["transformer", "resnet"], "arch": "any",
              "source": "text", "published_params": "big", "published_active_params": "big",
              "declared_params": "big", "notes": "text"}


EDGE_INTS = st.sampled_from([0, -1, 3, 7, 1000, 10**5, 10**6, 10**9, 10**12, 2**62, 2**63,
                             10**30, 64.0, 1e3, 1.5, True])


def _spec_value(kind: Any, good: int) -> st.SearchStrategy[Any]:
    """A value of a spec field: plausible with probability ``good`` %, else an edge value of
    the right type (a huge or zero count) or anything at all."""
    junk = anything(json=False)
    edge: st.SearchStrategy[Any] = junk
    if isinstance(kind, list):
        plausible: st.SearchStrategy[Any] = st.sampled_from(kind)
    elif kind == "int":
        plausible = st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 256])
        edge = EDGE_INTS
    elif kind == "ints":
        plausible = st.lists(st.sampled_from([1, 2, 3, 4, 8]), min_size=1, max_size=5)
        edge = st.lists(EDGE_INTS, max_size=5)
    elif kind == "bool":
        plausible = st.booleans()
    elif kind == "big":
        plausible = st.sampled_from([1, 1000, 10**9, 10**12])
        edge = EDGE_INTS
    elif kind in ("name", "text"):
        plausible = NAMES.filter(lambda s: "\ud800" not in s)
    else:
        plausible = junk
    return mostly(plausible, mostly(edge, junk, 70), good)


def _spec_base(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((ZOO / f"{name}.yaml").read_text("utf-8"))
    assert isinstance(doc, dict)
    return doc


@st.composite
def spec_document(draw: st.DrawFn) -> Any:
    doc = _spec_base(draw(st.sampled_from(SPEC_BASES)))
    arch_fields = RESNET_FIELDS if doc["architecture"] == "resnet" else TRANSFORMER_FIELDS
    good = draw(st.sampled_from([100, 90, 70, 40]))
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 2, 3, 4]))):
        arch = doc.get("arch")
        op = draw(st.sampled_from(["set-arch"] * 8 + ["drop-arch", "set-top", "set-top",
                                                      "drop-top", "add-unknown", "swap-arch"]))
        if op == "set-arch" and isinstance(arch, dict):
            key = draw(st.sampled_from(sorted(arch_fields)))
            arch[key] = draw(_spec_value(arch_fields[key], good))
        elif op == "drop-arch" and isinstance(arch, dict) and arch:
            del arch[draw(st.sampled_from(sorted(arch)))]
        elif op == "set-top":
            key = draw(st.sampled_from(sorted(TOP_FIELDS)))
            doc[key] = draw(_spec_value(TOP_FIELDS[key], good))
        elif op == "drop-top":
            del doc[draw(st.sampled_from(sorted(doc)))]
        elif op == "add-unknown":
            target = arch if isinstance(arch, dict) and draw(st.booleans()) else doc
            target[draw(st.one_of(TEXT, st.sampled_from(["Hidden", "layer", "arch "])))] = \
                draw(anything(json=False))
        elif op == "swap-arch" and isinstance(arch, dict):  # a transformer's fields on a resnet
            other = TRANSFORMER_FIELDS if arch_fields is RESNET_FIELDS else RESNET_FIELDS
            key = draw(st.sampled_from(sorted(other)))
            arch[key] = draw(_spec_value(other[key], good))
    if draw(chance(3)):
        return draw(anything(json=False))
    return doc


RAW_YAML = [
    b"name: a\nname: b\narchitecture: transformer\narch: {hidden: 8, layers: 1, heads: 1, ffn: 8}\n",
    b"a: &x [1, 2]\nb: *x\n",
    b"a: &a [*a]\n",
    b"--- 1\n--- 2\n",
    b"!!python/object/apply:os.system ['true']\n",
    b"\tname: tabbed\n",
    b"name: x\narchitecture: transformer\narch:\n  hidden: 64\n   layers: 2\n",
    b"? [complex, key]\n: value\n",
    b"name: " + b"x" * 1_100_000 + b"\n",  # over the 1 MiB a spec may have
    b"%YAML 9.9\n---\nname: x\n",
    b"lol: &l [a, a, a]\nlol2: &l2 [*l, *l, *l]\n",
]


@st.composite
def spec_cases(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(["spec.yaml", "spec.yaml", "spec.yml", "SPEC.YAML"]))
    argv = draw(st.sampled_from([
        ["solve", name, "-k", "2", "-c", "hbm", "--seq", "16", "-q", "--time-limit", "20"],
        ["inspect", name], ["inspect", name, "--json"], ["inspect", name, "--granularity", "op"],
        ["solve", name, "-k", "4", "-c", "80GB", "--seq", "128", "--phase", "decode", "-q",
         "--time-limit", "20"],
        ["solve", name, "-k", "4", "-c", "80GB", "--seq", "128", "--phase", "train", "-q",
         "--time-limit", "20"],
    ]))
    if draw(chance(7)):
        data = draw(st.sampled_from(RAW_YAML))
    else:
        data = draw(corrupted(dump_yaml(draw(spec_document()), unicode=draw(st.booleans()))))
    return Case(tuple(argv), ((name, data),))


@FUZZ
@given(case=spec_cases())
def test_fuzz_spec_yaml(case: Case) -> None:
    check(case)


# --------------------------------------------------------------------------------------------
# (3) Plan JSON documents, mutated from real plans

PLAN_COMMANDS = {
    # name: the solve arguments after `solve tiny-llama`
    "brief": ["--devices", "2", "--capacity", "800kB", "--batch", "2", "--seq", "16"],
    "two-stage": ["--devices", "2", "--capacity", "400kB", "--batch", "2", "--seq", "16"],
    "decode": ["--devices", "2", "--capacity", "400kB", "--batch", "4", "--micro-batch", "2",
               "--seq", "16", "--phase", "decode"],
    "train": ["--devices", "6", "--capacity", "1MB", "--batch", "2", "--seq", "16",
              "--phase", "train"],
    "cluster": ["--capacity", "400kB", "--batch", "2", "--seq", "16", "--cluster", "1x2-h100-sxm"],
}
EXPORT_TARGETS = ["vllm", "sglang", "trtllm", "megatron", "torchtitan", "deepspeed", "pipelining",
                  "accelerate", "torchgpipe"]


class Plans(dict):  # type: ignore[type-arg]
    """The real plans by name; printed by name only in a falsifying example."""

    def __repr__(self) -> str:
        return f"<real plans {', '.join(self)}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' printer
        printer.text(repr(self))


@pytest.fixture(scope="module")
def plans() -> Plans:
    """Real plans of tiny-llama, solved once per module (the first is the issue's)."""
    out = Plans()
    with tempfile.TemporaryDirectory(prefix="cachepart-fuzz-") as tmp:
        for name, args in PLAN_COMMANDS.items():
            outcome = run_cli(["solve", "tiny-llama", *args, "-q", "-o", f"{name}.json"], Path(tmp))
            assert outcome.code == 0, (name, outcome.stderr)
            out[name] = json.loads((Path(tmp) / f"{name}.json").read_text("utf-8"))
    return out


def _paths(doc: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``doc`` (the root excluded)."""
    found = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found.append((*here, key))
        found.extend(_paths(value, (*here, key)))
    return found


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _tweak_number(draw: st.DrawFn, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return draw(numbers())
    return draw(st.sampled_from([
        -value, 0, value + 1, value - 1, value * 10**6, value * 10**30, 2**63, float(value) + 0.5,
        str(value), [value], None, True, Raw("NaN"), Raw("Infinity"), Raw("1e400"),
        float(value), int(value) if math.isfinite(value) else 0]))


@st.composite
def plan_document(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3, 4]))):
        op = draw(st.sampled_from(["delete", "set", "number", "number", "add", "stages", "stages",
                                   "layers", "count", "type"]))
        paths = _paths(doc)
        stages = doc.get("stages") if isinstance(doc, dict) else None
        if op in ("delete", "set", "type") and paths:
            path = draw(st.sampled_from(paths))
            parent, key = _at(doc, path[:-1]), path[-1]
            if op == "delete":
                del parent[key]
            elif op == "set":
                parent[key] = draw(anything())
            else:  # the same value as another type
                value = parent[key]
                parent[key] = draw(st.sampled_from(
                    [json.dumps(value), [value], {"value": value}, None, bool(value) if
                     not isinstance(value, dict | list) else len(value)]))
        elif op == "number":
            leaves = [p for p in paths if isinstance(_at(doc, p), int | float)]
            if leaves:
                path = draw(st.sampled_from(leaves))
                parent = _at(doc, path[:-1])
                parent[path[-1]] = _tweak_number(draw, parent[path[-1]])
        elif op == "add":
            dicts = [p for p in [(), *paths] if isinstance(_at(doc, p), dict)]
            target = _at(doc, draw(st.sampled_from(dicts))) if dicts else None
            if target is not None:
                key = draw(st.one_of(TEXT, st.sampled_from(
                    ["tp_degree", "device_type", "layers", "index", "schema_version", "cluster",
                     "microbatches", "kv_capacity_tokens", "phase", "link", "resident_layers"])))
                target[key] = draw(anything())
        elif op == "stages" and isinstance(stages, list) and stages:
            how = draw(st.sampled_from(["reverse", "duplicate", "remove", "empty", "many"]))
            if how == "reverse":
                stages.reverse()
            elif how == "duplicate":
                stages.append(json.loads(json.dumps(draw(st.sampled_from(stages)))))
            elif how == "remove":
                stages.pop(draw(st.integers(0, len(stages) - 1)))
            elif how == "empty":
                stages.clear()
            else:
                stages.extend(json.loads(json.dumps(stages)) * draw(st.sampled_from([3, 50])))
        elif op == "layers" and isinstance(stages, list) and stages:
            stage = draw(st.sampled_from(stages))
            layers = stage.get("layers") if isinstance(stage, dict) else None
            if isinstance(layers, list):
                how = draw(st.sampled_from(["shuffle", "duplicate", "remove", "move", "rename",
                                            "clear"]))
                if how == "shuffle":
                    layers[:] = draw(st.permutations(layers))
                elif how == "duplicate" and layers:
                    layers.append(draw(st.sampled_from(layers)))
                elif how == "remove" and layers:
                    layers.pop(draw(st.integers(0, len(layers) - 1)))
                elif how == "move" and layers and len(stages) > 1:
                    other = draw(st.sampled_from(stages))
                    if isinstance(other, dict) and isinstance(other.get("layers"), list):
                        other["layers"].append(layers.pop())
                elif how == "rename" and layers:
                    layers[draw(st.integers(0, len(layers) - 1))] = draw(NAMES)
                elif how == "clear":
                    layers.clear()
        elif op == "count" and isinstance(doc, dict):
            count = draw(st.sampled_from([0, 1, 2, 3, 7, -1, 10**6, 2**63, 1.5]))
            for section, key in (("objective", "num_stages"), ("hardware", "devices"),
                                 ("model", "num_layers")):
                if isinstance(doc.get(section), dict) and draw(st.booleans()):
                    doc[section][key] = count
    return doc


@st.composite
def plan_argv(draw: st.DrawFn, plan: str) -> list[str]:
    command = draw(st.sampled_from(["simulate", "show", "export", "simulate", "export", "plot"]))
    if command == "show":
        return ["show", plan]
    if command == "export":
        return ["export", plan, "--to", draw(st.sampled_from(EXPORT_TARGETS)),
                *draw(st.sampled_from([[], ["--json"]]))]
    if command == "plot":
        return ["plot", plan, "-o", "out.png",
                *draw(st.sampled_from([[], ["--microbatches", "3"]]))]
    argv = ["simulate", plan]
    argv += draw(st.sampled_from([[], ["--json"], ["-M", "4"], ["--decode-steps", "3"],
                                  ["--context", "16"], ["-M", "2", "--context", "8", "--json"]]))
    return argv


@st.composite
def plan_cases(draw: st.DrawFn, plans: dict[str, dict[str, Any]]) -> Case:
    argv = draw(plan_argv("plan.json"))  # first: see chain_cases
    base = plans[draw(st.sampled_from(sorted(plans)))]
    doc = draw(plan_document(base))
    data = draw(corrupted(dump_json(doc, indent=draw(st.sampled_from([None, 2])))))
    return Case(argv, (("plan.json", data),))


@FUZZ
@given(data=st.data())
def test_fuzz_plan_json(plans: dict[str, dict[str, Any]], data: st.DataObject) -> None:
    check(data.draw(plan_cases(plans), label="case"))


# --------------------------------------------------------------------------------------------
# (4) Option vectors

ARG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/\\"),
                   max_size=20)
LONG = st.sampled_from(["x" * 300, "9" * 5000, "a" * 5000, "1" + "0" * 400, "é" * 200])
JUNK = st.one_of(
    st.sampled_from(["abc", "", " ", "nan", "NaN", "inf", "-inf", "1e400", "1.5", "1e3", "0x10",
                     "1,2", "½", "٣", "--", "-", "true", "None", "-5", "1_000"]),
    ARG_TEXT, LONG)


@dataclass(frozen=True)
class Opt:
    """An option's values: plausible ones, and edge ones of the right form (zero, negative,
    huge...); any option may also get junk (JUNK)."""

    good: tuple[str, ...] = ()
    edge: tuple[str, ...] = ()

    def values(self, good: int) -> st.SearchStrategy[str]:
        edge = st.sampled_from(self.edge) if self.edge else JUNK
        return mostly(st.sampled_from(self.good), mostly(edge, JUNK, 80), good)


FLAG = Opt()
INT = Opt(("1", "2", "3", "4", "16", "64"),
          ("0", "-1", "1000000", "100000000", "2147483648", "9223372036854775808",
           "1" + "0" * 30, "-9223372036854775809", "+3", "٣"))
FLOAT = Opt(("0.5", "1", "10", "0.9", "1e-3"),
            ("0", "-1", "-0.0", "1e-300", "5e-324", "1e300", "nan", "inf", "-inf", "1e400",
             "0.99999999999", "1.0000001", "1e9"))
CAPACITY = Opt(("800kB", "400kB", "1MB", "hbm", "l2", "l2-usable", "smem", "1000000", "50MiB",
                "80GB"),
               ("0", "1", "-5MB", "1e400GB", "5 parsecs", "99999999999999999999999", "infGB",
                "nanMB", "0.5B", "1e-9GB", "4611686018427387904", "1 kB", "hbm2", "L2", "1e18"))
CLUSTER = Opt(("1x2-h100-sxm", "2x2-h100-sxm", "paper", "1x1-l4", "cluster.json"),
              ("0x2-h100-sxm", "2x0-h100-sxm", "99999x99999-h100-sxm", "1x1000000-h100-sxm",
               "1x2-nope", "-1x2-h100-sxm", "1x2", "x", "missing.json", "plan.json", "chain.json",
               "dir", "1x2-H100-SXM", "01x02-h100-sxm"))
TP = Opt(("1", "1,2", "2", "1,2,4,8"),
         ("0", "-1", "1,,2", "3", "1,1", "1e9", "2,1", ",", "1000000", "1,2,4,8,16,32,64,128,256",
          " 1 , 2 "))
SHAPE = Opt(("2,16", "8,128", "1,1"),
            ("0,0", "-1,2", "a,b", "1", "1,2,3", "2,", "99999999,99999999", "1e3,2"))
DEVICE = Opt(("h100-sxm", "h100-pcie", "h200", "a100-80gb", "b200", "l4", "mi300x", "tpu-v5e",
              "ipu-bow", "groq-lpu", "cerebras-wse3", "edgetpu"),
             ("H100-SXM", "h100", "", "cluster.json", "nope"))
# Paths stay inside the example's folder (tests run as root in some containers).
OUTPUT = Opt(("out.json", "out.csv", "out.png", "new/out.json"),
             ("sub/none/x.json", ".", "", "x" * 300, "/proc/nope/x.json", "-", "é.json",
              "plan.json", "cluster.json", " ", "dir", "dir/", "out", "a" * 255 + ".json"))
PROFILE = Opt(("profile.json",),
              ("missing.json", "plan.json", "cluster.json", "chain.json", "dir", "",
               "spec.yaml"))


def choice(*values: str) -> Opt:
    return Opt(values, (*(v.upper() for v in values), "", " " + values[0]))


ENGINES = ["vllm", "sglang", "trtllm", "megatron", "torchtitan", "deepspeed", "pipelining",
           "accelerate"]
DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8", "int4")
MODEL_OPTIONS = {
    "--batch": INT, "--micro-batch": INT, "--seq": INT,
    "--phase": choice("prefill", "decode", "train"), "--dtype": choice(*DTYPES),
    "--weight-dtype": choice(*DTYPES), "--attention": choice("fused", "eager"),
    "--granularity": choice("block", "op"), "--device": DEVICE,
    "--optimizer": choice("adam", "sgd"), "--precision": choice("mixed", "bf16"),
    "--recompute": choice("none", "selective", "full"), "--input-shape": SHAPE,
    "--input-dtype": choice("float32", "bfloat16", "float16", "long", "int32"),
}
PROBLEM_OPTIONS = {
    "--devices": INT, "--capacity": CAPACITY, "--cluster": CLUSTER,
    "--placement": choice("ordered", "free"), "--schedule": choice("gpipe", "1f1b"),
    "--microbatches": INT, "--memory-model": choice("additive", "peak"), "--time-limit": FLOAT,
    "--profile": PROFILE, "--seed": INT, "--workers": INT,
}
OPTIONS: dict[str, dict[str, Opt]] = {
    "solve": {**MODEL_OPTIONS, **PROBLEM_OPTIONS,
              "--method": choice("auto", "ilp", "dp", "parametric", "greedy", "uniform", "params"),
              "--tp": TP, "--devices-per-node": INT, "--residency": choice("full", "partial"),
              "--engine": choice(*ENGINES), "--engine-memory-fraction": FLOAT,
              "--objective": choice("latency", "kv-capacity"),
              "--solver": choice("cpsat", "highs", "cbc"), "--output": OUTPUT,
              "--steady-state": FLAG, "--quiet": FLAG},
    "compare": {**MODEL_OPTIONS, **PROBLEM_OPTIONS,
                "--methods": Opt(("dp,greedy", "ilp", "parametric,uniform", "params"),
                                 ("dp,,greedy", "magic", "dp,dp", ",", "ILP")),
                "--engine": choice(*ENGINES), "--csv": OUTPUT},
    "inspect": {**MODEL_OPTIONS, "--json": FLAG},
    "show": {},
    "simulate": {"--microbatches": INT, "-M": INT, "--decode-steps": INT, "--context": INT,
                 "--json": FLAG},
    "export": {"--to": choice(*EXPORT_TARGETS), "--json": FLAG},
    "plot": {"--output": OUTPUT, "-o": OUTPUT, "--microbatches": INT},
}
MODEL = Opt(("tiny-llama", "tiny-llama", "tiny-llama", "gpt2", "resnet50", "vit-b16",
             "bert-large", "chain.json", "spec.yaml"),
            ("plan.json", "missing.yaml", "dir", "", "nope", "x" * 300, "-", "-k",
             "missing.py:build", "cluster.json", "profile.json", "TINY-LLAMA"))
PLAN = Opt(("plan.json", "decode.json", "train.json", "cluster-plan.json"),
           ("missing.json", "dir", "", "chain.json", "spec.yaml", "x" * 300, "-", "profile.json",
            "cluster.json"))

CHAIN_FILE = json.dumps({"name": "toy", "input_bytes": 65536, "layers": [
    {"name": "embed", "weight_bytes": 262144, "activation_bytes": 16384, "latency_s": 0.0012},
    {"name": "block0", "weight_bytes": 1000, "activation_bytes": 2000, "latency_s": 0.5},
    {"name": "head", "weight_bytes": 3000, "activation_bytes": 10, "latency_s": 0.25}]}).encode()
CLUSTER_FILE = json.dumps({"name": "lab", "device_types": {
    "big": {"capacity_bytes": 800000, "device": "h100-sxm"}, "small": {"capacity_bytes": 400000}},
    "nodes": [{"devices": {"big": 1, "small": 1},
               "link": {"bandwidth_bytes_per_s": 3e11, "latency_s": 2e-6}}],
    "inter_node_link": {"bandwidth_bytes_per_s": 5e10, "latency_s": 5e-6}}).encode()
PROFILE_LAYERS = ["embed", "block0", "block1", "block2", "block3", "head"]


@st.composite
def profile_file(draw: st.DrawFn, good: int) -> bytes:
    """A profile of tiny-llama (cachepart profile's format), its numbers fuzzed."""
    layers = [{"name": n, "latency_s": draw(mostly(SECONDS, numbers(), good))}
              for n in PROFILE_LAYERS]
    doc: dict[str, Any] = {"schema": "cachepart-profile/1", "model": "tiny-llama",
                           "device": "h100-sxm", "workload": {"batch": 2, "seq_len": 16},
                           "layers": layers}
    if draw(chance(100 - good)):
        doc["layers"] = draw(st.sampled_from([layers[:3], layers * 2, [], layers[::-1]]))
    if draw(chance(100 - good)):
        del doc[draw(st.sampled_from(sorted(doc)))]
    return dump_json(doc)


@st.composite
def cli_cases(draw: st.DrawFn, command: str, plans: dict[str, dict[str, Any]]) -> Case:
    """``command`` with a few of its real options, each with a plausible, edge or junk value
    (how plausible drawn once per vector), in a folder holding every file they may name."""
    good = draw(st.sampled_from([100, 80, 60, 40]))
    files = [("chain.json", CHAIN_FILE), ("cluster.json", CLUSTER_FILE), ("dir/keep", b""),
             ("spec.yaml", (ZOO / "tiny-llama.yaml").read_bytes()),
             ("plan.json", dump_json(plans["brief"], indent=2)),
             ("decode.json", dump_json(plans["decode"], indent=2)),
             ("train.json", dump_json(plans["train"], indent=2)),
             ("cluster-plan.json", dump_json(plans["cluster"], indent=2))]
    options = OPTIONS[command]
    argv = [command]
    if command in ("solve", "compare", "inspect"):
        argv.append(draw(MODEL.values(good)))
        if command != "inspect":
            # defaults that the drawn options override (the last of a repeated option wins)
            argv += ["--seq", "16", "--batch", "2", "--time-limit", "20"]
            if not draw(chance(15)):
                argv += ["--devices", "2", "--capacity", "800kB"]
            if command == "compare" and not draw(chance(30)):
                argv += ["--methods", "dp,greedy,parametric"]
    else:
        argv.append(draw(PLAN.values(good)))
        if command == "export" and not draw(chance(15)):
            argv += ["--to", draw(st.sampled_from(EXPORT_TARGETS))]
    if options:
        for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=5)):
            argv.append(name)
            if options[name] is not FLAG:
                argv.append(draw(options[name].values(good)))
    if draw(chance(4)):  # an unknown option, or an option left without its value
        argv.append(draw(st.sampled_from(["--nope", "--json=1", "-x", *sorted(options)[:3]])))
    if draw(chance(8)):  # the positional moved to the end
        argv.append(argv.pop(1))
    files.append(("profile.json", draw(profile_file(good))))
    return Case(argv, files, fixed=[name for name, _ in files if name != "profile.json"])


@CLI_FUZZ
@pytest.mark.parametrize("command", sorted(OPTIONS))
@given(data=st.data())
def test_fuzz_cli_options(command: str, plans: dict[str, dict[str, Any]],
                          data: st.DataObject) -> None:
    check(data.draw(cli_cases(command, plans), label="case"))
