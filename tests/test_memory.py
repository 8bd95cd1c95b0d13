"""Planner invariants on random DAGs, and hand-computed peaks on small graphs."""

import dataclasses

from hypothesis import given, settings, strategies as st
from onnx import helper

import edgefit
from edgefit.analysis.memory import Step, lifetimes, live_bytes_peak, lower_bound, memory_aware_order, plan_arena
from helpers import model


@st.composite
def random_dags(draw):
    """Steps over tensors t0..tn: node i writes t{i+1} and reads 1-3 earlier tensors."""
    count = draw(st.integers(min_value=1, max_value=25))
    sizes = {"t0": (1, "uint8", draw(st.integers(1, 5000)))}
    steps = []
    for i in range(count):
        earlier = [f"t{j}" for j in range(i + 1)]
        reads = tuple(sorted(set(draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3)))))
        out = f"t{i + 1}"
        sizes[out] = (1, "uint8", draw(st.integers(1, 5000)))
        steps.append(Step(f"n{i}", reads, (out,)))
    outputs = [f"t{count}"] + draw(st.lists(st.sampled_from(sorted(sizes)), max_size=2))
    return steps, sizes, outputs


def assert_valid_plan(buffers, plan, alignment):
    for a in buffers:
        assert plan.offsets[a.name] % alignment == 0
        assert plan.offsets[a.name] + a.bytes <= plan.size
        for b in buffers:
            if a is b or a.last < b.first or b.last < a.first:
                continue
            a_start, b_start = plan.offsets[a.name], plan.offsets[b.name]
            assert a_start + a.bytes <= b_start or b_start + b.bytes <= a_start, (a, b)


