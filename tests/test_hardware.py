"""The device catalogue, user device files, clusters, the tiered roofline and measured profiles."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from solver import (
    DEVICES,
    Device,
    InvalidInputError,
    LayerGraph,
    Link,
    Workload,
    apply_profile,
    capacity_for,
    get_cluster,
    get_device,
    load_profile,
)
from solver.cli import main
from solver.frontend import Profile, profile_from_graph, save_profile
from solver.hardware import (
    PAPER_CLUSTER,
    CostFactors,
    LayerFootprint,
    load_devices,
    memory_time,
    roofline_latency,
    stage_fits_tier,
    stage_transfer_s,
    weight_read_bytes,
)
from solver.hardware import catalogue as hardware

REQUIRED = ["h100-sxm", "h100-pcie", "h200", "a100-80gb", "b200", "l4", "mi300x", "ipu-bow",
            "groq-lpu", "cerebras-wse3", "edgetpu"]
TAGS = ("[S]", "[M]", "[2]", "[D]", "[P]", "[F]")


@pytest.fixture
def registry() -> Iterator[None]:
    """Undo any registration a test makes."""
    devices, raw = dict(hardware.DEVICES), dict(hardware._RAW)
    yield
    hardware.DEVICES.clear()
    hardware.DEVICES.update(devices)
    hardware._RAW.clear()
    hardware._RAW.update(raw)
    hardware._ENV_ERROR.clear()


# ------------------------------------------------------------------ catalogue

def test_catalogue_has_every_required_device_with_a_source_per_number() -> None:
    assert set(REQUIRED) <= set(DEVICES)
    for device in DEVICES.values():
        numbers = [f"tiers.{t}" for t in device.tiers]
        numbers += [f"bandwidth.{m}" for m in device.tier_bandwidth]
        numbers += [f"peak_flops.{d}" for d in device.peak_flops]
        numbers += ["link.bandwidth_bytes_per_s", "link.latency_s", "overhead.kernel_s"]
        f = device.factors
        numbers += ["efficiency"] if "efficiency" in device.sources else \
            [f"efficiency.{cls}.{d}" for cls, table in (("matmul", f.matmul),
                                                         ("attention", f.attention))
             for d in table] + ["efficiency.memory"]
        if device.pcie is not None:
            numbers += ["pcie.bandwidth_bytes_per_s", "pcie.latency_s"]
        for key in numbers:
            text = device.sources.get(key, "")
            assert text.startswith(TAGS), f"{device.name}: {key} has no tagged source: {text!r}"
        assert device.hbm_bytes_per_s == device.tier_bandwidth[device.main_memory]


def test_catalogue_figures_from_the_reference() -> None:
    h100, a100, h200 = DEVICES["h100-sxm"], DEVICES["a100-80gb"], DEVICES["h200"]
    assert h100.tiers["l2"] == h200.tiers["l2"] == 52_428_800
    assert a100.tiers["l2"] == 41_943_040
    assert a100.tiers["l2-persist-max"] == 31_457_280
    assert h100.tiers["hbm"] == 80 * 10**9 and h200.tiers["hbm"] == 141 * 10**9
    assert list(h100.tiers) == ["smem", "l2", "l2-usable", "hbm"]
    assert list(a100.tiers)[:4] == ["smem", "l2", "l2-usable", "hbm"]
    assert h100.peak_flops["bf16"] == 989e12 and h100.peak_flops["fp8"] == 1979e12
    assert h200.hbm_bytes_per_s == 3.89e12  # measured, not the nominal 4.8 TB/s
    assert h200.sources["bandwidth.hbm"].startswith("[M]")
    assert h100.link == Link(370e9, 2e-6)
    for d in DEVICES.values():  # usable never exceeds nominal
        if "l2-usable" in d.tiers:
            assert d.tiers["l2-usable"] <= d.tiers["l2"]
    # Fallbacks: A100 has no fp8 tensor cores, Hopper no int4; both priced at a wider dtype.
    assert a100.peak_fallback["fp8"] == "fp16" and a100.peak_flops["fp8"] == 312e12
    assert h100.peak_fallback["int4"] == "int8"
    assert "fp32" not in DEVICES["groq-lpu"].peak_flops  # no fallback for fp32
    # A tier that is part of L2 shares its bandwidth, and says so.
    assert a100.bandwidth("l2-persist-max") == a100.bandwidth("l2") == 5.4e12
    assert a100.sources["bandwidth.l2-usable"].startswith("[D] same memory as l2")


def test_capacity_for_tiers_bytes_and_bad_tier() -> None:
    h100 = get_device("h100-sxm")
    assert capacity_for("l2", h100) == (52_428_800, "l2")
    assert capacity_for("l2-usable", h100) == (36_000_000, "l2-usable")
    assert capacity_for("hbm", h100) == (80 * 10**9, "hbm")
    assert capacity_for("50MiB", h100) == (52_428_800, None)
    assert capacity_for("1000", h100) == (1000, None)
    with pytest.raises(InvalidInputError, match="tiers: smem, l2, l2-usable, hbm"):
        capacity_for("l3", h100)
    assert capacity_for("infinity-cache", get_device("mi300x")) == (268_435_456, "infinity-cache")
    with pytest.raises(InvalidInputError, match=r"unknown device 'h900' \(known: h100-sxm"):
        get_device("h900")


# ------------------------------------------------------------------ user device files

GOOD = """
schema: cachepart-devices/1
devices:
  my-h100:
    base: h100-sxm
    tiers: {l2-usable: 40000000}
    sources: {tiers.l2-usable: "my own gpu-l2-cache run"}
  my-npu:
    description: a made-up accelerator
    main_memory: sram
    tiers: {sram: 64MiB}
    bandwidth: {sram: 2.0e+13}
    peak_flops: {int8: "1e14"}
    efficiency: 0.5
    link: {bandwidth_bytes_per_s: 1.0e+10}
    sources: {default: "vendor sheet v2"}
