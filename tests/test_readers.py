"""Every reader refuses hostile input in one line with exit 2: never a traceback, never a hang
(issue 15). Files that are not UTF-8, too large or nested too deep, YAML aliases, odd MODEL
names, booleans where numbers belong, and wrongly typed chain fields, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models import textio
from models.errors import SpecError
from models.safetensors_io import TensorIndex, read_header
from models.spec import load_spec
from models.zoo import load_zoo_model, zoo_names
from solver import InvalidInputError, load_chain, load_model
from solver.cli import main
from solver.hardware import load_devices

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "models" / "zoo"
CHAIN = {"name": "toy", "layers": [
    {"name": "a", "weight_bytes": 10, "activation_bytes": 10, "latency_s": 0.1},
    {"name": "b", "weight_bytes": 10, "activation_bytes": 10, "latency_s": 0.1}]}
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(30)
# The "billion laughs": nine levels of nine aliases, 9^9 values to whatever walks them.
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
DEEP = "[" * 100_000 + "]" * 100_000


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """Run the CLI in-process: the exit code, and exactly one line on stderr (warnings aside)."""
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("cachepart: warning")]
    assert "Traceback" not in err, err
    if code:
        assert len(lines) == 1 and lines[0].startswith("cachepart: error: "), err
        assert len(lines[0]) < 600, err
    return err


def _write(path: Path, data: str | bytes) -> str:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return str(path)


def _spec(**arch: object) -> str:
    """gpt2's spec with some arch fields replaced."""
    text = (ZOO / "gpt2.yaml").read_text(encoding="utf-8")
    for key, value in arch.items():
        lines = [f"  {key}: {value}" if line.strip().startswith(f"{key}:") else line
                 for line in text.splitlines()]
        text = "\n".join(lines) + "\n"
    return text


# ------------------------------------------------------------------ encodings and binaries

def test_latin1_spec(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "m.yaml", _spec().replace("name: gpt2", "name: caf\xe9").encode("latin-1"))
    err = _cli(["inspect", path], capsys)
    assert "not UTF-8 text (byte 0xe9 at offset 9)" in err and "m.yaml" in err


def test_utf16_config(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "config.json", '{"model_type": "llama"}'.encode("utf-16"))
    err = _cli(["inspect", path], capsys)
    assert "not UTF-8 text (byte 0xff at offset 0; it starts with a UTF-16" in err
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_bytes('{"model_type": "llama"}'.encode("utf-16"))
    assert "not UTF-8 text" in _cli(["inspect", str(checkpoint)], capsys)


def test_png_as_model_and_as_plan(tmp_path: Path, capsys) -> None:
    png = _write(tmp_path / "some.png", PNG)
    assert "unsupported file type" in _cli(["solve", png, "-k", "2", "-c", "100"], capsys)
    assert "not UTF-8 text (byte 0x89 at offset 0)" in _cli(["show", png], capsys)
    for suffix in ("json", "yaml"):
        named = _write(tmp_path / f"some.{suffix}", PNG)
        assert "not UTF-8 text (byte 0x89" in _cli(["solve", named, "-k", "2", "-c", "100"], capsys)


def test_utf8_bom_is_accepted(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "chain.json", b"\xef\xbb\xbf" + json.dumps(CHAIN).encode())
    _cli(["solve", path, "-k", "2", "-c", "100", "-o", str(tmp_path / "p.json")], capsys, code=0)


# ------------------------------------------------------------------ size and depth

@pytest.mark.parametrize("command", [["solve", "{f}", "-k", "2", "-c", "100"], ["inspect", "{f}"],
                                     ["show", "{f}"]])
def test_deep_json(tmp_path: Path, capsys, command: list[str]) -> None:
    path = _write(tmp_path / "deep.json", DEEP)
    err = _cli([a.replace("{f}", path) for a in command], capsys)
    assert "nested deeper than 200 levels" in err


def test_deep_json_inside_a_chain_and_a_checkpoint(tmp_path: Path, capsys) -> None:
    doc = {**CHAIN, "metadata": {"x": json.loads("[" * 250 + "]" * 250)}}
    path = _write(tmp_path / "chain.json", json.dumps(doc))
    assert "nested deeper than 200 levels" in _cli(["solve", path, "-k", "2", "-c", "100"], capsys)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    _write(checkpoint / "config.json", DEEP)
    assert "nested deeper than 200 levels" in _cli(["inspect", str(checkpoint)], capsys)


