"""Model generators for the analysis benchmark (and its tests).

* `make_decoder`: a LLaMA-like decoder-only transformer whose weights live in ONE external data file written as a
  sparse file (created and truncated to its full size, nothing written), with every tensor's `external_data`
  (location, offset, length) set by hand, so a 27 GB model costs a few hundred kilobytes of graph and no disk
  blocks.
* `make_deep_graph`: a deep stack of small branchy residual MLP blocks with inline weights (about 10 nodes per
  block), for graphs with tens of thousands of nodes.

Each generator has an analytic parameter count next to it (`decoder_params`, `deep_graph_params`) that edgefit
must reproduce exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 23            # RMSNormalization is a standard op from opset 23
_ALIGN = 4096         # offsets of external tensors in the data file (what onnx's own writer uses for mmap)


# --------------------------------------------------------------------------------------------------------------
# Decoder-only transformer with sparse external data
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecoderConfig:
    layers: int = 32
    hidden: int = 4096
    heads: int = 32
    ffn: int = 11008
    vocab: int = 32000
    name: str = "decoder"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


LLAMA_7B = DecoderConfig()


def decoder_params(cfg: DecoderConfig) -> int:
    """Parameters of the generated decoder, LLaMA's count (6,738,415,616 for LLaMA-7B).

    embedding V*H + per layer (4 H^2 attention + 3 H F SwiGLU + 2 H RMSNorm scales) + final norm H + lm_head H*V.
    The float scalar 1/sqrt(head_dim) every layer's attention Mul reads is a hyperparameter, not a parameter.
    """
    h, f, v = cfg.hidden, cfg.ffn, cfg.vocab
    per_layer = 4 * h * h + 3 * h * f + 2 * h
    return v * h + cfg.layers * per_layer + h + h * v


def decoder_node_count(cfg: DecoderConfig) -> int:
    return 1 + 26 * cfg.layers + 2


class _ExternalWriter:
    """Hands out 4096-aligned (offset, length) slots in one data file and builds metadata-only tensors."""

    def __init__(self, location: str):
        self.location = location
        self.end = 0
        self.tensors: list[TensorProto] = []

    def tensor(self, name: str, dims: list[int], dtype: int = TensorProto.FLOAT) -> TensorProto:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(dtype)).itemsize
        length = int(np.prod(dims, dtype=np.int64)) * itemsize
        offset = -(-self.end // _ALIGN) * _ALIGN
        self.end = offset + length
        t = TensorProto()
        t.name = name
        t.data_type = dtype
        t.dims.extend(dims)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
            entry = t.external_data.add()
            entry.key = key
            entry.value = value
        self.tensors.append(t)
        return t


def make_decoder(out_dir: str | os.PathLike, cfg: DecoderConfig = LLAMA_7B) -> Path:
    """Write `<name>.onnx` and its sparse `<name>.onnx.data` into out_dir; returns the .onnx path.

    Graph per layer (26 nodes): RMSNorm; Q/K/V MatMuls; Reshape+Transpose of each to heads; scores MatMul, scale
    Mul, Softmax, context MatMul, Transpose, Reshape; O MatMul; residual Add; RMSNorm; gate/up MatMuls; SiLU as
    Sigmoid*Mul; gate*up Mul; down MatMul; residual Add. Inputs: input_ids[batch, seq] (int64); output:
    logits[batch, seq, vocab].
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{cfg.name}.onnx"
    data_name = f"{cfg.name}.onnx.data"
    data_path = out_dir / data_name
    ext = _ExternalWriter(data_name)
    h, f, v, nh, hd = cfg.hidden, cfg.ffn, cfg.vocab, cfg.heads, cfg.head_dim

    nodes: list[onnx.NodeProto] = []
    inline = [
        numpy_helper.from_array(np.array([0, 0, nh, hd], dtype=np.int64), "shape_heads"),
        numpy_helper.from_array(np.array([0, 0, h], dtype=np.int64), "shape_hidden"),
        numpy_helper.from_array(np.array(1.0 / np.sqrt(hd), dtype=np.float32), "attn_scale"),
    ]

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    ext.tensor("embed_tokens.weight", [v, h])
    x = node("Gather", ["embed_tokens.weight", "input_ids"], "embed", axis=0)
    for i in range(cfg.layers):
        p = f"layers.{i}"
        for w, dims in (("input_norm", [h]), ("q", [h, h]), ("k", [h, h]), ("v", [h, h]), ("o", [h, h]),
                        ("post_norm", [h]), ("gate", [h, f]), ("up", [h, f]), ("down", [f, h])):
            ext.tensor(f"{p}.{w}.weight", dims)
        n1 = node("RMSNormalization", [x, f"{p}.input_norm.weight"], f"{p}/input_norm", axis=-1, epsilon=1e-6)
        q = node("MatMul", [n1, f"{p}.q.weight"], f"{p}/q_proj")
        k = node("MatMul", [n1, f"{p}.k.weight"], f"{p}/k_proj")
        val = node("MatMul", [n1, f"{p}.v.weight"], f"{p}/v_proj")
        qh = node("Transpose", [node("Reshape", [q, "shape_heads"], f"{p}/q_heads")], f"{p}/q_t", perm=[0, 2, 1, 3])
        kh = node("Transpose", [node("Reshape", [k, "shape_heads"], f"{p}/k_heads")], f"{p}/k_t", perm=[0, 2, 3, 1])
        vh = node("Transpose", [node("Reshape", [val, "shape_heads"], f"{p}/v_heads")], f"{p}/v_t",
                  perm=[0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [qh, kh], f"{p}/scores"), "attn_scale"], f"{p}/scaled")
        probs = node("Softmax", [scores], f"{p}/softmax", axis=-1)
        ctx = node("MatMul", [probs, vh], f"{p}/context")
        ctx = node("Reshape", [node("Transpose", [ctx], f"{p}/context_t", perm=[0, 2, 1, 3]), "shape_hidden"],
                   f"{p}/context_merged")
        attn = node("MatMul", [ctx, f"{p}.o.weight"], f"{p}/o_proj")
        x = node("Add", [x, attn], f"{p}/attn_residual")
        n2 = node("RMSNormalization", [x, f"{p}.post_norm.weight"], f"{p}/post_norm", axis=-1, epsilon=1e-6)
        gate = node("MatMul", [n2, f"{p}.gate.weight"], f"{p}/gate_proj")
        up = node("MatMul", [n2, f"{p}.up.weight"], f"{p}/up_proj")
        silu = node("Mul", [gate, node("Sigmoid", [gate], f"{p}/gate_sigmoid")], f"{p}/gate_silu")
        down = node("MatMul", [node("Mul", [silu, up], f"{p}/swiglu"), f"{p}.down.weight"], f"{p}/down_proj")
        x = node("Add", [x, down], f"{p}/mlp_residual")
    ext.tensor("norm.weight", [h])
    ext.tensor("lm_head.weight", [h, v])
    x = node("RMSNormalization", [x, "norm.weight"], "final_norm", axis=-1, epsilon=1e-6)
    node("MatMul", [x, "lm_head.weight"], "logits")

    graph = helper.make_graph(
        nodes, cfg.name,
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", v])],
        initializer=[*ext.tensors, *inline])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgefit-bench")
    # The sparse data file: full size, no blocks written.
    data_path.unlink(missing_ok=True)
    with open(data_path, "wb"):
        pass
    os.truncate(data_path, ext.end)
    # Tensors hold only metadata (no raw_data), so onnx.save writes the graph file alone.
    onnx.save(model, str(model_path))
    return model_path