@settings(max_examples=150, deadline=None)
@given(random_dags(), st.sampled_from([1, 16, 64]))
def test_arena_plans_never_overlap_live_buffers(dag, alignment):
    steps, sizes, outputs = dag
    for order in (list(range(len(steps))), memory_aware_order(steps, sizes, outputs)):
        buffers = lifetimes(steps, order, sizes, ["t0"], outputs)
        plan = plan_arena(buffers, alignment)
        assert_valid_plan(buffers, plan, alignment)
        bound = lower_bound(steps, sizes)
        assert bound <= live_bytes_peak(buffers) <= plan.size
        assert plan.size <= sum(-(-b.bytes // alignment) * alignment for b in buffers)
        # The reported peak step is the one holding the most (aligned) live bytes.
        aligned = {b.name: -(-b.bytes // alignment) * alignment for b in buffers}
        assert sum(aligned[n] for n in plan.live_at_peak) == live_bytes_peak(
            [dataclasses.replace(b, bytes=aligned[b.name]) for b in buffers])


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_memory_aware_order_is_topological(dag):
    steps, sizes, outputs = dag
    order = memory_aware_order(steps, sizes, outputs)
    assert sorted(order) == list(range(len(steps)))
    produced = {"t0"}
    for i in order:
        assert set(steps[i].reads) <= produced
        produced.update(steps[i].writes)


def test_chain_peak_is_input_plus_output_of_biggest_node():
    # x 1x4x8x8 (1 KiB) -> Relu (1 KiB) -> MaxPool (256 B) -> Relu (256 B): peak = 1024 + 1024.
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("MaxPool", ["a"], ["b"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["b"], ["y"])]
    fp = edgefit.analyze(model(nodes, [("x", [1, 4, 8, 8])], [("y", None)]))
    assert fp.peak_activation_bytes == fp.activation_lower_bound_bytes == 2048
    assert fp.peak_node == "Relu_0"
    assert {t.name for t in fp.live_at_peak} == {"x", "a"}


def test_best_order_beats_file_order_on_branches():
    # Two branches from x (4 B): branch A makes a 4000 B tensor reduced to 4 B; branch B likewise.
    # File order runs both expansions first (both 4000 B tensors live at once); the memory-aware order
    # finishes one branch before starting the other.
    def expand(tag):
        return [helper.make_node("Tile", ["x", "reps"], [f"big{tag}"]),
                helper.make_node("ReduceSum", [f"big{tag}"], [f"small{tag}"], keepdims=1)]
    nodes = [expand("A")[0], expand("B")[0], expand("A")[1], expand("B")[1],
             helper.make_node("Add", ["smallA", "smallB"], ["y"])]
    reps = helper.make_tensor("reps", 7, [1], [1000])
    fp = edgefit.analyze(model(nodes, [("x", [1])], [("y", None)], [reps]))
    # File order: at ReduceSum(A) bigA, bigB and smallA are live (x was last read by Tile B, the step before):
    # 4000 + 4000 + 4 bytes, 16-aligned.
    assert fp.file_order_peak_bytes == 4000 + 4000 + 16
    # Best order: x, bigA, smallA live while reducing A (bigB not yet made).
    assert fp.peak_activation_bytes == 16 + 4000 + 16
    assert fp.activation_lower_bound_bytes == 4 + 4000   # Tile: x + bigA


def test_independent_chains_are_interleaved_without_any_shared_tensor():
    # Two chains from two inputs, no tensor read twice: x1 -> Tile -> bigA (4000 B) -> ReduceSum -> a, likewise
    # x2 -> bigB -> b, then y = a + b. File order makes both big tensors first; finishing one chain first needs
    # only one of them at a time. (No fan-out does not mean only one order.)
    reps = helper.make_tensor("reps", 7, [1], [1000])
    nodes = [helper.make_node("Tile", ["x1", "reps"], ["bigA"]), helper.make_node("Tile", ["x2", "reps"], ["bigB"]),
             helper.make_node("ReduceSum", ["bigA"], ["a"], keepdims=1),
             helper.make_node("ReduceSum", ["bigB"], ["b"], keepdims=1), helper.make_node("Add", ["a", "b"], ["y"])]
    fp = edgefit.analyze(model(nodes, [("x1", [1]), ("x2", [1])], [("y", None)], [reps]))
    # File order, at ReduceSum(A): bigA, bigB and a live (x1, x2 already read): 4000 + 4000 + 16.
    assert fp.file_order_peak_bytes == 4000 + 4000 + 16
    # Best order: x2 (not yet read), bigA and a live while reducing A.
    assert fp.peak_activation_bytes == 16 + 4000 + 16


def test_memory_aware_order_considers_every_ready_node_on_wide_graphs():
    # 100 branches: r_i = Relu(x) (32 B), s_i = Tile(r_i) (2048 B), t_i = ReduceSum(s_i) (4 B, 16 aligned), then
    # one Concat. Least growth first runs every Relu (+32 B each; the last frees x), then each Tile directly
    # followed by its ReduceSum (which frees the 2048 B). Peak, at the first Tile: all r_i + s_0 = 3200 + 2048.
    # File order holds all 100 tiles at once.
    n = 100
    nodes = ([helper.make_node("Relu", ["x"], [f"r{i}"]) for i in range(n)]
             + [helper.make_node("Tile", [f"r{i}", "reps"], [f"s{i}"]) for i in range(n)]
             + [helper.make_node("ReduceSum", [f"s{i}"], [f"t{i}"], keepdims=1) for i in range(n)]
             + [helper.make_node("Concat", [f"t{i}" for i in range(n)], ["y"], axis=1)])
    reps = helper.make_tensor("reps", 7, [2], [1, 64])
    fp = edgefit.analyze(model(nodes, [("x", [1, 8])], [("y", None)], [reps]))
    assert fp.peak_activation_bytes == 32 * n + 2048
    assert fp.file_order_peak_bytes > n * 2048


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 64)), min_size=1, max_size=150))
def test_wide_graph_placement_matches_the_step_index_placement(spans):
    # Long-lived buffers take the numpy placement; it must give the very offsets of the step-indexed one.
    from edgefit.analysis.memory import _offsets_by_overlap, _offsets_by_step

    first = [min(a, b) for a, b, _ in spans]
    last = [max(a, b) for a, b, _ in spans]
    aligned = [16 * size for *_, size in spans]
    order = sorted(range(len(spans)), key=lambda i: (-aligned[i], first[i], i))
    assert _offsets_by_overlap(order, aligned, first, last) == _offsets_by_step(order, aligned, first, last,
                                                                                max(last) + 1)


def test_a_chain_has_one_order_and_both_peaks_agree():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]
    fp = edgefit.analyze(model(nodes, [("x", [1, 100])], [("y", None)]))
    assert fp.peak_activation_bytes == fp.file_order_peak_bytes == 800


def test_precision_replanning_quarters_float_activations():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    fp = edgefit.analyze(model(nodes, [("x", [1, 256])], [("y", None)]))
    assert fp.peak_activation_bytes == 2048
    assert fp.activation_bytes_at("int8") == 512
    assert fp.activation_bytes_at("fp16") == 1024


def test_shared_storage_aliases_views_and_runs_elementwise_in_place():
    # x [1,64] -> MatMul (64x256) -> a [1,256] -> Relu -> b -> Reshape [1,256] -> c -> MatMul (256x64) -> y [1,64].
    # Own buffers (TFLite Micro): Relu holds a and b, Reshape holds b and c: 1024 + 1024 = 2048 B.
    # Shared storage: b takes a's buffer (a dies at the Relu), c is a view of b: the largest steps are the
    # MatMuls, 256 + 1024 = 1280 B.
    from helpers import weight

    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Reshape", ["b", "shape"], ["c"]), helper.make_node("MatMul", ["c", "w2"], ["y"])]
    shape = helper.make_tensor("shape", 7, [2], [1, 256])
    fp = edgefit.analyze(model(nodes, [("x", [1, 64])], [("y", None)], [weight("w1", 64, 256), weight("w2", 256, 64),
                                                                          shape]))
    assert fp.peak_activation_bytes == 2048
    assert fp.shared_storage_peak_bytes == 1280
    assert fp.activation_bytes_at("int8", shared_storage=True) == 320
    assert fp.activation_bytes_at(None, shared_storage=True) == 1280