def test_deep_yaml(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "m.yaml", "name: x\nnotes: " + "[" * 300 + "]" * 300 + "\n")
    assert "nested deeper than 200 levels" in _cli(["inspect", path], capsys)


def test_size_limits(tmp_path: Path, capsys) -> None:
    big = tmp_path / "big.json"
    with open(big, "wb") as handle:  # sparse: 65 MiB of nothing, on no disk
        handle.truncate(65 * 2**20)
    err = _cli(["show", str(big)], capsys)
    assert "68,157,440 bytes, over the 64 MiB limit" in err
    yaml_file = _write(tmp_path / "big.yaml", "a: [" + ",".join(["1"] * 600_000) + "]\n")
    assert "over the 1 MiB limit" in _cli(["inspect", yaml_file], capsys)
    many = _write(tmp_path / "many.yaml", "a: [" + ",".join(["1"] * 200_000) + "]\n")
    start = time.perf_counter()
    assert "more than 100,000 YAML values" in _cli(["inspect", many], capsys)
    assert time.perf_counter() - start < 5


def test_numbers_past_the_digit_limit(tmp_path: Path, capsys) -> None:
    chain = _write(tmp_path / "chain.json", '{"layers": [' + "1" * 5000 + "]}")
    assert "more than" in _cli(["solve", chain, "-k", "2", "-c", "100"], capsys)
    spec = _write(tmp_path / "m.yaml", _spec(layers="1" * 5000))
    assert "more than" in _cli(["inspect", spec], capsys)


# ------------------------------------------------------------------ YAML aliases

def test_alias_bomb_as_spec_is_refused_quickly(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "bomb.yaml", BOMB)
    start = time.perf_counter()
    err = _cli(["inspect", path], capsys)
    assert time.perf_counter() - start < 5
    assert "anchors and aliases" in err


def test_any_alias_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.yaml", "name: &n gpt2\narchitecture: transformer\narch: {hidden: *n}\n")
    with pytest.raises(SpecError, match=r"m.yaml: YAML anchors and aliases .* \(line 1\)"):
        load_spec(path)
    device = _write(tmp_path / "d.yaml", "devices:\n  a: &a {base: h100-sxm}\n  b: *a\n")
    with pytest.raises(InvalidInputError, match=r"d.yaml: YAML anchors and aliases .* \(line 2\)"):
        load_devices(device)


