"""Byte units, chain JSON, LayerGraph validation and the lowering to a Problem."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from solver import (
    InvalidInputError,
    LayerGraph,
    MemoryModel,
    Problem,
    chain_from_dict,
    chain_to_dict,
    format_bytes,
    load_chain,
    parse_bytes,
    problem_from_graph,
)

from .helpers import random_problem

CHAIN = {
    "name": "toy", "input_bytes": 65536,
    "link": {"bandwidth_bytes_per_s": 4.0e11, "latency_s": 5e-6},
    "layers": [
        {"name": "embed", "weight_bytes": 262144000, "activation_bytes": 16777216,
         "buffer_bytes": 0, "latency_s": 0.0012},
        {"name": "block0", "weight_bytes": 1000, "activation_bytes": 2000, "latency_s": 0.5},
        {"name": "head", "weight_bytes": 3000, "activation_bytes": 10, "buffer_bytes": 7,
         "latency_s": 0.25},
    ],
}


@pytest.mark.parametrize(("text", "expected"), [
    ("52428800", 52428800), ("50MiB", 50 * 2**20), ("48MB", 48_000_000), ("80GB", 80 * 10**9),
    ("1.5GiB", 3 * 2**29), ("50 mib", 50 * 2**20), ("2e3", 2000), (4096, 4096), ("10B", 10),
])
def test_parse_bytes(text, expected) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-5MB", "5 parsecs", "0", "1e400GB"])
def test_parse_bytes_rejects(text) -> None:
    with pytest.raises(InvalidInputError, match="capacity"):
        parse_bytes(text)


def test_format_bytes() -> None:
    assert format_bytes(50 * 2**20) == "50 MiB"
    assert format_bytes(512) == "512 B"


def test_chain_round_trip(tmp_path) -> None:
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(CHAIN))
    graph = load_chain(path)
    assert graph.order() == ["embed", "block0", "head"]
    assert graph.graph.edges["embed", "block0"]["bytes"] == 16777216
    again = chain_from_dict(chain_to_dict(graph))
    assert chain_to_dict(again) == chain_to_dict(graph)
    assert chain_to_dict(graph)["layers"][1]["buffer_bytes"] == 0


def test_lowering_matches_the_canonical_definitions() -> None:
    graph = chain_from_dict(CHAIN)
    problem = problem_from_graph(graph, capacity_bytes=10**9, max_stages=2)
    assert problem.names == ("embed", "block0", "head")
    assert problem.cut_bytes.tolist() == [65536, 16777216, 2000]
    # Stage [1, 3): compute 0.75 s + inbound 16777216 B / 4e11 B/s + 5 us.
    assert problem.stage_time(1, 3) == pytest.approx(0.75 + 16777216 / 4e11 + 5e-6)
    assert problem.stage_time(0, 1) == pytest.approx(0.0012)  # the model input is local
    assert problem.stage_memory(1, 3) == 1000 + 2000 + 0 + 3000 + 10 + 7
    peak = problem.replace(memory_model=MemoryModel.PEAK)
    # weights 4000 + max(16777216 + 2000 + 0, 2000 + 10 + 7)
    assert peak.stage_memory(1, 3) == 4000 + 16777216 + 2000


def test_dag_cut_bytes_count_every_crossing_edge() -> None:
    graph = chain_from_dict(CHAIN)
    graph.graph.add_edge("embed", "head", bytes=500)  # a skip connection
    problem = problem_from_graph(graph, capacity_bytes=10**9, max_stages=3)
    # The skip edge crosses both boundaries.
    assert problem.cut_bytes.tolist() == [65536, 16777216 + 500, 2000 + 500]


def test_problem_json_round_trip() -> None:
    problem = random_problem(4, 7, memory_model="peak")
    again = Problem.from_dict(json.loads(json.dumps(problem.to_dict())))
    assert again == problem
    assert again.stage_time(2, 5) == problem.stage_time(2, 5)


def test_extended_problem_and_partition_json_round_trip() -> None:
    from solver import Link, Partition, Residency, TensorParallel, solve

    base = random_problem(5, 8, max_stages=6)
    tp = base.replace(tensor_parallel=TensorParallel((1, 2), 2, base.activation_bytes, Link(1e6)))
    res = base.replace(residency=Residency(base.latency_s, base.latency_s * 2))
    for problem in (tp, res):
        again = Problem.from_dict(json.loads(json.dumps(problem.to_dict())))
        assert again == problem and again.extensions == problem.extensions
        assert again != base
        part = solve(problem, "ilp")
        back = Partition.from_dict(json.loads(json.dumps(part.to_dict())))
        assert back == part
        assert (back.tp_degrees, back.resident) == (part.tp_degrees, part.resident)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["layers"][1].pop("latency_s"), r"layers\[1\] \('block0'\): missing field 'latency_s'"),
    (lambda d: d["layers"][0].update(weight_bytes=-5), r"'embed'.weight_bytes: must be >= 0, got -5"),
    (lambda d: d["layers"][2].update(latency_s="fast"), r"'head'.latency_s: expected a number"),
    (lambda d: d["layers"][2].update(activation_bytes=1.5), r"whole number of bytes"),
    (lambda d: d["layers"][2].update(name="embed"), r"duplicate layer name 'embed'"),
    (lambda d: d.update(layers=[]), r"layers: expected a non-empty list"),
    (lambda d: d.update(link={"latency_s": 1}), r"link: expected"),
    (lambda d: d["link"].update(bandwidth_bytes_per_s=0), r"link.bandwidth_bytes_per_s: must be > 0"),
    (lambda d: d.update(extra=1), r"unknown top-level field 'extra'"),
    (lambda d: d["layers"][0].update(latency_s=float("nan")), r"finite"),
])
def test_bad_chains_name_the_field(mutate, message) -> None:
    doc = json.loads(json.dumps(CHAIN))
    mutate(doc)
    with pytest.raises(InvalidInputError, match=message):
        chain_from_dict(doc)


def test_cycle_is_reported() -> None:
    graph = chain_from_dict(CHAIN)
    graph.graph.add_edge("head", "embed")
    with pytest.raises(InvalidInputError, match="cycle"):
        graph.validate()


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_chain(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(InvalidInputError, match=r"bad.json: not valid JSON \(line 1"):
        load_chain(bad)


def test_problem_validation() -> None:
    base = random_problem(0, 3)
    with pytest.raises(InvalidInputError, match="max_stages"):
        base.replace(max_stages=0)
    with pytest.raises(InvalidInputError, match="capacity"):
        base.replace(capacity_bytes=0)
    with pytest.raises(InvalidInputError, match=r"latency_s\[1\]"):
        base.replace(latency_s=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(InvalidInputError, match="expected 3"):
        base.replace(weight_bytes=[1, 2])


def test_layer_graph_builds_from_networkx() -> None:
    g = nx.DiGraph()
    g.add_node("b", weight_bytes=1, activation_bytes=1, latency_s=1.0, order=1)
    g.add_node("a", weight_bytes=1, activation_bytes=1, latency_s=1.0, order=0)
    g.add_edge("a", "b", bytes=1)
    lg = LayerGraph("m", g)
    lg.validate()
    assert lg.order() == ["a", "b"]
    g.nodes["b"].pop("latency_s")
    with pytest.raises(InvalidInputError, match="layer 'b': missing field 'latency_s'"):
        lg.validate()
