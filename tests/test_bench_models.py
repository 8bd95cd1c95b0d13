"""Small versions of the benchmark's generated models: exact parameter counts, and no external weight bytes read."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import onnx
import pytest

import edgefit

_GENERATORS = Path(__file__).resolve().parent.parent / "benchmarks" / "generators.py"
_spec = importlib.util.spec_from_file_location("edgefit_bench_generators", _GENERATORS)
generators = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = generators   # dataclasses look their module up there
_spec.loader.exec_module(generators)

SMALL = generators.DecoderConfig(layers=2, hidden=256, heads=4, ffn=688, vocab=1000, name="tiny_decoder")


def _bytes_read() -> int | None:
    """rchar of this process: every byte read() returned, sparse holes and page cache included."""
    try:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))
    except OSError:
        return None


def test_decoder_params_analytic():
    assert generators.decoder_params(generators.LLAMA_7B) == 6_738_415_616   # LLaMA-7B as published
    h, f, v = SMALL.hidden, SMALL.ffn, SMALL.vocab
    assert generators.decoder_params(SMALL) == v * h + 2 * (4 * h * h + 3 * h * f + 2 * h) + h + h * v


def test_small_decoder_sparse_external_data_never_read(tmp_path, monkeypatch):
    path = generators.make_decoder(tmp_path, SMALL)
    data = tmp_path / "tiny_decoder.onnx.data"
    stat = data.stat()
    assert stat.st_size > 4 * (generators.decoder_params(SMALL) - 1)   # every weight has its slot ...
    assert stat.st_blocks == 0                                          # ... and none is on disk
    proto = onnx.load(str(path), load_external_data=False)
    assert len(proto.graph.node) == generators.decoder_node_count(SMALL)
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) == 2 + 9 * SMALL.layers + 1
    assert all(not t.HasField("raw_data") for t in external)

    def refuse(*args, **kwargs):
        raise AssertionError("analysis tried to load external weight bytes")

    monkeypatch.setattr(onnx, "load_external_data_for_model", refuse)
    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_model", refuse)
    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_tensor", refuse)
    edgefit.analyze(path, dims={"batch": 1, "seq": 8})   # warm-up: imports read their own files
    before = _bytes_read()
    fp = edgefit.analyze(path, dims={"batch": 1, "seq": 16})
    after = _bytes_read()

    assert fp.params == generators.decoder_params(SMALL)
    # + the two int64 Reshape shapes and the float attention scale: stored, but not parameters
    assert fp.weight_bytes == 4 * fp.params + 8 * (4 + 3) + 4
    assert not fp.unknowns
    assert fp.inputs == {"input_ids": [1, 16]}
    assert fp.outputs == {"logits": [1, 16, SMALL.vocab]}
    assert data.stat().st_blocks == 0   # nothing written into the sparse file
    if before is not None:
        # The graph file is read once (a few KB); reading the weights would cost stat.st_size more.
        assert after - before < path.stat().st_size + stat.st_size // 4


def test_small_deep_graph_params(tmp_path):
    path = generators.make_deep_graph(tmp_path, nodes=300, width=16)
    proto = onnx.load(str(path))
    assert len(proto.graph.node) == 300
    fp = edgefit.analyze(path, dims={"batch": 1})
    assert fp.params == generators.deep_graph_params(30, 16) == 30 * (3 * 16 * 16 + 2 * 16)
    assert fp.weight_bytes == 4 * fp.params
    assert len(fp.layers) == 300
    assert not fp.unknowns
    assert fp.outputs == {proto.graph.output[0].name: [1, 16]}
    # Each MatMul of a block is width^2 MACs for batch 1: three per block.
    assert fp.macs == 30 * 3 * 16 * 16


@pytest.mark.skipif(not hasattr(os, "truncate"), reason="needs os.truncate")
def test_sparse_data_file_has_exact_extent(tmp_path):
    path = generators.make_decoder(tmp_path, SMALL)
    proto = onnx.load(str(path), load_external_data=False)
    end = 0
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            meta = {e.key: e.value for e in tensor.external_data}
            assert meta["location"] == "tiny_decoder.onnx.data"
            assert int(meta["offset"]) % 4096 == 0
            elements = 1
            for d in tensor.dims:
                elements *= d
            assert int(meta["length"]) == 4 * elements
            end = max(end, int(meta["offset"]) + int(meta["length"]))
    assert (tmp_path / "tiny_decoder.onnx.data").stat().st_size == end
