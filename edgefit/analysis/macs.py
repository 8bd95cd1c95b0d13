"""Per-op cost rules: multiply-accumulates (MACs) and floating-point operations (FLOPs).

One rule per op type, looked up in COST_RULES. MACs follow the convention of papers and vendor tools: only the
multiply-accumulate work of convolutions, matrix products, recurrent cells and attention. FLOPs count 2 per MAC
plus the elementwise, normalisation, pooling and reduction work, one FLOP per element and step unless a rule says
otherwise. Control flow (If/Loop/Scan) is costed by the footprint from its subgraphs, not here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from onnx import NodeProto

from edgefit.model import node_attribute
from edgefit.shapes import TensorInfo


class UnknownCost(Exception):
    """The rule needs a shape or attribute that is not known; the message is the reason."""


@dataclass(slots=True)
class OpContext:
    node: NodeProto
    inputs: Sequence[TensorInfo | None]    # None for an absent optional input
    outputs: Sequence[TensorInfo | None]

    def attr(self, name: str, default=None):
        return node_attribute(self.node, name, default)

    def in_shape(self, index: int) -> tuple[int, ...]:
        info = self.inputs[index] if index < len(self.inputs) else None
        if info is None or info.shape is None:
            raise UnknownCost(f"shape of input {index} ({_input_name(self.node, index)}) is unknown")
        return info.shape

    def out_shape(self, index: int = 0) -> tuple[int, ...]:
        info = self.outputs[index] if index < len(self.outputs) else None
        if info is None or info.shape is None:
            raise UnknownCost(f"shape of output {index} ({_output_name(self.node, index)}) is unknown")
        return info.shape

    def has_input(self, index: int) -> bool:
        return index < len(self.node.input) and bool(self.node.input[index])


def _input_name(node: NodeProto, index: int) -> str:
    return node.input[index] if index < len(node.input) else "missing"


def _output_name(node: NodeProto, index: int) -> str:
    return node.output[index] if index < len(node.output) else "missing"


Cost = tuple[int, int]   # (MACs, FLOPs)
Rule = Callable[[OpContext], Cost]


def _conv(weight: int, bias: int | None) -> Rule:
    def rule(ctx: OpContext) -> Cost:
        # Each output element accumulates (C_in / group) x kernel products; W is [C_out, C_in/group, k...].
        x, w, group = ctx.in_shape(0), ctx.in_shape(weight), ctx.attr("group", 1)
        if len(x) > 1 and len(w) > 1 and x[1] != w[1] * group:
            raise UnknownCost(f"input has {x[1]} channels but the weight expects {w[1]} x group {group}; the model "
                              f"cannot run at this input shape")
        macs = math.prod(ctx.out_shape()) * math.prod(w[1:])
        adds = math.prod(ctx.out_shape()) if bias is not None and ctx.has_input(bias) else 0
        return macs, 2 * macs + adds
    return rule


def _conv_transpose(ctx: OpContext) -> Cost:
    # Every input element is scattered into (C_out / group) x kernel outputs; W is [C_in, C_out/group, k...].
    macs = math.prod(ctx.in_shape(0)) * math.prod(ctx.in_shape(1)[1:])
    adds = math.prod(ctx.out_shape()) if ctx.has_input(2) else 0
    return macs, 2 * macs + adds


def _gemm(a: int, b: int, c: int | None) -> Rule:
    def rule(ctx: OpContext) -> Cost:
        a_shape, b_shape = ctx.in_shape(a), ctx.in_shape(b)
        m, k = (a_shape[1], a_shape[0]) if ctx.attr("transA", 0) else (a_shape[0], a_shape[1])
        n, b_k = (b_shape[0], b_shape[1]) if ctx.attr("transB", 0) else (b_shape[1], b_shape[0])
        _check_inner(ctx, k, b_k, a_shape, b_shape)
        adds = m * n if c is not None and ctx.has_input(c) else 0
        return m * n * k, 2 * m * n * k + adds
    return rule


def _matmul(a: int, b: int) -> Rule:
    def rule(ctx: OpContext) -> Cost:
        # Output elements (batch dims already broadcast) x the contracted length K.
        a_shape, b_shape = ctx.in_shape(a), ctx.in_shape(b)
        k = a_shape[-1] if a_shape else 1
        _check_inner(ctx, k, b_shape[-2] if len(b_shape) >= 2 else b_shape[0], a_shape, b_shape)
        try:
            out = math.prod(ctx.out_shape())
        except UnknownCost:
            batch = _broadcast(a_shape[:-2], b_shape[:-2])
            m = a_shape[-2] if len(a_shape) >= 2 else 1
            n = b_shape[-1] if len(b_shape) >= 2 else 1
            out = math.prod(batch) * m * n
        return out * k, 2 * out * k
    return rule


def _fused_matmul(ctx: OpContext) -> Cost:
    # onnxruntime's FusedMatMul: alpha x op(A) x op(B), op transposing the last two dims when transA / transB.
    if ctx.attr("transBatchA", 0) or ctx.attr("transBatchB", 0):
        raise UnknownCost("FusedMatMul with transBatchA/transBatchB")
    shapes = []
    for index, flag in ((0, "transA"), (1, "transB")):
        shape = ctx.in_shape(index)
        if ctx.attr(flag, 0) and len(shape) >= 2:
            shape = (*shape[:-2], shape[-1], shape[-2])
        shapes.append(shape)
    a_shape, b_shape = shapes
    return _matmul(0, 1)(OpContext(ctx.node, [_with_shape(ctx.inputs[0], a_shape), _with_shape(ctx.inputs[1], b_shape)],
                                   ctx.outputs))


def _with_shape(info: TensorInfo | None, shape: tuple[int, ...]) -> TensorInfo | None:
    return None if info is None else dataclasses.replace(info, dims=shape)


def _check_inner(ctx: OpContext, a_k: int, b_k: int, a_shape, b_shape) -> None:
    """onnx shape inference (non-strict) lets a contraction over mismatched lengths through: such a model cannot
    run at these input shapes, so its cost is unknown rather than a number."""
    if a_k != b_k:
        raise UnknownCost(f"{ctx.node.op_type} inner dimensions disagree ({list(a_shape)} x {list(b_shape)}): the "
                          f"model cannot run at these input shapes")


def _broadcast(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    width = max(len(a), len(b))
    a = (1,) * (width - len(a)) + tuple(a)
    b = (1,) * (width - len(b)) + tuple(b)
    return tuple(max(x, y) for x, y in zip(a, b))


def _einsum(ctx: OpContext) -> Cost:
    equation = ctx.attr("equation", "").replace(" ", "")
    operands = equation.split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for index, term in enumerate(operands):
        shape = ctx.in_shape(index)
        if "..." in term:
            head, tail = term.split("...")
            ellipsis_rank = len(shape) - len(head) - len(tail)
            labels = list(head) + [f"...{i}" for i in range(ellipsis_rank)] + list(tail)
        else:
            labels = list(term)
        if len(labels) != len(shape):
            raise UnknownCost(f"Einsum term {term!r} does not match input shape {shape}")
        for label, size in zip(labels, shape):
            sizes[label] = max(sizes.get(label, 1), size)
    if len(operands) < 2:
        return 0, math.prod(ctx.in_shape(0))
    # The naive evaluation visits every combination of all labels once per extra operand.
    macs = math.prod(sizes.values()) * (len(operands) - 1)
    return macs, 2 * macs


def _recurrent(gates: int) -> Rule:
    def rule(ctx: OpContext) -> Cost:
        x = ctx.in_shape(0)
        seq, batch = (x[1], x[0]) if ctx.attr("layout", 0) else (x[0], x[1])
        hidden = ctx.attr("hidden_size")
        if hidden is None:
            hidden = ctx.in_shape(2)[-1]
        directions = 2 if ctx.attr("direction", "forward") == "bidirectional" else 1
        # Per step and direction: every gate multiplies [x_t, h_{t-1}] by its (input + hidden) x hidden weights.
        macs = directions * seq * batch * gates * hidden * (x[2] + hidden)
        cell_work = directions * seq * batch * hidden * (2 * gates + 3)   # bias adds, activations, state update
        return macs, 2 * macs + cell_work
    return rule


def _attention(ctx: OpContext) -> Cost:
    # ONNX Attention (opset 23): scores Q.K^T then weights.V; Q [B, Hq, Lq, D] or [B, Lq, Hq*D].
    q, k, v = ctx.in_shape(0), ctx.in_shape(1), ctx.in_shape(2)
    if len(q) == 4:
        batch, heads, q_len, head_dim = q
        kv_len, v_dim = k[-2], v[-1]
    else:
        heads = ctx.attr("q_num_heads")
        kv_heads = ctx.attr("kv_num_heads")
        if not heads or not kv_heads:
            raise UnknownCost("3-D Attention without q_num_heads/kv_num_heads")
        batch, q_len = q[0], q[1]
        head_dim, kv_len, v_dim = q[2] // heads, k[1], v[2] // kv_heads
    macs = batch * heads * q_len * kv_len * (head_dim + v_dim)
    return macs, 2 * macs + 3 * batch * heads * q_len * kv_len


def _per_output_element(flops_per_element: int) -> Rule:
    def rule(ctx: OpContext) -> Cost:
        return 0, flops_per_element * math.prod(ctx.out_shape())
    return rule


def _per_input_element(flops_per_element: int) -> Rule:
    def rule(ctx: OpContext) -> Cost:
        return 0, flops_per_element * math.prod(ctx.in_shape(0))
    return rule


def _pool(ctx: OpContext) -> Cost:
    kernel = ctx.attr("kernel_shape")
    if not kernel:
        raise UnknownCost("pooling without kernel_shape")
    return 0, math.prod(ctx.out_shape()) * math.prod(kernel)


def _free(ctx: OpContext) -> Cost:
    return 0, 0


_ELEMENTWISE = ("Add Sub Mul Div Pow Mod Neg Abs Sqrt Reciprocal Exp Log Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh "
                "Acosh Atanh Erf Sign Floor Ceil Round Relu LeakyRelu PRelu Elu Selu Celu Gelu Sigmoid HardSigmoid "
                "HardSwish Swish Mish Softplus Softsign Tanh ThresholdedRelu Clip Min Max Mean Sum Where Equal Less "
                "LessOrEqual Greater GreaterOrEqual And Or Xor Not BitShift BitwiseAnd BitwiseOr BitwiseXor "
                "BitwiseNot IsNaN IsInf Shrink").split()
_REDUCTIONS = ("ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp "
               "ReduceSumSquare ArgMax ArgMin CumSum TopK GlobalAveragePool GlobalMaxPool GlobalLpPool").split()
# Data movement, shape arithmetic, type conversion, sequences, strings and random draws: no arithmetic worth
# counting.
_FREE = ("Identity Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Gather GatherElements GatherND "
         "ScatterElements ScatterND Scatter Expand Tile Pad Shape Size Cast CastLike Dropout DepthToSpace SpaceToDepth "
         "ConstantOfShape Range EyeLike OneHot NonZero Compress ReverseSequence Trilu Optional OptionalGetElement "
         "OptionalHasElement SequenceAt SequenceConstruct SequenceEmpty SequenceInsert SequenceLength SplitToSequence "
         "SequenceErase ConcatFromSequence Upsample Unique StringNormalizer StringConcat StringSplit RegexFullMatch "
         "Bernoulli Multinomial RandomNormal RandomNormalLike RandomUniform RandomUniformLike").split()

COST_RULES: dict[str, Rule] = {
    "Conv": _conv(weight=1, bias=2),
    "ConvInteger": _conv(weight=1, bias=None),
    "QLinearConv": _conv(weight=3, bias=8),
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm(0, 1, 2),
    "MatMul": _matmul(0, 1),
    "MatMulInteger": _matmul(0, 1),
    "QLinearMatMul": _matmul(0, 3),
    "Einsum": _einsum,
    "LSTM": _recurrent(gates=4),
    "GRU": _recurrent(gates=3),
    "RNN": _recurrent(gates=1),
    "Attention": _attention,
    "MaxPool": _pool, "AveragePool": _pool, "LpPool": _pool, "MaxRoiPool": _per_output_element(1),
    "BatchNormalization": _per_output_element(2),
    "InstanceNormalization": _per_output_element(5),
    "LayerNormalization": _per_output_element(5),
    "GroupNormalization": _per_output_element(5),
    "RMSNormalization": _per_output_element(4),
    "LpNormalization": _per_output_element(3),
    "MeanVarianceNormalization": _per_output_element(5),
    "LRN": _per_output_element(5),
    "Softmax": _per_output_element(3), "LogSoftmax": _per_output_element(4), "Hardmax": _per_output_element(1),
    "QuantizeLinear": _per_output_element(2), "DequantizeLinear": _per_output_element(2),
    "DynamicQuantizeLinear": _per_input_element(4),
    "Resize": _per_output_element(4),
    **{op: _per_output_element(1) for op in _ELEMENTWISE},
    **{op: _per_input_element(1) for op in _REDUCTIONS},
    **{op: _free for op in _FREE},
}

def _rows(ctx: OpContext) -> int:
    """Samples in a classical-ML op's input: [N, features] (or one sample for a 1-D input)."""
    shape = ctx.in_shape(0)
    return shape[0] if len(shape) > 1 else 1


