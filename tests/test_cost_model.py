"""The cost model's terms, one by one, and its calibration (issue 14)."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from solver.analysis import (
    Measurement,
    fit_factors,
    measurements_from_profile,
    predict,
    prepare,
    read_measurements,
)
from solver.cli import main
from solver.core import InvalidInputError, tp_stage_time
from solver.frontend import load_model, problem_from_graph, tensor_parallel_for
from solver.hardware import (
    KERNELS,
    CostFactors,
    Workload,
    footprints,
    get_device,
    layer_terms,
    load_devices,
    roofline_latency,
    terms_latency,
)

ROOT = Path(__file__).resolve().parents[1]


def _model(name: str = "llama2-7b", granularity: str = "block", **workload: object):
    return load_model(name, Workload(**workload), granularity=granularity)  # type: ignore[arg-type]


def _fp(model, name: str):
    return next(fp for fp in model.footprints if fp.name == name)


# ----- tensor parallelism -----------------------------------------------------------------------

def test_allreduce_time_does_not_depend_on_granularity() -> None:
    for phase in ("prefill", "decode"):
        times = {}
        for granularity in ("block", "op"):
            graph = _model(granularity=granularity, batch=2, seq_len=512, phase=phase).graph
            tp = tensor_parallel_for(graph, [1, 2, 4, 8])
            n = len(graph.layers())
            assert int(tp.allreduce_count.sum()) == 2 * 32 + 2  # two a block; embed and head
            times[granularity] = [tp.allreduce_s(0, n, t) for t in (2, 4, 8)]
        assert times["block"] == pytest.approx(times["op"], rel=1e-12), phase


def test_two_allreduces_a_block_with_the_ring_or_tree_step_count() -> None:
    graph = _model(batch=1, seq_len=128, phase="decode").graph
    link = graph.link
    assert link is not None
    n = len(graph.layers())
    for algorithm, steps in (("ring", lambda t: 2 * (t - 1)),
                             ("tree", lambda t: 2 * math.ceil(math.log2(t)))):
        tp = tensor_parallel_for(graph, [8], algorithm=algorithm)
        block = next(i for i, layer in enumerate(graph.layers()) if layer["kind"] == "block")
        # one block, split 8 ways: bandwidth term plus 2 all-reduces of steps(8) latencies
        b = tp.allreduce_bytes[block]
        expected = 2 * 7 / 8 * b / link.bandwidth_bytes_per_s + 2 * steps(8) * link.latency_s
        assert tp.allreduce_s(block, block + 1, 8) == pytest.approx(expected, rel=1e-12)
        assert tp.steps[8] == steps(8)
    ring = tensor_parallel_for(graph, [8]).allreduce_s(0, n, 8)
    tree = tensor_parallel_for(graph, [8], algorithm="tree").allreduce_s(0, n, 8)
    assert tree < ring  # 6 steps against 14
    with pytest.raises(InvalidInputError, match="ring or tree"):
        tensor_parallel_for(graph, [8], algorithm="star")


def test_fp8_runs_all_reduce_in_16_bits() -> None:
    bf16 = tensor_parallel_for(_model(batch=4, seq_len=256).graph, [4])
    fp8 = tensor_parallel_for(_model(batch=4, seq_len=256, activation_dtype="fp8",
                                     weight_dtype="fp8").graph, [4])
    fp32 = tensor_parallel_for(_model(batch=4, seq_len=256, activation_dtype="fp32",
                                      weight_dtype="fp32").graph, [4])
    assert np.array_equal(fp8.allreduce_bytes, bf16.allreduce_bytes)
    assert np.array_equal(fp32.allreduce_bytes, 2 * bf16.allreduce_bytes)
    # the activations themselves are 1 byte an element in fp8
    block = _fp(_model(batch=4, seq_len=256, activation_dtype="fp8", weight_dtype="fp8"), "block0")
    assert block.activation_bytes == 4 * 256 * 4096


def test_degrees_must_split_the_heads(capsys: pytest.CaptureFixture[str]) -> None:
    gpt2 = _model("gpt2").graph  # 12 heads
    tensor_parallel_for(gpt2, [1, 2, 3, 4, 6, 12], devices_per_node=12)
    with pytest.raises(InvalidInputError, match="degree 8 does not divide the 12 attention heads"):
        tensor_parallel_for(gpt2, [1, 8])
    llama3 = _model("llama3-8b").graph  # 32 heads, 8 KV heads: t = 16 would replicate KV
    tensor_parallel_for(llama3, [2, 4, 8, 16], devices_per_node=16)
    assert main(["solve", "gpt2", "--tp", "1,8", "-k", "8", "--capacity", "hbm", "--seq",
                 "512"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tp" in err[0] and "12 attention heads" in err[0]


def test_kernel_overhead_is_not_divided_by_the_tp_degree() -> None:
    model = _model(batch=1, seq_len=64, phase="decode")
    graph, device = model.graph, get_device("h100-sxm")
    assert device.factors.kernel_s > 0
    problem = problem_from_graph(graph, 10**12, 8)
    problem = problem.replace(tensor_parallel=tensor_parallel_for(graph, [1, 4]))
    layers = graph.layers()
    n = len(layers)
    total = sum(layer["latency_s"] for layer in layers)
    fixed = sum(layer["overhead_s"] for layer in layers)
    kernels = sum(fp.kernels for fp in model.footprints)
    assert fixed == pytest.approx(kernels * device.factors.kernel_s)
    assert kernels == 1 + 32 * KERNELS["block"] + KERNELS["head"]
    tp = problem.tensor_parallel
    assert tp is not None
    expected = (total - fixed) / 4 + fixed + tp.allreduce_s(0, n, 4)
    assert tp_stage_time(problem, 0, n, 4) == pytest.approx(expected, rel=1e-12)
    # and each layer's time carries its kernels' overhead
    fp = _fp(model, "block0")
    terms = layer_terms(fp, device, Workload(batch=1, seq_len=64, phase="decode"))
    bare = terms_latency(terms, dataclasses.replace(device.factors, kernel_s=0.0))
    assert roofline_latency(fp, device, Workload(batch=1, seq_len=64, phase="decode")) == \
        pytest.approx(bare + KERNELS["block"] * device.factors.kernel_s)


# ----- the layers' terms -----------------------------------------------------------------------

def test_the_head_runs_on_the_last_token_in_prefill_only() -> None:
    h, vocab, batch, seq = 4096, 32000, 3, 512
    prefill = _fp(_model(batch=batch, seq_len=seq), "head")
    assert prefill.flops == 2 * vocab * h * batch  # one position a sequence
    assert prefill.activation_bytes == batch * vocab * 2
    train = _fp(_model(batch=batch, seq_len=seq, phase="train"), "head")
    assert train.flops == 2 * vocab * h * batch * seq
    block = _fp(_model(batch=batch, seq_len=seq), "block0")
    assert block.activation_bytes == batch * seq * h * 2  # blocks still run every token


def test_the_embedding_gathers_rows() -> None:
    h = 4096
    prefill = _fp(_model(batch=2, seq_len=100), "embed")
    assert prefill.weight_read == 2 * 100 * h * 2  # one row a token, not the 32000-row table
    decode = _fp(_model(batch=2, seq_len=100, phase="decode"), "embed")
    assert decode.weight_read == 2 * h * 2
    assert decode.weight_bytes == 32000 * h * 2  # what it stores is the whole table
    full = _fp(_model(batch=64, seq_len=4096), "embed")
    assert full.weight_read == full.weight_bytes  # a table read whole at most


def test_decode_reads_the_kv_cache_as_attention_traffic() -> None:
    wl = Workload(batch=4, seq_len=3000, phase="decode")
    fp = _fp(_model(batch=4, seq_len=3000, phase="decode"), "block0")
    per_token = 2 * 32 * 128 * 2
    assert fp.kv_cache_bytes == per_token * 4 * 3000
    terms = layer_terms(fp, get_device("h100-sxm"), wl)
    assert terms.kv_bytes == fp.kv_cache_bytes
    assert terms.weight_bytes == fp.weight_read
    assert terms.attention_flops == fp.attention_flops == 4.0 * 4 * 32 * 128 * 3000
    # twice the context: the attention class grows, the GEMMs do not
    longer = layer_terms(_fp(_model(batch=4, seq_len=6000, phase="decode"), "block0"),
                         get_device("h100-sxm"), Workload(batch=4, seq_len=6000, phase="decode"))
    assert longer.kv_bytes == 2 * terms.kv_bytes and longer.weight_bytes == terms.weight_bytes


def test_each_op_class_has_its_own_roofline() -> None:
    device = get_device("h100-sxm")
    wl = Workload(batch=1, seq_len=8192, activation_dtype="fp8", weight_dtype="fp8")
    fp = _fp(_model(batch=1, seq_len=8192, activation_dtype="fp8", weight_dtype="fp8"), "block0")
    t = layer_terms(fp, device, wl)
    f = CostFactors({"default": 0.5, "fp8": 0.25}, {"default": 0.4}, memory=0.8, kernel_s=1e-6)
    peak = device.peak("fp8")
    bw = device.bandwidth(None) * 0.8
    expected = (max(t.matmul_flops / (peak * 0.25), t.weight_bytes / bw)
                + max(t.attention_flops / (peak * 0.4), t.kv_bytes / bw)
                + t.other_bytes / bw + 8 * 1e-6)
    assert terms_latency(t, f) == pytest.approx(expected, rel=1e-12)
    # fallbacks: int4 compute takes int8's, then fp16's; an unlisted dtype takes default
    g = CostFactors({"default": 0.6, "int8": 0.3, "fp16": 0.5})
    assert (g.matmul_for("int4"), g.matmul_for("bf16"), g.matmul_for("fp32")) == (0.3, 0.5, 0.6)


def test_device_files_take_op_classes_and_refuse_bad_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"devices": {"mine": {
        "base": "h100-sxm", "efficiency": {"matmul": {"fp8": 0.5}}, "overhead": {"kernel_s": 2e-6},
        "sources": {"default": "[M] my measurements"}}}}))
    mine = load_devices(good)["mine"]
    base = get_device("h100-sxm").factors
    assert mine.factors.matmul_for("fp8") == 0.5 and mine.factors.kernel_s == 2e-6
    assert mine.factors.matmul_for("bf16") == base.matmul_for("bf16")  # merged, not replaced
    assert mine.sources["efficiency.matmul.fp8"] == "[M] my measurements"
    for entry, message in (
            ({"efficiency": {"matmul": {"fp9": 0.5}}}, "efficiency.matmul.fp9: unknown dtype"),
            ({"efficiency": {"conv": {"default": 0.5}}}, "efficiency.conv: unknown field"),
            ({"efficiency": {"memory": 1.5}}, r"efficiency.memory: must be in \(0, 1\]"),
            ({"overhead": {"launch_s": 1e-6}}, "overhead.launch_s: unknown field"),
            ({"overhead": {"kernel_s": -1}}, "overhead.kernel_s: must be >= 0")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"devices": {"x": {
            "base": "h100-sxm", **entry, "sources": {"default": "s"}}}}))
        with pytest.raises(InvalidInputError, match=message):
            load_devices(bad)
    # the format before op classes still reads: one figure for every class
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"devices": {"x": {"base": "b200", "efficiency": 0.6,
                                                     "sources": {"default": "s"}}}}))
    x = load_devices(old)["x"].factors
    assert (x.matmul_for("fp8"), x.attention_for("bf16"), x.memory) == (0.6, 0.6, 1.0)


# ----- calibration ------------------------------------------------------------------------------

SETTINGS = [  # diverse enough that every factor shows: compute-, memory-, overhead-bound
    ("llama2-7b", "prefill", 1, 4096, 1, 1, "bf16"),
    ("llama2-7b", "prefill", 8, 2048, 1, 1, "fp8"),
    ("llama2-7b", "prefill", 1, 64, 1, 1, "bf16"),
    ("llama2-7b", "decode", 1, 512, 1, 1, "bf16"),
    ("llama2-7b", "decode", 64, 8192, 1, 1, "bf16"),
    ("llama2-7b", "decode", 256, 2048, 1, 1, "fp8"),
    ("llama2-70b", "prefill", 1, 2048, 1, 4, "fp8"),
    ("llama2-70b", "decode", 1, 256, 1, 8, "bf16"),
    ("llama2-70b", "generate", 8, 128, 64, 4, "bf16"),
    ("llama3-8b", "throughput", 128, 256, 128, 1, "fp8"),
    ("llama3-8b", "prefill", 2, 16384, 1, 1, "bf16"),
    ("llama3-8b", "decode", 32, 32768, 1, 2, "fp8"),
]


def _synthetic(device, truth: CostFactors) -> list[Measurement]:
    out = []
    for i, (model, kind, batch, inp, outp, tp, dtype) in enumerate(SETTINGS):
        m = Measurement(f"s{i}", model, kind, 1.0, batch, inp, outp, tp, dtype, dtype)
        out.append(dataclasses.replace(m, seconds=prepare(m, device).seconds(truth)))
    return out


def test_calibration_recovers_known_factors() -> None:
    device = get_device("h100-sxm")
    truth = CostFactors({"default": 0.7, "bf16": 0.55, "fp16": 0.55, "fp8": 0.35},
                        {"default": 0.45}, memory=0.82, kernel_s=9e-6)
    measurements = _synthetic(device, truth)
    fit = fit_factors(measurements, device, prior=0.0)
    f = fit.factors
    assert f.matmul_for("bf16") == pytest.approx(0.55, rel=0.02)
    assert f.matmul_for("fp8") == pytest.approx(0.35, rel=0.02)
    assert f.attention_for("bf16") == pytest.approx(0.45, rel=0.02)
    assert f.memory == pytest.approx(0.82, rel=0.02)
    assert f.kernel_s == pytest.approx(9e-6, rel=0.02)
    assert fit.stats["worst_ratio"] < 1.01 < fit.start_stats["worst_ratio"]
    assert set(fit.fitted) == {"matmul.fp16", "matmul.fp8", "attention.default", "memory",
                               "kernel_s"}
    # deterministic: the same input gives the same figures
    assert fit_factors(measurements, device, prior=0.0).factors == f


def test_prediction_is_the_planners_stage_time() -> None:
    device = get_device("a100-80gb")
    m = Measurement("x", "llama2-70b", "prefill", 1.0, 2, 1024, 1, 4, "fp16", "fp16")
    model = load_model("llama2-70b", Workload(batch=2, seq_len=1024, weight_dtype="fp16",
                                              activation_dtype="fp16"), device="a100-80gb")
    problem = problem_from_graph(model.graph, 10**13, 8)
    problem = problem.replace(tensor_parallel=tensor_parallel_for(model.graph, [4]))
    n = problem.n
    assert predict(m, device) == pytest.approx(tp_stage_time(problem, 0, n, 4), rel=1e-9)


def test_calibrate_command_writes_a_device_file_solve_can_use(tmp_path: Path) -> None:
    device = get_device("a100-80gb")
    truth = dataclasses.replace(device.factors, memory=0.7, kernel_s=3e-5)
    rows = ["id,model,kind,batch,input_len,output_len,tp,weight_dtype,activation_dtype,"
            "measured,unit"]
    for m in _synthetic(device, truth)[:9]:
        rows.append(f"{m.id},{m.model},{m.kind},{m.batch},{m.input_len},{m.output_len},{m.tp},"
                    f"{m.weight_dtype},{m.activation_dtype},{m.seconds * 1e3!r},ms")
    data = tmp_path / "runs.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "a100-mine.yaml"
    cli = [sys.executable, "-m", "solver.cli"]
    proc = subprocess.run([*cli, "calibrate", str(data), "--device", "a100-80gb", "--name",
                           "a100-mine", "--fit", "memory,overhead", "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    # the small pull towards the catalogue's figures (PRIOR) leaves them within 1%
    assert "fitted: memory 0.70" in proc.stdout and "kernel 29.9" in proc.stdout
    doc = yaml.safe_load(out.read_text())
    entry = doc["devices"]["a100-mine"]
    assert entry["base"] == "a100-80gb"
    assert entry["efficiency"]["memory"] == pytest.approx(0.7, rel=0.01)
    assert entry["overhead"]["kernel_s"] == pytest.approx(3e-5, rel=0.01)
    assert entry["sources"]["efficiency.memory"].startswith("[F]")
    residuals = entry["calibration"]["residuals"]
    assert len(residuals) == 9 and all(abs(r["ratio"] - 1) < 0.01 for r in residuals)
    assert entry["calibration"]["before"]["worst_ratio"] > 1.1
    env = {"CACHEPART_DEVICES": str(out), "PATH": ""}
    proc = subprocess.run([*cli, "solve", "llama2-7b", "--device", "a100-mine", "-k", "2",
                           "--capacity", "hbm", "--phase", "decode"], capture_output=True,
                          text=True, cwd=ROOT, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    # the fitted device prices a decode step slower than the catalogue's (memory 0.7 < 1.0)
    mine = load_devices(out)["a100-mine"]
    m = Measurement("d", "llama2-7b", "decode", 1.0, 1, 512, 1, 1, "fp16", "fp16")
    assert predict(m, mine) > predict(m, device)


def test_calibrate_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bad.csv"
    header = ("id,model,kind,batch,input_len,output_len,tp,weight_dtype,activation_dtype,"
              "measured,unit\n")
    for row, message in (("a,llama2-7b,prefil,1,128,1,1,bf16,bf16,3,ms", "kind"),
                         ("a,llama2-7b,prefill,0,128,1,1,bf16,bf16,3,ms", "batch"),
                         ("a,llama2-7b,prefill,1,128,1,1,bf16,bf16,-3,ms", "measured"),
                         ("a,llama2-7b,prefill,1,128,1,1,bf16,bf16,3,hours", "unit"),
                         ("a,llama2-7b,throughput,1,128,1,1,bf16,bf16,3,ms", "unit"),
                         ("a,llama2-7b,prefill,1,128,1,1,bf17,bf16,3,ms", "weight_dtype")):
        data.write_text(header + row + "\n")
        assert main(["calibrate", str(data), "--device", "h100-sxm", "-o",
                     str(tmp_path / "o.yaml")]) == 2, row
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (row, err)
    data.write_text("id,model\nx,y\n")
    assert main(["calibrate", str(data), "--device", "h100-sxm", "-o", str(tmp_path / "o.yaml")]) == 2
    assert "missing column" in capsys.readouterr().err
    assert main(["calibrate", str(data), "--device", "h100-sxm", "--fit", "magic", "-o",
                 str(tmp_path / "o.yaml")]) == 2
    assert "--fit" in capsys.readouterr().err
    assert not (tmp_path / "o.yaml").exists()


def test_a_profile_is_calibration_data(tmp_path: Path) -> None:
    # a profile JSON as `cachepart profile` writes it, its times made with known factors
    device = get_device("h100-sxm")
    truth = dataclasses.replace(device.factors, kernel_s=2e-5)
    wl = Workload(batch=1, seq_len=256)
    model = load_model("tiny-llama", wl)
    layers = [{"name": fp.name, "latency_s": terms_latency(layer_terms(fp, device, wl), truth)}
              for fp in footprints(model.spec.arch.layer_descs("block"), wl)]  # type: ignore[union-attr]
    profile = tmp_path / "p.json"
    profile.write_text(__import__("json").dumps({
        "schema": "cachepart-profile/1", "model": "tiny-llama", "device": "H100",
        "workload": {"batch": 1, "seq_len": 256, "phase": "prefill", "dtype": "bf16"},
        "layers": layers}))
    measurements = measurements_from_profile(profile)
    assert [m.layer for m in measurements] == [row["name"] for row in layers]
    fit = fit_factors(measurements, device, classes=["overhead"], prior=0.0)
    assert fit.factors.kernel_s == pytest.approx(2e-5, rel=1e-3)


def test_validation_script_runs_small(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "benchmarks/validate_cost_model.py", "--small",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "validation_small.csv").read_text().splitlines()
    assert len(rows) == 5  # header + T05, T08, L03, N02
    table = (tmp_path / "validation_small.md").read_text()
    assert "held-out:" in table and "| T05 | fit |" in table
    # each row's prediction is the library's for that setting
    measurements = {m.id: m for m in read_measurements(ROOT / "benchmarks/data/validation.csv")}
    for line in rows[1:]:
        cells = line.split(",")
        m = measurements[cells[0]]
        assert float(cells[11]) == pytest.approx(predict(m, get_device(cells[2])), rel=1e-5)


def test_the_catalogue_figures_are_the_fit_on_the_fit_half(tmp_path: Path) -> None:
    # the shipped h100-sxm and a100-80gb factors are what the validation script's --fit gives
    # (cachepart calibrate's fit, from the planning defaults, on the fit half): not tuned by hand
    proc = subprocess.run([sys.executable, "benchmarks/validate_cost_model.py", "--fit",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    fitted = load_devices(tmp_path / "validation_fit.yaml")
    for name in ("h100-sxm", "a100-80gb"):
        ours, shipped = fitted[name].factors, get_device(name).factors
        for dtype in ("bf16", "fp16", "fp8"):
            assert ours.matmul_for(dtype) == pytest.approx(shipped.matmul_for(dtype), abs=1e-4)
        assert ours.attention_for("bf16") == pytest.approx(shipped.attention_for("bf16"), abs=1e-4)
        assert ours.memory == pytest.approx(shipped.memory, abs=1e-4)
        assert ours.kernel_s == pytest.approx(shipped.kernel_s, rel=1e-3)
    # the fit used the fit half only (alternate rows per device, in id order)
    fit_ids = {name: {r["id"] for r in fitted[name].calibration["residuals"]}
               for name in ("h100-sxm", "a100-80gb")}
    assert fit_ids == {"h100-sxm": {"N01", "T01", "T05", "T07", "V04"},
                       "a100-80gb": {"L01", "L03", "L05", "T08", "T10", "V03"}}


def test_a_plan_timed_before_calibration_is_named_so(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import os

    # an h100-sxm priced as before calibration (one efficiency, no overhead), for the solve only
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"devices": {"h100-sxm": {
        "base": "h100-sxm", "efficiency": 0.7, "overhead": {"kernel_s": 0.0},
        "sources": {"default": "[P] the catalogue before calibration"}}}}))
    path = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "solver.cli", "solve", "llama2-7b", "-k", "2",
                           "--capacity", "hbm", "-q", "-o", str(path)], capture_output=True,
                          text=True, cwd=ROOT, check=False,
                          env={**os.environ, "CACHEPART_DEVICES": str(old)})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == "1.6"
    capsys.readouterr()
    assert main(["show", str(path)]) == 2  # today's catalogue gives other times
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device catalogue changed" in err[0]
    assert "before calibration" not in err[0]
    doc["schema_version"] = "1.5"  # as the earlier version wrote it
    path.write_text(json.dumps(doc))
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "before calibration" in err[0] and "solve it again" in err[0]


# ----- review follow-ups: clusters, matrices, chains, training, bad input ------------------------

def test_each_device_kind_keeps_its_own_kernel_overhead_under_tp() -> None:
    from solver.core import stage_view
    from solver.frontend import fleet_for, overheads_of
    from solver.hardware import cluster_from_dict

    cluster = cluster_from_dict({
        "name": "mixed", "device_types": {
            "h100": {"device": "h100-sxm", "capacity_bytes": 80 * 10**9},
            "a100": {"device": "a100-80gb", "capacity_bytes": 80 * 10**9}},
        "nodes": [{"devices": {"h100": 4}, "link": {"bandwidth_bytes_per_s": 3.7e11}},
                  {"devices": {"a100": 4}, "link": {"bandwidth_bytes_per_s": 2.3e11}}],
        "inter_node_link": {"bandwidth_bytes_per_s": 5e10, "latency_s": 5e-6}})
    wl = Workload(batch=1, seq_len=512, phase="decode")
    graphs = {k: load_model("llama2-7b", wl, device=d).graph
              for k, d in (("h100", "h100-sxm"), ("a100", "a100-80gb"))}
    lat = {k: np.array([la["latency_s"] for la in g.layers()]) for k, g in graphs.items()}
    fleet = fleet_for(cluster, lat, {k: 80 * 10**9 for k in lat}, "ordered",
                      {k: overheads_of(g) for k, g in graphs.items()})
    problem = problem_from_graph(graphs["h100"], 80 * 10**9, 8, fleet=fleet)
    problem = problem.replace(tensor_parallel=tensor_parallel_for(graphs["h100"], [1, 4]))
    a100 = cluster.kinds.index("a100")
    view = stage_view(problem, a100, cluster.nodes[1].link, 1)
    n = view.n
    fixed = overheads_of(graphs["a100"])
    assert fixed.sum() > overheads_of(graphs["h100"]).sum() * 2  # 18.0 against 6.7 us a kernel
    tp = view.tensor_parallel
    assert tp is not None and np.allclose(tp.fixed_s, fixed)
    expected = (lat["a100"].sum() - fixed.sum()) / 4 + fixed.sum() + tp.allreduce_s(0, n, 4)
    assert tp_stage_time(view, 0, n, 4) == pytest.approx(expected + float(view.transfer_s[0]))
    # the problem (and so a plan's problem JSON) keeps the per-kind figures
    from solver.core import Problem

    again = Problem.from_dict(problem.to_dict())
    assert again.fleet is not None and np.array_equal(again.fleet.fixed_s, fleet.fixed_s)


def test_the_stage_time_matrix_splits_all_but_the_overhead() -> None:
    from solver.core import stage_time_matrix

    model = _model("llama3-8b", batch=2, seq_len=256, phase="decode")
    problem = problem_from_graph(model.graph, 10**12, 8)
    problem = problem.replace(tensor_parallel=tensor_parallel_for(model.graph, [2, 4]))
    tp = problem.tensor_parallel
    assert tp is not None and tp.fixed_s.sum() > 0
    for t in (2, 4):
        matrix = stage_time_matrix(problem, t)
        for s, e in ((0, 1), (0, problem.n), (3, 17), (5, problem.n)):
            assert matrix[s, e] == pytest.approx(tp_stage_time(problem, s, e, t), rel=1e-12)


@pytest.mark.parametrize("kind", ["decode", "generate"])
def test_decode_and_generate_predictions_are_the_planners(kind: str) -> None:
    device = get_device("h100-sxm")
    m = Measurement("x", "llama3-70b", kind, 1.0, 4, 1000, 33, 2, "fp8", "fp8")

    def stage(phase: str, seq: int) -> float:
        graph = load_model("llama3-70b", Workload(batch=4, seq_len=seq, phase=phase,  # type: ignore[arg-type]
                                                  weight_dtype="fp8", activation_dtype="fp8"),
                           device="h100-sxm").graph
        problem = problem_from_graph(graph, 10**13, 8)
        problem = problem.replace(tensor_parallel=tensor_parallel_for(graph, [2]))
        return tp_stage_time(problem, 0, problem.n, 2)

    expected = stage("decode", 1000) if kind == "decode" else \
        stage("prefill", 1000) + 32 * stage("decode", 1000 + 33 // 2)
    assert predict(m, device) == pytest.approx(expected, rel=1e-9)


def test_a_chain_gives_its_own_allreduce_count() -> None:
    from solver.frontend import chain_from_dict

    graph = chain_from_dict({"name": "c", "link": {"bandwidth_bytes_per_s": 1e9},
                             "layers": [
        {"name": "a", "weight_bytes": 10, "activation_bytes": 1000, "latency_s": 1.0,
         "allreduces": 2, "overhead_s": 0.25},
        {"name": "b", "weight_bytes": 10, "activation_bytes": 1000, "latency_s": 1.0,
         "allreduces": 0},
        {"name": "c", "weight_bytes": 10, "activation_bytes": 1000, "latency_s": 1.0}]})
    tp = tensor_parallel_for(graph, [2])
    assert tp.allreduce_count.tolist() == [2, 0, 1]
    assert tp.allreduce_bytes.tolist() == [2000, 0, 1000]
    assert tp.fixed_s.tolist() == [0.25, 0.0, 0.0]


def test_the_backward_pass_keeps_its_classes_apart() -> None:
    model = _model("llama3-8b", batch=2, seq_len=1024, phase="train")
    row = next(la for la in model.graph.layers() if la["name"] == "block0")
    fp = _fp(model, "block0")
    device = get_device("h100-sxm")
    back = dataclasses.replace(fp, flops=row["backward_flops"] + row["recompute_flops"],
                               bytes_moved=2 * fp.bytes_moved)
    share = back.flops / fp.flops
    back = dataclasses.replace(back, attention_flops=fp.attention_flops * share,
                               weight_read=2 * (fp.weight_read or 0))
    wl = Workload(batch=2, seq_len=1024, phase="train")
    assert row["backward_latency_s"] == pytest.approx(
        roofline_latency(back, device, wl), rel=1e-12)
    terms = layer_terms(back, device, wl)
    assert terms.attention_flops == pytest.approx(2 * fp.attention_flops)  # recompute none
    assert terms.weight_bytes == 2 * (fp.weight_read or 0)


def test_fits_the_data_cannot_pin_are_named(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    device = get_device("h100-sxm")
    one = [Measurement("a", "gpt2", "prefill", 0.5, 1, 512)]
    fit = fit_factors(one, device)
    assert any("underdetermined" in w for w in fit.warnings)
    assert fit.at_bound and any("bound" in w for w in fit.warnings)
    data = tmp_path / "one.csv"
    data.write_text("\ufeffid,model,kind,batch,input_len,output_len,tp,weight_dtype,"
                    "activation_dtype,measured,unit\na,gpt2,prefill,1,512,1,1,bf16,bf16,500,ms\n")
    assert main(["calibrate", str(data), "--device", "h100-sxm", "-o",
                 str(tmp_path / "o.yaml")]) == 0  # a BOM is not part of the first column
    captured = capsys.readouterr()
    assert "cachepart: warning: 1 measurements for 4 factors" in captured.err
    assert "off by" in captured.out
    doc = yaml.safe_load((tmp_path / "o.yaml").read_text())
    assert doc["devices"]["h100-sxm-calibrated"]["calibration"]["warnings"]


def test_calibrate_reads_rows_strictly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bad.csv"
    header = ("id,model,kind,batch,input_len,output_len,tp,weight_dtype,activation_dtype,"
              "measured,unit\n")
    for row, message in (("a,llama2-7b,prefill,1,1,024,1,1,bf16,bf16,3,ms", "12 cells for 11"),
                         ("a,nosuch,prefill,1,128,1,1,bf16,bf16,3,ms", "measurement 'a': MODEL"),
                         ("a,gpt2,prefill,1,128,1,8,bf16,bf16,3,ms", "12 attention heads"),
                         ("a,llama2-7b,prefill,1,128,1,1,bf16,bf17,3,ms", "bad.csv:2: measurement")):
        data.write_text(header + row + "\n")
        assert main(["calibrate", str(data), "--device", "h100-sxm", "-o",
                     str(tmp_path / "o.yaml")]) == 2, row
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (row, err)


def test_a_profile_of_a_spec_names_its_file_and_must_be_a_prefill(tmp_path: Path) -> None:
    import json

    spec = tmp_path / "my-llama.yaml"
    spec.write_text((ROOT / "models/zoo/tiny-llama.yaml").read_text().replace(
        "name: tiny-llama", "name: my-llama"))
    doc = {"schema": "cachepart-profile/1", "model": "my-llama", "device": "H100",
           "workload": {"batch": 1, "seq_len": 64, "phase": "prefill", "dtype": "bf16"},
           "layers": [{"name": "block0", "latency_s": 1e-4}]}
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match="neither a file nor a zoo model"):
        fit_factors(measurements_from_profile(profile), get_device("h100-sxm"))
    fit = fit_factors(measurements_from_profile(profile, str(spec)), get_device("h100-sxm"),
                      classes=["overhead"])
    assert fit.rows[0][1] == pytest.approx(1e-4, rel=0.05)
    doc["workload"]["phase"] = "decode"
    profile.write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match="a profile times a prefill"):
        measurements_from_profile(profile, str(spec))
