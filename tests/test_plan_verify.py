"""Plans are checked, not trusted: every plan its schema accepts loads (or is refused in one
line, never a crash), and a plan is held to the model it names before show, simulate and
export use it (solver/plan/verify.py)."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from solver import CachepartError, InvalidInputError
from solver.cli import main
from solver.plan import Plan, load_plan, plan_schema, verify_plan

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = jsonschema.Draft202012Validator(plan_schema())
HF = ROOT / "tests" / "data" / "hf"
TINY = ("tiny-llama", "-k", "4", "-c", "50MiB")

# every kind of source and problem a plan is made from: (key, solve argv)
SOURCES: dict[str, tuple[str, ...]] = {
    "zoo": TINY,
    "llama": ("llama3-8b", "-k", "4", "-c", "hbm"),
    "spec": ("{tmp}/spec.yaml", "-k", "4", "-c", "50MiB"),
    "hf": (str(HF / "opt-125m.json"), "-k", "4", "-c", "200MiB", "--seq", "512"),
    "checkpoint": ("{tmp}/qwen", "-k", "4", "-c", "hbm", "--seq", "512"),
    "chain": ("{tmp}/chain.json", "-k", "16", "-c", "80GB"),
    "tp": ("tiny-llama", "-k", "8", "-c", "50MiB", "--tp", "2"),
    "cluster": ("tiny-llama", "--cluster", "2x2-h100-sxm", "-c", "50MiB"),
    "engine": (*TINY, "--engine", "vllm"),
    "train": (*TINY, "--phase", "train", "--batch", "8", "--micro-batch", "2"),
    "kv": (*TINY, "--objective", "kv-capacity", "--method", "dp"),
    "decode": (*TINY, "--phase", "decode", "--batch", "8"),
    "residency": ("tiny-llama", "-k", "4", "-c", "l2", "--residency", "partial"),
}


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each source's plan, solved once: zoo models, a spec YAML copied from the zoo, a
    Hugging Face config.json and checkpoint directory, a chain JSON, TP, a cluster, an engine,
    training, KV capacity, decode, tiered residency."""
    tmp = tmp_path_factory.mktemp("verify")
    shutil.copy(ROOT / "models" / "zoo" / "tiny-llama.yaml", tmp / "spec.yaml")
    shutil.copy(ROOT / "examples" / "paper-dense-16l.chain.json", tmp / "chain.json")
    (tmp / "qwen").mkdir()  # a checkpoint directory: its config.json (no weights needed)
    shutil.copy(HF / "qwen2-0.5b.json", tmp / "qwen" / "config.json")
    out = {}
    for key, argv in SOURCES.items():
        path = tmp / f"{key}.plan.json"
        args = [a.format(tmp=tmp) for a in argv]
        assert main(["solve", *args, "-q", "-o", str(path)]) == 0, key
        out[key] = path
    return out