# --------------------------------------------------------------------------------------------------------------
# Deep, branchy graph of small residual MLP blocks with inline weights
# --------------------------------------------------------------------------------------------------------------

NODES_PER_BLOCK = 10


def deep_graph_params(blocks: int, width: int) -> int:
    """Per block: two branch MatMuls + biases (2 (W^2 + W)) and a merge MatMul (W^2)."""
    return blocks * (3 * width * width + 2 * width)


def make_deep_graph(out_dir: str | os.PathLike, nodes: int = 12_000, width: int = 32, name: str = "deep_graph",
                    seed: int = 0) -> Path:
    """Write `<name>.onnx` with nodes // 10 blocks; returns its path.

    Block (10 nodes, x: [batch, width]):
        a = Relu(x @ Wa + ba);  b = Relu(x @ Wb + bb)      two parallel branches reading x
        y = Relu((a + b) @ Wc + x)                         merge, projection, residual
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = max(1, nodes // NODES_PER_BLOCK)
    rng = np.random.default_rng(seed)
    graph_nodes: list[onnx.NodeProto] = []
    weights: list[TensorProto] = []

    def weight(name: str, shape: tuple[int, ...]) -> str:
        weights.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.05).astype(np.float32), name))
        return name

    def node(op: str, inputs: list[str], output: str) -> str:
        graph_nodes.append(helper.make_node(op, inputs, [output], name=output))
        return output

    x = "x"
    for i in range(blocks):
        p = f"block{i}"
        branches = []
        for side in ("a", "b"):
            mm = node("MatMul", [x, weight(f"{p}.w{side}", (width, width))], f"{p}/{side}_matmul")
            add = node("Add", [mm, weight(f"{p}.b{side}", (width,))], f"{p}/{side}_bias")
            branches.append(node("Relu", [add], f"{p}/{side}_relu"))
        merged = node("Add", branches, f"{p}/merge")
        proj = node("MatMul", [merged, weight(f"{p}.wc", (width, width))], f"{p}/proj")
        x = node("Relu", [node("Add", [proj, x], f"{p}/residual")], f"{p}/out")

    graph = helper.make_graph(
        graph_nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", width])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgefit-bench")
    path = out_dir / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------------------------------------------
# Pass-scaling graphs: Conv+BatchNorm chains and Constant-heavy PyTorch-style exports (in memory)
# --------------------------------------------------------------------------------------------------------------

def make_conv_bn_chain(nodes: int, channels: int = 4, seed: int = 0) -> onnx.ModelProto:
    """nodes // 3 blocks of Conv(1x1) -> BatchNormalization -> Relu on x[1, channels, 4, 4]: every BatchNorm folds
    into its Conv, so `fuse` rewrites a third of the graph."""
    rng = np.random.default_rng(seed)
    graph_nodes, weights = [], []
    x = "x"
    for i in range(max(1, nodes // 3)):
        p = f"b{i}"
        weights += [numpy_helper.from_array((rng.standard_normal((channels, channels, 1, 1)) * 0.5)
                                            .astype(np.float32), f"{p}.w")]
        for part, low in (("scale", 0.5), ("bias", -0.1), ("mean", -0.1), ("var", 0.5)):
            weights.append(numpy_helper.from_array(rng.uniform(low, low + 1, channels).astype(np.float32),
                                                   f"{p}.{part}"))
        graph_nodes.append(helper.make_node("Conv", [x, f"{p}.w"], [f"{p}/conv"], name=f"{p}/conv"))
        graph_nodes.append(helper.make_node("BatchNormalization", [f"{p}/conv", f"{p}.scale", f"{p}.bias",
                                                                    f"{p}.mean", f"{p}.var"],
                                            [f"{p}/bn"], name=f"{p}/bn"))
        x = f"{p}/relu"
        graph_nodes.append(helper.make_node("Relu", [f"{p}/bn"], [x], name=x))
    graph = helper.make_graph(
        graph_nodes, "conv_bn_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 4, 4])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, channels, 4, 4])], initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgefit-bench")


def make_constant_heavy(nodes: int, width: int = 8, seed: int = 0) -> onnx.ModelProto:
    """nodes // 4 blocks of the shape a PyTorch export leaves: a `Constant` weight, a `Constant` bias, MatMul, Add
    (x: [1, width]). Half the graph is Constant nodes, which `fuse` turns into initializers."""
    rng = np.random.default_rng(seed)
    graph_nodes = []
    x = "x"
    for i in range(max(1, nodes // 4)):
        p = f"l{i}"
        weight = numpy_helper.from_array((rng.standard_normal((width, width)) * 0.3).astype(np.float32))
        bias = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32))
        graph_nodes.append(helper.make_node("Constant", [], [f"{p}/w"], name=f"{p}/w", value=weight))
        graph_nodes.append(helper.make_node("Constant", [], [f"{p}/b"], name=f"{p}/b", value=bias))
        graph_nodes.append(helper.make_node("MatMul", [x, f"{p}/w"], [f"{p}/mm"], name=f"{p}/mm"))
        x = f"{p}/add"
        graph_nodes.append(helper.make_node("Add", [f"{p}/mm", f"{p}/b"], [x], name=x))
    graph = helper.make_graph(
        graph_nodes, "constant_heavy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, width])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgefit-bench")