def _subprocess(argv: list[str], devices: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter: CACHEPART_DEVICES is read when the catalogue is imported."""
    env = {**os.environ, "CACHEPART_DEVICES": devices}
    return subprocess.run([sys.executable, "-m", "solver.cli", *argv], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=30)


@pytest.mark.parametrize(("content", "message"), [
    (b"devices:\n  caf\xe9: {}\n", "not UTF-8 text (byte 0xe9 at offset 14)"),
    (BOMB.encode(), "anchors and aliases"),
    (b"devices: " + b"[" * 300 + b"]" * 300 + b"\n", "nested deeper than 200 levels"),
    (b"? [a]\n: 1\n", "not valid YAML at line 1"),
    (b"1: x\na: y\n", "unknown top-level field"),  # keys of two types: sorted() must not fail
])
def test_bad_device_file_is_one_line_when_a_device_is_used(tmp_path: Path, content: bytes,
                                                           message: str) -> None:
    path = tmp_path / "devices.yaml"
    path.write_bytes(content)
    zoo = _subprocess(["zoo"], str(path))
    assert zoo.returncode == 0 and "Traceback" not in zoo.stderr, zoo.stderr
    used = _subprocess(["inspect", "gpt2"], str(path))
    assert used.returncode == 2, used.stderr
    assert used.stderr.count("\n") == 1 and "Traceback" not in used.stderr, used.stderr
    assert used.stderr.startswith("cachepart: error: CACHEPART_DEVICES: ") and message in used.stderr


# ------------------------------------------------------------------ MODEL names

@pytest.mark.parametrize("command", ["solve", "inspect"])
def test_long_and_nul_model_names(command: str, capsys) -> None:
    extra = ["-k", "2", "-c", "100"] if command == "solve" else []
    err = _cli([command, "a" * 5000, *extra], capsys)
    assert "a name of 5,000 bytes, longer than the 255" in err
    assert "contains a NUL character" in _cli([command, "gpt2\x00x", *extra], capsys)
    deep = "/".join(["d"] * 3000)  # short names, a path past PATH_MAX
    assert "a path of 5,999 bytes" in _cli([command, deep, *extra], capsys)


def test_long_plan_and_cluster_paths(capsys) -> None:
    assert "cannot read" in _cli(["show", "p" * 5000], capsys)
    assert "longer than the 255" in _cli(["solve", "tiny-llama", "-k", "2", "-c", "hbm",
                                          "--cluster", "c" * 5000], capsys)


def test_long_paths_of_short_names_are_not_refused_as_long() -> None:
    with pytest.raises(InvalidInputError, match="neither a file nor a zoo model"):
        load_model("/".join(["d" * 200] * 10))
    with pytest.raises(InvalidInputError, match=r"MODEL: .* 256 bytes"):
        load_model("x" * 256)


# ------------------------------------------------------------------ booleans are not numbers

@pytest.mark.parametrize(("text", "message"), [
    (_spec().replace("published_params: 124439808", "published_params: true"),
     "published_params: must be a positive whole number, got True"),
    (_spec(layers="true"), "arch.layers: expected a number, got True"),
    (_spec(vocab="false"), "arch.vocab: expected a number, got False"),
    ((ZOO / "resnet50.yaml").read_text(encoding="utf-8").replace("  - 3\n", "  - true\n", 1),
     "arch.blocks: expected a number"),
])
def test_true_is_not_a_number_in_a_spec(tmp_path: Path, capsys, text: str, message: str) -> None:
    path = _write(tmp_path / "m.yaml", text)
    assert message in _cli(["inspect", path], capsys)


# ------------------------------------------------------------------ chain field types

@pytest.mark.parametrize(("field", "value", "message"), [
    ("kind", 5, "layer 'a'.kind: expected a layer kind (a non-empty string), got 5"),
    ("latency_hbm_s", "x", "layer 'a'.latency_hbm_s: expected a number, got 'x'"),
    ("params", -1, "layer 'a'.params: must be >= 0, got -1"),
    ("params", 1.5, "layer 'a'.params: must be a whole number"),
    ("flops", "x", "layer 'a'.flops: expected a number, got 'x'"),
    ("bytes_moved", True, "layer 'a'.bytes_moved: expected a number, got True"),
    ("kv_cache_bytes", "x", "layer 'a'.kv_cache_bytes: expected a number, got 'x'"),
    ("kv_bytes_per_token", True, "layer 'a'.kv_bytes_per_token: expected a number, got True"),
    ("weight_bytes", False, "layer 'a'.weight_bytes: expected a number, got False"),
    ("latency_s", True, "layer 'a'.latency_s: expected a number, got True"),
    ("buffer_bytes", [1], "layer 'a'.buffer_bytes: expected a number, got [1]"),
    ("name", 5, "layers[0].name: expected a non-empty string, got 5"),
])
def test_chain_fields_are_typed(tmp_path: Path, capsys, field: str, value: object,
                                message: str) -> None:
    doc = json.loads(json.dumps(CHAIN))
    doc["layers"][0][field] = value
    path = _write(tmp_path / "chain.json", json.dumps(doc))
    assert message in _cli(["solve", path, "-k", "2", "-c", "100"], capsys)


def test_quoted_values_are_cut(tmp_path: Path, capsys) -> None:
    doc = json.loads(json.dumps(CHAIN))
    doc["layers"][0].update(name="n" * 10_000, kind=["k" * 10_000])
    path = _write(tmp_path / "chain.json", json.dumps(doc))
    err = _cli(["solve", path, "-k", "2", "-c", "100"], capsys)
    assert "..." in err and len(err) < 300
    spec = _write(tmp_path / "m.yaml", _spec().replace("architecture: transformer",
                                                       "architecture: " + "x" * 10_000))
    assert len(_cli(["inspect", spec], capsys)) < 400
    profile = {"schema": "cachepart-profile/1", "model": "m", "device": "d",
               "layers": [{"name": "a", "latency_s": "s" * 10_000}]}
    prof = _write(tmp_path / "prof.json", json.dumps(profile))
    toy = _write(tmp_path / "toy.json", json.dumps(CHAIN))
    err = _cli(["solve", toy, "-k", "2", "-c", "100", "--profile", prof], capsys)
    assert len(err) < 300


# ------------------------------------------------------------------ safetensors headers

def _safetensors(path: Path, header: object) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(16))
    return path


@pytest.mark.parametrize("entry", [
    {"dtype": "F32", "shape": ["a"], "data_offsets": [0, 4]},
    {"dtype": "F32", "shape": [1], "data_offsets": ["0", 4]},
    {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]},
    {"dtype": 5, "shape": [1], "data_offsets": [0, 4]},
    "x" * 1000,
])
def test_safetensors_header_entries_are_checked(tmp_path: Path, entry: object) -> None:
    path = _safetensors(tmp_path / "model.safetensors", {"w": entry})
    with pytest.raises(SpecError, match="tensor 'w': malformed header entry") as info:
        read_header(path)
    assert len(str(info.value)) < 300


def test_safetensors_header_not_utf8_or_deep(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes((4).to_bytes(8, "little") + b"\xff\xfe{}")
    with pytest.raises(SpecError, match=r"safetensors header: not UTF-8 text \(byte 0xff"):
        read_header(path)
    raw = ("[" * 1000 + "]" * 1000).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(SpecError, match="nested deeper than 200 levels"):
        read_header(path)


def test_safetensors_index_names_files_of_its_directory(tmp_path: Path) -> None:
    _safetensors(tmp_path / "a.safetensors", {"w": {"dtype": "F32", "shape": [1],
                                                     "data_offsets": [0, 4]}})
    index = tmp_path / "model.safetensors.index.json"
    for shard, message in (("../a.safetensors", "expected a file name"), (5, "expected a file name"),
                           ("a.safetensors", None)):
        index.write_text(json.dumps({"weight_map": {"w": shard}}))
        if message is None:
            assert TensorIndex(tmp_path).names() == ["w"]
        else:
            with pytest.raises(SpecError, match=message):
                TensorIndex(tmp_path)
    index.write_text("[" * 300 + "]" * 300)
    with pytest.raises(SpecError, match="nested deeper"):
        TensorIndex(tmp_path)


# ------------------------------------------------------------------ good files still read

def test_the_zoo_still_loads(capsys) -> None:
    _cli(["zoo"], capsys, code=0)
    for name in zoo_names():
        assert load_zoo_model(name).params() > 0
        assert load_spec(ZOO / f"{name}.yaml").name == name


def test_good_files_still_parse(tmp_path: Path) -> None:
    assert load_chain(_write(tmp_path / "c.json", json.dumps(CHAIN))).order() == ["a", "b"]
    nested = json.loads("[" * 200 + "]" * 200)  # exactly the limit
    assert textio.load_json(_write(tmp_path / "n.json", json.dumps(nested))) == nested
    assert textio.load_yaml(_write(tmp_path / "y.yaml", "a: [1, 2]\nb: café\n")) == \
        {"a": [1, 2], "b": "café"}
    device = ("devices:\n  mine:\n    base: h100-sxm\n    tiers: {l2: 60MiB}\n"
              "    sources: {tiers.l2: '[M] measured'}\n")
    assert load_devices(_write(tmp_path / "d.yaml", device))["mine"].tiers["l2"] == 60 * 2**20


def test_shorten_and_display_path() -> None:
    assert textio.shorten("abc") == "'abc'"
    assert textio.shorten("x" * 100) == "'" + "x" * 56 + "..."
    assert len(textio.shorten(list(range(10**6)))) <= 60
    assert textio.shorten(10**5000).startswith("<a number of")
    assert textio.display_path("/tmp/a.json") == "/tmp/a.json"
    assert "\n" not in textio.display_path("a\nb.json")
    assert len(textio.display_path("p" * 5000)) <= 80
