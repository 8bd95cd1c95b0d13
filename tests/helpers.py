"""Small model builders for tests: graphs are spelled out with onnx.helper so every number can be checked by hand."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def weight(name: str, *shape: int, dtype=np.float32, seed: int = 0) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(dtype), name)


def model(nodes, inputs, outputs, initializers=(), opset: int = 17, value_info=()) -> onnx.ModelProto:
    """inputs/outputs: (name, shape) or (name, shape, elem_type)."""
    def info(spec):
        name, shape, *elem = spec
        return helper.make_tensor_value_info(name, elem[0] if elem else TensorProto.FLOAT, shape)
    graph = helper.make_graph(nodes, "test", [info(i) for i in inputs], [info(o) for o in outputs],
                              list(initializers), value_info=list(value_info))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def build(nodes, inputs, outputs, inits=(), opset: int = 17, ir_version: int | None = None,
          extra_opsets=()) -> onnx.ModelProto:
    """A model from value infos (see vi); unlike model(), inputs/outputs are ValueInfoProtos already."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    if ir_version is not None:
        built.ir_version = ir_version
    return built


def save(built: onnx.ModelProto, tmp_path, name: str = "m.onnx"):
    """Write the model's bytes as they are: no checks, since some test models are broken on purpose."""
    path = tmp_path / name
    path.write_bytes(built.SerializeToString())
    return path