def test_shared_storage_never_overwrites_graph_inputs_or_outputs():
    # Relu(x) -> y: x is the caller's input and y the caller's output, so both keep their own buffers.
    fp = edgefit.analyze(model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 256])], [("y", None)]))
    assert fp.shared_storage_peak_bytes == fp.peak_activation_bytes == 2048


def test_shared_storage_never_needs_more_than_own_buffers():
    # x [64] (256 B): t1 = Tile(x, 4) and t5 = Tile(t4, 4) are 1 KiB; t2 = x + x, t4 and t7 are views of t2, t8 =
    # Relu(t7) (256 B each). Merging t2/t4/t7 into one long-lived buffer makes the greedy placement fragment
    # (1536 B); without sharing the plan reaches the lower bound, 1280 B, and a sharing runtime can do that too.
    from onnx import numpy_helper
    import numpy as np

    shapes = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("flat", -1), ("r1", 4), ("r5", 4))]
    nodes = [helper.make_node("Tile", ["x", "r1"], ["t1"]), helper.make_node("Add", ["x", "x"], ["t2"]),
             helper.make_node("Reshape", ["t2", "flat"], ["t4"]), helper.make_node("Tile", ["t4", "r5"], ["t5"]),
             helper.make_node("Reshape", ["t4", "flat"], ["t7"]), helper.make_node("Relu", ["t7"], ["t8"])]
    fp = edgefit.analyze(model(nodes, [("x", [64])], [("t8", [64])], shapes))
    assert fp.peak_activation_bytes == fp.activation_lower_bound_bytes == 1280
    assert fp.shared_storage_peak_bytes == 1280


def test_replanned_arenas_are_cached_per_precision():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    fp = edgefit.analyze(model(nodes, [("x", [1, 256])], [("y", None)]))
    first = fp.activation_bytes_at("int8")
    assert fp._arena_cache == {("int8", False): first}
    assert fp.activation_bytes_at("int8") == first == 512
    assert "_arena_cache" not in fp.to_dict()


@st.composite
def random_onnx_dags(draw):
    """ONNX graphs over [1, C] tensors: each node reads earlier tensors (elementwise ops, or a MatMul with its own
    C x C weight), so every count can be predicted while the wiring stays random."""
    from helpers import weight

    width = draw(st.sampled_from([4, 16, 40]))
    count = draw(st.integers(min_value=1, max_value=14))
    tensors, nodes, weights, matmuls = ["x"], [], [], 0
    for i in range(count):
        op = draw(st.sampled_from(["Add", "Mul", "Relu", "Sigmoid", "MatMul"]))
        first = draw(st.sampled_from(tensors))
        if op in ("Add", "Mul"):
            inputs = [first, draw(st.sampled_from(tensors))]
        elif op == "MatMul":
            weights.append(weight(f"w{i}", width, width, seed=i))
            inputs = [first, f"w{i}"]
            matmuls += 1
        else:
            inputs = [first]
        nodes.append(helper.make_node(op, inputs, [f"t{i}"]))
        tensors.append(f"t{i}")
    outputs = sorted({f"t{count - 1}", draw(st.sampled_from(tensors[1:]))})
    return model(nodes, [("x", [1, width])], [(o, None) for o in outputs], weights), width, count, matmuls


@settings(max_examples=60, deadline=None)
@given(random_onnx_dags())
def test_analyze_invariants_on_random_onnx_graphs(case):
    m, width, count, matmuls = case
    fp = edgefit.analyze(m)
    tensor_bytes = 4 * width
    aligned = -(-tensor_bytes // 16) * 16
    assert fp.unknowns == ()
    assert fp.params == matmuls * width * width
    assert fp.macs == matmuls * width * width
    assert len(fp.layers) == count
    assert fp.activation_lower_bound_bytes <= fp.peak_activation_bytes <= fp.file_order_peak_bytes
    assert fp.peak_activation_bytes <= (count + 1) * aligned     # every tensor in its own slot
    # Sharing storage merges buffers, so at no step can it hold more live bytes than own buffers do.
    assert live_bytes_peak(fp.shared_buffers) <= live_bytes_peak(fp.buffers)