def _linear_model(ctx: OpContext) -> Cost:
    # ai.onnx.ml LinearClassifier / LinearRegressor: coefficients hold targets x features weights.
    macs = _rows(ctx) * len(ctx.attr("coefficients", []))
    return macs, 2 * macs + _rows(ctx) * len(ctx.attr("intercepts", []))


def _svm(ctx: OpContext) -> Cost:
    # ai.onnx.ml SVMClassifier / SVMRegressor: one kernel product per support vector value, then the weighted sum.
    macs = _rows(ctx) * (len(ctx.attr("support_vectors", [])) + len(ctx.attr("coefficients", [])))
    return macs, 2 * macs


def _tree_ensemble(ctx: OpContext) -> Cost:
    """ai.onnx.ml TreeEnsembleClassifier / Regressor: no MACs; one comparison per level of each tree on the
    deepest path, per sample (an upper bound on what a traversal does)."""
    trees, nodes = ctx.attr("nodes_treeids"), ctx.attr("nodes_nodeids")
    true_ids, false_ids, modes = ctx.attr("nodes_truenodeids"), ctx.attr("nodes_falsenodeids"), ctx.attr("nodes_modes")
    if not trees or not (len(trees) == len(nodes) == len(true_ids) == len(false_ids) == len(modes)):
        raise UnknownCost("tree ensemble without a complete node table")
    children = {(t, n): (yes, no) for t, n, yes, no, mode in zip(trees, nodes, true_ids, false_ids, modes)
                if (mode.decode() if isinstance(mode, bytes) else mode) != "LEAF"}
    comparisons = 0
    for tree in set(trees):
        referenced = {child for (t, _), pair in children.items() if t == tree for child in pair}
        roots = [n for t, n in zip(trees, nodes) if t == tree and n not in referenced]
        depth, level = 0, {roots[0]} if roots else set()
        while level and depth <= len(nodes):
            depth += 1
            level = {child for n in level if (tree, n) in children for child in children[(tree, n)]}
        comparisons += depth - 1 if roots else 0
    return 0, _rows(ctx) * comparisons