"""


def test_user_device_file_good(tmp_path: Path, registry: None) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(GOOD)
    loaded = load_devices(path)
    mine = loaded["my-h100"]
    assert mine.tiers["l2-usable"] == 40_000_000 and mine.tiers["hbm"] == 80 * 10**9
    assert mine.sources["tiers.l2-usable"] == "my own gpu-l2-cache run"
    assert mine.sources["tiers.l2"].startswith("[S]")  # inherited with its own source
    npu = loaded["my-npu"]
    assert npu.tiers == {"sram": 64 * 2**20} and npu.hbm_bytes_per_s == 2e13
    assert npu.peak_flops["int8"] == 1e14 and npu.peak_fallback["int4"] == "int8"
    assert npu.link.latency_s == 0.0
    assert "my-npu" not in DEVICES  # load_devices does not register
    assert hardware.register_devices(path) == ["my-h100", "my-npu"]
    assert get_device("my-npu") is DEVICES["my-npu"]


def test_env_variable_registers_and_reports_bad_files(tmp_path: Path, registry: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv(hardware.ENV_VAR, str(path))
    assert hardware.register_env_devices() == ["my-h100", "my-npu"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices: {x: {base: h100-sxm, efficiency: 2, sources: {default: s}}}\n")
    monkeypatch.setenv(hardware.ENV_VAR, str(bad))
    with pytest.raises(InvalidInputError, match=r"bad\.yaml: device 'x': efficiency"):
        hardware.register_env_devices()
    with pytest.raises(InvalidInputError, match=r"CACHEPART_DEVICES: .*bad\.yaml"):
        get_device("h100-sxm")  # kept and reported on use, as the CLI would


def _entry(**changes: object) -> dict:
    entry = {"main_memory": "hbm", "tiers": {"hbm": 1000}, "bandwidth": {"hbm": 1.0e9},
             "peak_flops": {"bf16": 1.0e12}, "efficiency": 0.5,
             "link": {"bandwidth_bytes_per_s": 1.0e9, "latency_s": 1.0e-6},
             "sources": {"default": "test"}}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


@pytest.mark.parametrize(("entry", "message"), [
    (_entry(tiers={"hbm": -5}), r"device 'dev': tiers\.hbm: expected a positive whole number"),
    (_entry(tiers={"hbm": "lots"}), r"device 'dev': tiers\.hbm: cannot read 'lots'"),
    (_entry(bandwidth={"hbm": "fast"}), r"device 'dev': bandwidth\.hbm: expected a number"),
    (_entry(bandwidth={"l3": 1.0e9, "hbm": 1.0e9}), r"bandwidth\.l3: not a tier"),
    (_entry(bandwidth={}), r"bandwidth\.hbm: missing: the main_memory needs"),
    (_entry(peak_flops={"fp7": 1.0e12}), r"peak_flops\.fp7: unknown dtype"),
    (_entry(efficiency=1.5), r"efficiency: must be in \(0, 1\]"),
    (_entry(link={"latency_s": 1.0e-6}), r"link\.bandwidth_bytes_per_s: missing"),
    (_entry(link=None), r"device 'dev': link: missing"),
    (_entry(sources={"tiers.hbm": "x"}), r"sources\.bandwidth\.hbm: missing \(every number"),
    (_entry(sources={"default": "x", "tiers.l2": "y"}), r"sources\.tiers\.l2: names no number"),
    (_entry(colour="red"), r"device 'dev': colour: unknown field"),
    (_entry(base="h900"), r"device 'dev': base: unknown device 'h900'"),
])
def test_user_device_file_bad(tmp_path: Path, entry: dict, message: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"devices": {"dev": entry}}))
    with pytest.raises(InvalidInputError, match=message) as info:
        load_devices(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "\n" not in text


@pytest.mark.parametrize(("field", "value", "message"), [
    ("base", ["h100-sxm"], r"base: expected a device name \(a string\), got \['h100-sxm'\]"),
    ("base", {"name": "h100-sxm"}, r"base: expected a device name \(a string\), got \{"),
    ("base", 5, r"base: expected a device name \(a string\), got 5"),
    ("description", ["a", "b"], r"description: expected a string, got \['a', 'b'\]"),
    ("main_memory", ["hbm"], r"main_memory: expected a memory name, got \['hbm'\]"),
    ("tiers", [1000], r"tiers: expected a mapping, got \[1000\]"),
    ("tiers", "80GB", r"tiers: expected a mapping, got '80GB'"),
    ("bandwidth", 1.0e9, r"bandwidth: expected a mapping, got 1000000000\.0"),
    ("peak_flops", [], r"peak_flops: expected a mapping, got \[\]"),
    ("peak_flops", 0, r"peak_flops: expected a mapping, got 0"),
    ("efficiency", [0.5], r"efficiency: expected a number, got \[0\.5\]"),
    ("link", [1.0e9], r"link: expected a mapping, got \[1000000000\.0\]"),
    ("pcie", "gen5", r"pcie: expected a mapping, got 'gen5'"),
    ("notes", "one note", r"notes: expected a list of strings, got 'one note'"),
    ("sources", "vendor sheet", r"sources: expected a mapping, got 'vendor sheet'"),
])
@pytest.mark.parametrize("with_base", [False, True])
def test_user_device_file_wrong_types(tmp_path: Path, registry: None,
                                      monkeypatch: pytest.MonkeyPatch, field: str, value: object,
                                      message: str, with_base: bool) -> None:
    """A list or number where a string or mapping belongs: one line naming the file, the
    device, the field and the value (``base: [h100-sxm]`` was a TypeError), with or without a
    base to merge onto, from load_devices and from CACHEPART_DEVICES alike."""
    entry: dict = {"base": "h100-sxm", "sources": {"default": "s"}} if with_base else _entry()
    if field == "base" and not with_base:
        entry = {"sources": {"default": "s"}}
    entry[field] = value
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"devices": {"dev": entry}}))
    where = re.escape(str(path))
    with pytest.raises(InvalidInputError, match=rf"^{where}: device 'dev': {message}") as info:
        load_devices(path)
    assert "\n" not in str(info.value)
    monkeypatch.setenv(hardware.ENV_VAR, str(path))
    with pytest.raises(InvalidInputError, match=rf"^CACHEPART_DEVICES: {where}: .*{message}"):
        hardware.register_env_devices()


def test_user_device_file_unreadable(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read the device file"):
        load_devices(tmp_path / "none.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("devices: {a: [1,\n")
    with pytest.raises(InvalidInputError, match=r"broken.yaml: not valid YAML at line"):
        load_devices(bad)
    bad.write_text("schema: other/2\ndevices: {}\n")
    with pytest.raises(InvalidInputError, match="schema: expected 'cachepart-devices/1'"):
        load_devices(bad)


def test_overriding_a_number_needs_its_own_source(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("devices: {x: {base: h100-sxm, bandwidth: {hbm: 3.0e+12}}}\n")
    with pytest.raises(InvalidInputError, match=r"device 'x': sources\.bandwidth\.hbm: missing"):
        load_devices(path)


# ------------------------------------------------------------------ cluster

def test_paper_cluster_links() -> None:
    c = get_cluster("paper")
    assert c is PAPER_CLUSTER and get_cluster("2x8-h100-sxm") is PAPER_CLUSTER
    assert c.size == 16 and c.kinds == ("h100-sxm",)
    device = c.device_types[0].device
    assert device is not None and device.name == "h100-sxm"
    intra, inter = c.nodes[0].link, c.inter_node_link
    assert c.link_between(0, 7) == intra == Link(370e9, 2e-6)
    assert c.link_between(7, 8) == inter == Link(50e9, 5e-6)
    assert c.link_between(8, 15) == intra
    assert set(c.sources) >= {"inter.bandwidth_bytes_per_s", "inter.latency_s",
                              "intra.bandwidth_bytes_per_s", "intra.latency_s"}
    nbytes = 16 * 2**20
    assert stage_transfer_s(c, 0, nbytes) == 0.0
    assert stage_transfer_s(c, 3, nbytes) == pytest.approx(nbytes / 370e9 + 2e-6)
    assert stage_transfer_s(c, 8, nbytes) == pytest.approx(nbytes / 50e9 + 5e-6)
    with pytest.raises(InvalidInputError, match=r"rank in 0\.\.15"):
        c.link_between(0, 16)
    with pytest.raises(InvalidInputError, match="stage_index"):
        stage_transfer_s(c, 16, nbytes)
    other = get_cluster("4x8-a100-80gb")
    assert other.size == 32 and other.nodes[0].link == DEVICES["a100-80gb"].link
    with pytest.raises(InvalidInputError, match="unknown cluster 'big'"):
        get_cluster("big")
    with pytest.raises(InvalidInputError, match="unknown device 'h900'"):
        get_cluster("2x8-h900")


# ------------------------------------------------------------------ cost model

def _device() -> Device:
    return Device(name="toy", tiers={"l2": 10**6, "hbm": 10**9},
                  peak_flops={"bf16": 1e12}, hbm_bytes_per_s=1e9, link=Link(1e9),
                  factors=CostFactors({"default": 0.5}, {"default": 0.5}),
                  tier_bandwidth={"l2": 1e10, "hbm": 1e9})


def _fp(flops: float, weight: int, act: int, *, moved: int | None = None) -> LayerFootprint:
    # bytes moved = weights read + input (taken equal to the output) + output
    moved = weight + 2 * act if moved is None else moved
    return LayerFootprint("layer", "block", weight // 2, weight, act, 0, 0, flops, moved)


def test_roofline_compute_bound_by_hand() -> None:
    dev, wl = _device(), Workload()
    fp = _fp(flops=1e12, weight=1000, act=500)  # compute 1e12 / (1e12 x 0.5) = 2 s
    assert roofline_latency(fp, dev, wl) == pytest.approx(2.0)
    assert roofline_latency(fp, dev, wl, tier="l2") == pytest.approx(2.0)  # the tier cannot help


def test_roofline_memory_bound_and_an_on_chip_tier() -> None:
    dev, wl = _device(), Workload()
    fp = _fp(flops=1e6, weight=800_000, act=100_000)  # moves 1,000,000 B; compute 2e-6 s
    assert roofline_latency(fp, dev, wl) == pytest.approx(1e6 / 1e9)  # HBM: 1 ms
    assert weight_read_bytes(fp) == 800_000
    # Weights and activations in L2 (the partitioner's capacity counts both): 0.1 ms.
    assert roofline_latency(fp, dev, wl, tier="l2") == pytest.approx(1e6 / 1e10)
    # Only the weights pinned: 800 kB at L2 speed plus 200 kB at HBM speed.
    pinned = roofline_latency(fp, dev, wl, tier="l2", activations_in_tier=False)
    assert pinned == pytest.approx(8e5 / 1e10 + 2e5 / 1e9)
    assert pinned < roofline_latency(fp, dev, wl)
    assert memory_time(fp, dev, "hbm") == pytest.approx(1e-3)  # the main memory is the default
    # A first layer has no input: given input_bytes=0 the split is exact, else the input is
    # taken equal to the output and the weight share comes out 100 kB short.
    first = _fp(flops=1e6, weight=800_000, act=100_000, moved=900_000)
    assert weight_read_bytes(first, input_bytes=0) == 800_000
    assert weight_read_bytes(first) == 700_000
    assert memory_time(first, dev, "l2", activations_in_tier=False, input_bytes=0) == \
        pytest.approx(8e5 / 1e10 + 1e5 / 1e9)


def test_cost_model_errors_and_stage_fit() -> None:
    dev, wl = _device(), Workload()
    fp = _fp(flops=1e6, weight=400_000, act=100_000)
    with pytest.raises(InvalidInputError, match="no peak FLOP/s for compute dtype 'fp32'"):
        roofline_latency(fp, dev, Workload(activation_dtype="fp32"))
    with pytest.raises(InvalidInputError, match="unknown tier 'l3'"):
        roofline_latency(fp, dev, wl, tier="l3")
    with pytest.raises(InvalidInputError, match="b200: no bandwidth figure for tier 'l2'"):
        roofline_latency(fp, DEVICES["b200"], wl, tier="l2")
    with pytest.raises(InvalidInputError, match="cerebras-wse3: no peak FLOP/s"):
        roofline_latency(fp, DEVICES["cerebras-wse3"], wl)
    assert stage_fits_tier([fp], dev, "l2")  # 400k + 100k of 1,000,000
    assert stage_fits_tier([fp, fp], dev, "l2")  # exactly 1,000,000
    assert not stage_fits_tier([fp, fp, fp], dev, "l2")  # 1.5 MB
    assert stage_fits_tier([fp, fp], dev, "l2", weights_only=True)
    with pytest.raises(InvalidInputError, match="unknown tier 'l3'"):
        stage_fits_tier([fp], dev, "l3")


def test_catalogue_device_prices_an_l2_layer_faster() -> None:
    a100, wl = DEVICES["a100-80gb"], Workload(phase="decode")
    fp = _fp(flops=2e7, weight=20_000_000, act=8_192)  # decode: a GEMV, memory-bound
    hbm = roofline_latency(fp, a100, wl)
    l2 = roofline_latency(fp, a100, wl, tier="l2-usable")
    fixed = a100.factors.kernel_s  # one kernel's overhead, the same wherever the bytes are
    assert fixed > 0
    assert hbm == pytest.approx(fp.bytes_moved / 1.73e12 + fixed)
    assert l2 == pytest.approx(fp.bytes_moved / 5.4e12 + fixed) and l2 < hbm


# ------------------------------------------------------------------ profiles

def _graph() -> LayerGraph:
    rows = [{"name": n, "weight_bytes": 100, "activation_bytes": 10, "latency_s": 1.0}
            for n in ("embed", "block0", "head")]
    return LayerGraph.chain("toy", rows, metadata={"device": "h100-sxm", "workload": {"batch": 1}})


def test_profile_round_trip_and_apply(tmp_path: Path) -> None:
    graph = _graph()
    template = profile_from_graph(graph)
    assert template.device == "h100-sxm" and template.workload == {"batch": 1}
    doc = {**template.to_dict(), "torch_device": "cuda"}  # extra fields are kept
    doc["layers"] = [{"name": "embed", "latency_s": 0.5, "runs": 20},
                     {"name": "block0", "latency_s": 0.25}, {"name": "head", "latency_s": 0.125}]
    path = tmp_path / "p.json"
    save_profile(Profile.from_dict(doc), path)
    profile = load_profile(path)
    assert profile.layers[0].extra == {"runs": 20}
    assert profile.extra == {"torch_device": "cuda"}
    assert load_profile(path) == profile
    save_profile(profile, tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads(path.read_text())
    measured = apply_profile(graph, profile)
    assert [row["latency_s"] for row in measured.layers()] == [0.5, 0.25, 0.125]
    assert [row["latency_s"] for row in graph.layers()] == [1.0, 1.0, 1.0]  # input untouched
    assert measured.metadata["latency_source"] == "profile"


def test_profile_errors(tmp_path: Path) -> None:
    graph = _graph()
    base = profile_from_graph(graph).to_dict()
    short = {**base, "layers": base["layers"][:2]}
    with pytest.raises(InvalidInputError, match="no latency for layer 'head' of model 'toy'"):
        apply_profile(graph, Profile.from_dict(short))
    extra = {**base, "layers": [*base["layers"], {"name": "lm_extra", "latency_s": 1.0}]}
    with pytest.raises(InvalidInputError, match="layer 'lm_extra' is not a layer of model 'toy'"):
        apply_profile(graph, Profile.from_dict(extra))
    cases = [
        ({**base, "schema": "x"}, "schema: expected 'cachepart-profile/1'"),
        ({**base, "layers": []}, "layers: expected a non-empty list"),
        ({**base, "layers": [{"name": "a", "latency_s": -1}]}, r"latency_s: must be >= 0"),
        ({**base, "layers": [{"name": "a", "latency_s": "fast"}]}, "expected a number"),
        ({**base, "layers": [{"name": "a"}]}, "missing field 'latency_s'"),
        ({**base, "layers": [{"name": "a", "latency_s": 1}] * 2}, "duplicate layer 'a'"),
        ({**base, "model": ""}, "model: expected a non-empty string"),
    ]
    for doc, message in cases:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(InvalidInputError, match=message) as info:
            load_profile(path)
        assert str(info.value).startswith(str(path))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InvalidInputError, match=r"not valid JSON \(line 1"):
        load_profile(tmp_path / "broken.json")


# ------------------------------------------------------------------ the devices command

def _run(argv: list[str]) -> int:
    return main(argv)


def test_devices_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["devices"]) == 0
    out = capsys.readouterr().out
    assert "h100-sxm" in out and "cerebras-wse3" in out and "989" in out
    assert _run(["devices", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in doc["devices"]] == list(DEVICES)
    assert _run(["devices", "--device", "h100-sxm"]) == 0
    out = capsys.readouterr().out
    for text in DEVICES["h100-sxm"].sources.values():
        assert text in out
    assert _run(["devices", "--device", "edgetpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["main_memory"] == "host"
    assert _run(["devices", "--device", "h900"]) == 2
    assert capsys.readouterr().err.startswith("cachepart: error: --device: unknown device 'h900'")