def _doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _write(tmp_path: Path, name: str, doc: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def _one_line_refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("cachepart: error: ") and captured.out == ""
    return lines[0]


# ----- 1. a good plan from each source verifies clean -------------------------------------------
@pytest.mark.parametrize("key", list(SOURCES))
def test_good_plans_verify_clean(plans: dict[str, Path], key: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    plan = load_plan(plans[key])
    result = verify_plan(plan, str(plans[key]))
    assert result.rebuilt and result.not_checked == (), result
    assert {"layers", "fingerprint", "memory_bytes", "latency_s"} <= set(result.checked)
    assert result.wall_s < 2.0
    if key == "train":
        assert {"forward_s", "backward_s", "transfer_out_s"} <= set(result.checked)
    expected = {"zoo": "zoo", "spec": "spec", "hf": "hf-config", "checkpoint": "hf-checkpoint",
                "chain": "chain", "llama": "zoo"}
    assert result.source_kind == expected.get(key, "zoo")
    path = str(plans[key])
    assert main(["show", path]) == 0
    assert main(["simulate", path]) == 0
    assert main(["export", path, "--to", "deepspeed"]) == 0
    if key == "engine":
        assert main(["export", path, "--to", "vllm"]) == 0
    assert capsys.readouterr().err == ""


def test_tp_cluster_and_residency_plans_use_their_extensions(plans: dict[str, Path]) -> None:
    assert {st.tp_degree for st in load_plan(plans["tp"]).stages} == {2}
    assert load_plan(plans["cluster"]).hardware.cluster is not None
    assert any(st.resident_layers is not None for st in load_plan(plans["residency"]).stages)
    assert load_plan(plans["engine"]).engine is not None


# ----- 2. hand edits are refused in one line by show, simulate and export -----------------------
def _wide_stage(doc: dict[str, Any]) -> int:
    """The first stage after stage 0 with two layers or more."""
    return next(j for j, st in enumerate(doc["stages"]) if j and len(st["layers"]) > 1)


def _move_first_layer_back(doc: dict[str, Any]) -> None:
    """A stage's first layer moved to the end of the stage before, memory_bytes left alone."""
    j = _wide_stage(doc)
    doc["stages"][j - 1]["layers"].append(doc["stages"][j]["layers"].pop(0))


def _shift_memory(doc: dict[str, Any]) -> None:
    """memory_bytes lowered, with the headroom and KV numbers loading checks kept in step."""
    st = doc["stages"][1]
    st["memory_bytes"] -= 4096
    st["headroom_bytes"] += 4096
    if st.get("kv_bytes_per_token"):
        st["kv_capacity_tokens"] = st["headroom_bytes"] * st["tp_degree"] \
            // st["kv_bytes_per_token"]
    held = [s["kv_capacity_tokens"] for s in doc["stages"] if s.get("kv_capacity_tokens")]
    if held:
        doc["objective"]["kv_capacity_tokens"] = min(held)


def _shift_latency(doc: dict[str, Any]) -> None:
    """A stage other than the bottleneck made faster, its compute time with it."""
    j = 0 if doc["objective"]["bottleneck_stage"] != 0 else 1
    st = doc["stages"][j]
    st["latency_s"] *= 0.9
    st["compute_s"] = st["latency_s"] - st["transfer_in_s"]
    times = [s["latency_s"] for s in doc["stages"]]
    doc["objective"]["sum_stage_latency_s"] = sum(times)


def _rename_layer(doc: dict[str, Any]) -> None:
    doc["stages"][0]["layers"][-1] = "block99"


def _drop_layer(doc: dict[str, Any]) -> None:
    """A stage's last layer dropped, and model.num_layers with it."""
    doc["stages"][_wide_stage(doc)]["layers"].pop()
    doc["model"]["num_layers"] -= 1


def _swap_layers(doc: dict[str, Any]) -> None:
    """Two layers of a stage swapped: the model's layers, but not in its order."""
    layers = doc["stages"][_wide_stage(doc)]["layers"]
    layers[0], layers[1] = layers[1], layers[0]


EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "moved layer": (_move_first_layer_back, r"stages/\d+/memory_bytes: recorded \d+, the model "
                    r"gives \d+$"),
    "memory_bytes": (_shift_memory, r"stages/1/memory_bytes: recorded \d+, the model gives "
                     r"\d+$"),
    "latency_s": (_shift_latency, r"stages/[01]/latency_s: recorded "),
    "unknown layer": (_rename_layer, "stages/0/layers: 'block99' is not a layer of llama3-8b$"),
    "dropped layer": (_drop_layer, "model/num_layers: recorded 33, llama3-8b has 34 layers$"),
    "swapped layers": (_swap_layers, r"stages/\d+/layers: 'block\d+' where llama3-8b's layers in "
                       r"order give 'block\d+'$"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_hand_edits_are_refused(plans: dict[str, Path], tmp_path: Path, edit: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    change, expected = EDITS[edit]
    doc = _doc(plans["llama"])
    change(doc)
    path = _write(tmp_path, "edited.json", doc)
    load_plan(path)  # the edit passes loading's own checks: only the model tells
    with pytest.raises(InvalidInputError, match=expected):
        verify_plan(load_plan(path), path)
    for argv in (["show", path], ["simulate", path], ["export", path, "--to", "pipelining"]):
        line = _one_line_refusal(argv, capsys)
        assert line.startswith(f"cachepart: error: {path}: "), (argv, line)
        assert re.search(expected, line), (argv, line)


def test_a_memory_edit_names_both_numbers(plans: dict[str, Path], tmp_path: Path) -> None:
    doc = _doc(plans["zoo"])
    recorded = doc["stages"][1]["memory_bytes"]
    _shift_memory(doc)
    path = _write(tmp_path, "edited.json", doc)
    with pytest.raises(InvalidInputError) as info:
        verify_plan(load_plan(path), path)
    assert str(info.value) == (f"{path}: stages/1/memory_bytes: recorded {recorded - 4096}, the "
                               f"model gives {recorded}")


@pytest.mark.parametrize("key", ["train", "cluster", "tp", "chain"])
def test_edits_of_other_kinds_of_plan_are_refused(plans: dict[str, Path], tmp_path: Path,
                                                  key: str) -> None:
    doc = _doc(plans[key])
    if key == "chain":  # one layer a stage: another stage's memory_bytes
        _shift_memory(doc)
    else:
        _move_first_layer_back(doc)
    if key == "train":  # a training stage's passes: a slower backward, the latency with it
        doc = _doc(plans[key])
        st = doc["stages"][0]
        st["backward_s"] *= 0.5
        st["latency_s"] = st["forward_s"] + st["backward_s"] + st["transfer_in_s"] + \
            st["transfer_out_s"]
        st["compute_s"] = st["latency_s"] - st["transfer_in_s"] - st["transfer_out_s"]
        doc["objective"]["max_stage_latency_s"] = max(s["latency_s"] for s in doc["stages"])
        doc["objective"]["bottleneck_stage"] = [s["latency_s"] for s in doc["stages"]].index(
            doc["objective"]["max_stage_latency_s"])
    path = _write(tmp_path, f"{key}.json", doc)
    with pytest.raises(InvalidInputError, match=r"stages/\d+/(memory|backward)"):
        verify_plan(load_plan(path), path)


def test_an_edited_capacity_or_link_is_refused(plans: dict[str, Path], tmp_path: Path) -> None:
    doc = _doc(plans["llama"])
    doc["hardware"]["capacity_bytes"] *= 2
    for st in doc["stages"]:
        st["headroom_bytes"] = doc["hardware"]["capacity_bytes"] - st["memory_bytes"]
        if st.get("kv_bytes_per_token"):
            st["kv_capacity_tokens"] = st["headroom_bytes"] // st["kv_bytes_per_token"]
    doc["objective"]["kv_capacity_tokens"] = min(
        st["kv_capacity_tokens"] for st in doc["stages"] if st.get("kv_capacity_tokens"))
    path = _write(tmp_path, "capacity.json", doc)
    with pytest.raises(InvalidInputError, match="hardware/capacity_bytes: recorded"):
        verify_plan(load_plan(path), path)
    doc = _doc(plans["zoo"])
    doc["hardware"]["link"]["bandwidth_bytes_per_s"] *= 2
    path = _write(tmp_path, "link.json", doc)
    with pytest.raises(InvalidInputError, match="hardware/link: recorded"):
        verify_plan(load_plan(path), path)


def test_a_changed_workload_is_another_model(plans: dict[str, Path], tmp_path: Path) -> None:
    doc = _doc(plans["zoo"])
    doc["workload"]["seq_len"] = 1024
    path = _write(tmp_path, "seq.json", doc)
    with pytest.raises(InvalidInputError, match="model/fingerprint: recorded sha256:"):
        verify_plan(load_plan(path), path)
    doc["workload"]["attention"] = "flash"
    path = _write(tmp_path, "attention.json", doc)
    with pytest.raises(InvalidInputError, match="workload/attention: expected fused or eager"):
        verify_plan(load_plan(path), path)


# ----- 3. what cannot be rebuilt is not refused for it ------------------------------------------
def test_a_plan_whose_model_cannot_be_rebuilt_keeps_the_loading_checks(
        plans: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = tmp_path / "gone.json"
    shutil.copy(ROOT / "examples" / "paper-dense-16l.chain.json", chain)
    path = tmp_path / "plan.json"
    assert main(["solve", str(chain), "-k", "16", "-c", "80GB", "-q", "-o", str(path)]) == 0
    chain.unlink()
    result = verify_plan(load_plan(path))
    assert not result.rebuilt and "is gone" in result.not_checked[0]
    assert main(["show", str(path)]) == 0 and main(["simulate", str(path)]) == 0
    capsys.readouterr()
    doc = _doc(path)
    doc["stages"][0]["layers"][0] = "renamed"  # nothing to hold the name to: it passes
    assert verify_plan(Plan.from_dict(doc)).rebuilt is False
    doc["stages"][1]["layers"][0] = doc["stages"][2]["layers"][0]  # a layer twice: refused
    with pytest.raises(InvalidInputError, match="distinct"):
        Plan.from_dict(doc)
    for source, why in ((None, "names no model.source"), ("gone.py:build", "torch module")):
        doc = _doc(plans["zoo"])
        doc["model"]["source"] = source
        result = verify_plan(Plan.from_dict(doc))
        assert not result.rebuilt and why in result.not_checked[0]


def test_measured_times_are_not_held_to_the_cost_model(plans: dict[str, Path]) -> None:
    doc = _doc(plans["zoo"])
    doc["model"]["latency_source"] = "profile"
    for st in doc["stages"]:  # measured: every stage slower than the cost model's
        st["latency_s"] *= 1.7
        st["compute_s"] = st["latency_s"] - st["transfer_in_s"]
    times = [st["latency_s"] for st in doc["stages"]]
    doc["objective"].update(max_stage_latency_s=max(times), sum_stage_latency_s=sum(times),
                            bottleneck_stage=times.index(max(times)))
    result = verify_plan(Plan.from_dict(doc))
    assert result.rebuilt and "latency_s" not in result.checked
    assert "memory_bytes" in result.checked and "profile" in result.not_checked[0]
    doc["model"]["latency_source"] = None
    with pytest.raises(InvalidInputError, match=r"latency_s: recorded .*latency_source"):
        verify_plan(Plan.from_dict(doc))


# ----- 4. whatever the schema accepts loads, or is refused in one line --------------------------
def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return plan_schema()["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _variants(doc: Any, schema: dict[str, Any],
              path: tuple[Any, ...] = ()) -> Iterator[tuple[str, tuple[Any, ...], Callable]]:
    """(name, path of the object, change) for every object of a plan: an unknown field added,
    each optional field left out or null, integers written as 3.0."""
    schema = _resolve(schema)
    if "oneOf" in schema:
        for option in schema["oneOf"]:
            if option.get("type") != "null":
                yield from _variants(doc, option, path)
        return
    if isinstance(doc, dict):
        where = "/".join(map(str, path)) or "(top)"
        required = set(schema.get("required", ()))
        props = schema.get("properties", {})
        if schema.get("additionalProperties", True) is True:
            yield f"{where} +field", path, lambda d: d.__setitem__("from_the_future", {"x": 1})
        for key, value in doc.items():
            if key in props and key not in required:  # a map's keys are its data
                yield f"{where} -{key}", path, lambda d, k=key: d.pop(k)
            sub = _resolve(props.get(key, {}))
            kinds = sub.get("type") if isinstance(sub.get("type"), list) else [sub.get("type")]
            if "null" in kinds and value is not None:
                yield f"{where}/{key}=null", path, lambda d, k=key: d.__setitem__(k, None)
            if "integer" in kinds and isinstance(value, int) and not isinstance(value, bool):
                yield f"{where}/{key}=float", path, \
                    lambda d, k=key: d.__setitem__(k, float(d[k]))
            if isinstance(value, dict | list):
                yield from _variants(value, sub, (*path, key))
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from _variants(item, schema.get("items", {}), (*path, i))


def _minimal(doc: Any, schema: dict[str, Any]) -> Any:
    """Only what the schema requires, at every level that lists its properties."""
    schema = _resolve(schema)
    if isinstance(doc, dict) and "properties" in schema:
        required = set(schema.get("required", ()))
        return {k: _minimal(v, schema["properties"].get(k, {})) for k, v in doc.items()
                if k in required}
    if isinstance(doc, list):
        return [_minimal(v, schema.get("items", {})) for v in doc]
    return doc


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _use(doc: dict[str, Any]) -> None:
    """Load, verify, show, simulate and export a plan as the commands do."""
    from solver.cli.solve import stage_table
    from solver.plan import TARGETS, export_plan, simulate_plan, simulate_training

    plan = Plan.from_dict(doc)
    verify_plan(plan)
    stage_table(plan)
    if plan.workload.get("phase") == "train":  # as simulate does (plan/build.py)
        simulate_training([(st.forward_s or 0.0) + st.transfer_in_s for st in plan.stages],
                          [(st.backward_s or 0.0) + (st.transfer_out_s or 0.0)
                           for st in plan.stages],
                          plan.workload["microbatches"], plan.workload["schedule"])
    else:
        simulate_plan(plan)
    for target in TARGETS:
        with contextlib.suppress(CachepartError):  # a target may refuse the plan
            export_plan(plan, target)


@pytest.mark.parametrize("key", ["zoo", "train", "cluster", "engine", "residency"])
def test_no_schema_valid_plan_crashes(plans: dict[str, Path], key: str) -> None:
    base = _doc(plans[key])
    cases = [("minimal", _minimal(base, plan_schema()))]
    for name, path, change in _variants(base, plan_schema()):
        doc = copy.deepcopy(base)
        change(_at(doc, path))
        cases.append((name, doc))
    assert len(cases) > 50
    for name, doc in cases:
        assert VALIDATOR.is_valid(doc), name
        try:
            _use(doc)
        except CachepartError:
            pass  # refused in one line: fine; a crash is not
        except Exception as exc:  # pragma: no cover - the assertion says which
            raise AssertionError(f"{key}: {name}: {type(exc).__name__}: {exc}") from exc


@pytest.mark.parametrize("key", ["zoo", "train", "cluster", "kv"])
def test_schema_valid_variants_load_and_verify(plans: dict[str, Path], key: str,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown fields anywhere, whole numbers as 3.0, stages and objective with only what the
    schema requires: the plan loads, its left-out numbers derived, and still verifies."""
    base = _doc(plans[key])
    doc = copy.deepcopy(base)
    doc["from_the_future"] = 1
    for part in ("model", "hardware", "solver", "objective", "predicted"):
        doc[part]["from_the_future"] = {"x": 1}
    required = set(plan_schema()["properties"]["stages"]["items"]["required"])
    for st in doc["stages"]:
        for name in [k for k in st if k not in required]:
            st.pop(name)
        st["from_the_future"] = [1]
        st["memory_bytes"] = float(st["memory_bytes"])
        st["device_rank"] = float(st["device_rank"])
    doc["objective"] = {"max_stage_latency_s": base["objective"]["max_stage_latency_s"]}
    if key == "train":  # a training stage needs its passes: the schema leaves them optional
        for st, full in zip(doc["stages"], base["stages"], strict=True):
            st.update({k: full[k] for k in ("forward_s", "backward_s", "transfer_out_s",
                                            "microbatches_in_flight")})
    assert VALIDATOR.is_valid(doc)
    plan = Plan.from_dict(doc)
    for st, full in zip(plan.stages, base["stages"], strict=True):
        assert st.headroom_bytes == full["headroom_bytes"]
        assert st.device_type == full["device_type"] and st.node == full["node"]
        assert isinstance(st.memory_bytes, int) and isinstance(st.device_rank, int)
        if key == "train" or st.index == 0:  # derivable: the passes, or no inbound transfer
            assert math.isclose(st.transfer_in_s, full["transfer_in_s"], abs_tol=1e-15)
            assert math.isclose(st.compute_s, full["compute_s"], rel_tol=1e-9)
    assert "stages/1/transfer_in_s" in plan.derived
    assert plan.objective["bottleneck_stage"] == base["objective"]["bottleneck_stage"]
    assert verify_plan(plan).rebuilt
    path = _write(tmp_path, "variant.json", doc)
    assert main(["show", path]) == 0 and main(["simulate", path]) == 0
    assert capsys.readouterr().err == ""
    assert Plan.from_dict(json.loads(plan.to_json())) == plan  # what it writes reads back


def test_contradictions_the_schema_allows_are_refused_not_crashed(plans: dict[str, Path]) -> None:
    base = _doc(plans["zoo"])
    edits: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
        (lambda d: d["stages"][0].pop("kv_bytes_per_token"), "stages/0/kv_capacity_tokens"),
        (lambda d: d["stages"][0].update(compute_s=0.0), "stages/0/latency_s"),
        (lambda d: d["stages"][1].update(resident_layers=["nope"]),
         "stages/1/resident_layers: 'nope'"),
        (lambda d: d["predicted"].update(step_s=1.0), "predicted/step_s"),
        (lambda d: d["workload"].update(batch=True), "workload/batch"),
    ]
    for change, expected in edits:
        doc = copy.deepcopy(base)
        change(doc)
        assert VALIDATOR.is_valid(doc)
        with pytest.raises(InvalidInputError, match=expected):
            Plan.from_dict(doc)
    train = _doc(plans["train"])
    for key in ("microbatches", "schedule", "bubble_fraction"):
        train["predicted"].pop(key)
    plan = Plan.from_dict(train)  # a training plan's step without its schedule's figures
    assert plan.predicted["schedule"] == train["workload"]["schedule"]
    assert "predicted/schedule" in plan.derived