# Classical-ML ops (ai.onnx.ml, what sklearn-onnx and other converters write) that only look values up.
_ML_FREE = "ZipMap LabelEncoder CategoryMapper ArrayFeatureExtractor FeatureVectorizer OneHotEncoder DictVectorizer CastMap"

# Domain-qualified rules: classical-ML ops, and the contrib ops that onnxruntime's own optimizer writes into
# saved models.
CONTRIB_RULES: dict[str, Rule] = {
    "ai.onnx.ml.LinearClassifier": _linear_model,
    "ai.onnx.ml.LinearRegressor": _linear_model,
    "ai.onnx.ml.SVMClassifier": _svm,
    "ai.onnx.ml.SVMRegressor": _svm,
    "ai.onnx.ml.TreeEnsembleClassifier": _tree_ensemble,
    "ai.onnx.ml.TreeEnsembleRegressor": _tree_ensemble,
    "ai.onnx.ml.Scaler": _per_input_element(2),
    "ai.onnx.ml.Normalizer": _per_input_element(3),
    "ai.onnx.ml.Binarizer": _per_input_element(1),
    "ai.onnx.ml.Imputer": _per_input_element(1),
    **{f"ai.onnx.ml.{op}": _free for op in _ML_FREE.split()},
    "com.microsoft.FusedConv": _conv(weight=1, bias=2),
    "com.microsoft.FusedMatMul": _fused_matmul,
    "com.microsoft.FusedGemm": _gemm(0, 1, 2),
    "com.microsoft.MatMulIntegerToFloat": _matmul(0, 1),
    "com.microsoft.DynamicQuantizeMatMul": _matmul(0, 1),
    "com.microsoft.DynamicQuantizeLSTM": _recurrent(gates=4),
    "com.microsoft.QGemm": _gemm(0, 3, 6),
    "com.microsoft.QLinearAdd": _per_output_element(1),
    "com.microsoft.QLinearMul": _per_output_element(1),
    "com.microsoft.QLinearSigmoid": _per_output_element(1),
    "com.microsoft.QLinearLeakyRelu": _per_output_element(1),
    "com.microsoft.QLinearGlobalAveragePool": _per_input_element(1),
    "com.microsoft.QLinearAveragePool": _pool,
    "com.microsoft.QLinearSoftmax": _per_output_element(3),
    "com.microsoft.QLinearConcat": _free,
    "com.microsoft.Gelu": _per_output_element(1),
    "com.microsoft.QuickGelu": _per_output_element(1),
    "com.microsoft.FastGelu": _per_output_element(1),
    "com.microsoft.BiasGelu": _per_output_element(2),
    "com.microsoft.SkipLayerNormalization": _per_output_element(6),
    "com.microsoft.SimplifiedLayerNormalization": _per_output_element(4),
}


def cost_rule(node: NodeProto) -> Rule | None:
    if node.domain in ("", "ai.onnx"):
        return COST_RULES.get(node.op_type)
    return CONTRIB_RULES.get(f"{node.domain}.{node.op_type}")


def node_cost(ctx: OpContext) -> Cost:
    """MACs and FLOPs of one node; raises UnknownCost with the reason when they cannot be known."""
    rule = cost_rule(ctx.node)
    if rule is None:
        domain = f"{ctx.node.domain}." if ctx.node.domain not in ("", "ai.onnx") else ""
        raise UnknownCost(f"no cost rule for {domain}{ctx.node.op_type}")
    return rule(ctx)
