"""Runtime memory models: the TFLM arena (head planned as TFLM's GreedyMemoryPlanner does on the graph the TFLite
converter emits, tail term by term) on small graphs worked out by hand; the other runtimes' simple models; the
profile key naming the model."""

import dataclasses

import numpy as np
import pytest
from helpers import model, weight
from onnx import helper, numpy_helper
from test_estimate import mcu, two_layer_footprint
from test_profiles import VALID, write_profile

import edgefit
from edgefit.cli import main
from edgefit.devices.estimate import estimate
from edgefit.devices.profiles import list_profiles, load_profile_file
from edgefit.devices.runtime_memory import MEMORY_MODELS, runtime_memory, tflite_graph
from edgefit.errors import ProfileError

# Per-term bytes of TFLM's tail (edgefit/devices/runtime_memory.py), spelled out again so a changed constant shows here.
FIXED, IO_TENSOR, IO_QUANT, EVAL_TENSOR, NODE = 528, 64, 32, 24, 64
OP_DATA = {"CONV_2D": 112, "DEPTHWISE_CONV_2D": 112, "FULLY_CONNECTED": 112, "AVERAGE_POOL_2D": 80, "RESHAPE": 48,
           "SOFTMAX": 96, "ADD": 80}


def small_cnn():
    """Conv 3->8 (+BN +Relu), depthwise 3x3 on 8 channels (+Relu), global average pool, flatten, Gemm 8->4,
    softmax: six TFLite ops once BatchNorm is folded and the Relus fused."""
    bn = [numpy_helper.from_array(np.full(8, v, np.float32), f"bn_{k}") for k, v in
          (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["g"], transB=1),
        helper.make_node("Softmax", ["g"], ["y"]),
    ]
    return model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 4])],
                 [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 8, 1, 3, 3), weight("b2", 8),
                  weight("w3", 4, 8), weight("b3", 4), *bn])


def test_converter_graph_folds_batchnorm_and_fuses_activations():
    graph = tflite_graph(edgefit.analyze(small_cnn()), "fp32")
    assert [op.kind for op in graph.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "RESHAPE",
                                             "FULLY_CONNECTED", "SOFTMAX"]
    assert [op.channels for op in graph.ops if "CONV" in op.kind] == [8, 8]
    # input + 6 outputs + weights and bias of both convs and the Gemm + the reshape's shape tensor
    assert graph.tensors == 1 + 6 + 2 + 2 + 2 + 1


def test_tflm_tail_by_hand_fp32_and_int8():
    fp = edgefit.analyze(small_cnn())
    ops = ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    per_channel = 2 * (2 * 32)   # two convs x (multiplier + shift), 8 channels x 4 B = 32 B each, 16-aligned
    expected = {"fixed": FIXED, "io_tensors": 2 * IO_TENSOR, "eval_tensors": 14 * EVAL_TENSOR,   # 336: 16-aligned
                "nodes": 6 * NODE, "op_data": sum(OP_DATA[k] for k in ops), "per_channel": per_channel}
    fp32 = runtime_memory(fp, "tflm", "fp32", fp.activation_bytes_at("fp32"))
    assert dict(fp32.breakdown) == expected
    assert fp32.tail_bytes == 528 + 128 + 336 + 384 + 560 + 128 == 2064
    int8 = runtime_memory(fp, "tflm", "int8", fp.activation_bytes_at("int8"))
    assert int8.breakdown["io_tensors"] == 2 * (IO_TENSOR + IO_QUANT)   # int8 graph input/output carry a scale
    assert int8.tail_bytes == fp32.tail_bytes + 2 * IO_QUANT


def test_per_channel_arrays_are_16_byte_aligned():
    # 5 channels: 20 B of multipliers and 20 B of shifts, each rounded up to 32
    built = model([helper.make_node("Conv", ["x", "w"], ["y"])], [("x", [1, 2, 4, 4])], [("y", [1, 5, 4, 4])],
                  [weight("w", 5, 2, 1, 1)])
    fp = edgefit.analyze(built)
    assert runtime_memory(fp, "tflm", "fp32", 0).breakdown["per_channel"] == 64


def test_shared_producer_keeps_its_activation_separate():
    # The conv output feeds the Relu and the Add: TFLite cannot fuse the Relu into the conv, so it stays an op.
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Add", ["c", "r"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    built = model(nodes, [("x", [1, 4, 4, 4])], [("y", [1, 4, 4, 4])], [weight("w", 4, 4, 1, 1)])
    graph = tflite_graph(edgefit.analyze(built), "fp32")
    assert [op.kind for op in graph.ops] == ["CONV_2D", "OTHER:Relu", "ADD"]   # the last Relu fused into the Add


def chain():
    """x (3x8x8) -> Conv 8ch -> Relu -> Conv 4ch: fp32 tensors of 768, 2048 (x2 unfused) and 1024 bytes."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1])]
    return model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 4, 8, 8])], [weight("w1", 8, 3, 3, 3), weight("w2", 4, 8, 3, 3)])


def test_tflm_head_is_planned_on_the_fused_graph():
    fp = edgefit.analyze(chain())
    # Unfused, the Conv's and the Relu's 2048-byte outputs are alive together: 4096 bytes.
    assert fp.activation_bytes_at("fp32") == 4096
    # TFLM: c1 (2048, scopes 1-2) at 0; x (768, 0-1) overlaps it: at 2048; y (1024, 2-2) overlaps c1 only: 2048.
    assert runtime_memory(fp, "tflm", "fp32", 0).head_bytes == 2048 + 1024
    assert runtime_memory(fp, "tflm", "int8", 0).head_bytes == 512 + 256


def qdq_conv():
    """A QDQ model as quantizers write it: input Q/DQ, int8 weights through DequantizeLinear, output Q/DQ."""
    scale, zero = numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")
    w = numpy_helper.from_array(np.ones((1, 4, 1, 1), np.int8), "wq")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["y"])]
    return model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 1, 8, 8])], [scale, zero, w])


def test_qdq_pairs_vanish_at_int8():
    fp = edgefit.analyze(qdq_conv())
    graph = tflite_graph(fp, "int8")
    assert [op.kind for op in graph.ops] == ["CONV_2D"]
    assert graph.tensors == 1 + 1 + 2 and graph.outputs == ("c",)
    # One int8 conv: its 256-byte input and 64-byte output alive together.
    assert runtime_memory(fp, "tflm", "int8", 0).head_bytes == 256 + 64
    # The generic plan keeps the Q and DQ tensors: x and xq (256 bytes each at int8) are alive together.
    assert fp.activation_bytes_at("int8") == 512
    # In fp32 the Q/DQ nodes are real ops of the graph.
    assert len(tflite_graph(fp, "fp32").ops) == 5


def test_cmsis_nn_scratch_joins_the_head_at_int8():
    fp = edgefit.analyze(small_cnn())
    plain, cmsis = runtime_memory(fp, "tflm", "int8", 0), runtime_memory(fp, "tflm-cmsis-nn", "int8", 0)
    # Scratch: conv 3x3 over 3 channels, im2col of 2 pixels x 28 (27 padded to 4) x int16 = 112 B at scope 1;
    # depthwise 3x3 on 8 channels, 8 x 9 x int16 = 144 B at scope 2; average pool, 8 x int32 = 32 B at scope 3.
    # int8 tensors: x 192 B alive [0, 1], c1 512 [1, 2], c2 512 [2, 3], then 16-byte ones from scope 3 on.
    # Largest first: c2 at 0, c1 at 512 (overlaps c2), x at 0 (overlaps c1 only): 1024 without scratch. The
    # depthwise scratch is alive with c1 and c2, so it goes above both: 1024 + 144. The conv's fits at 192 (between
    # x and c1), the pool's at 512 (above c2).
    assert plain.head_bytes == 1024 and cmsis.head_bytes == 1024 + 144
    assert cmsis.breakdown["scratch_handles"] == 32            # three 8-byte handles, 16-aligned
    assert cmsis.tail_bytes == plain.tail_bytes + 32
    # fp32 runs the reference kernels: no scratch
    assert runtime_memory(fp, "tflm-cmsis-nn", "fp32", 0).arena_bytes == runtime_memory(fp, "tflm", "fp32", 0).arena_bytes


def test_onnxruntime_arena_grows_in_doubling_regions():
    fp = edgefit.analyze(chain())
    mib = 1 << 20
    assert runtime_memory(fp, "onnxruntime", None, mib).arena_bytes == mib            # the first 1 MiB region
    assert runtime_memory(fp, "onnxruntime", None, mib + 1).arena_bytes == 3 * mib    # 1 + 2 MiB
    assert runtime_memory(fp, "onnxruntime", None, 4 * mib).arena_bytes == 7 * mib    # 1 + 2 + 4 MiB
    assert runtime_memory(fp, "onnxruntime", None, 0).arena_bytes == 0


def test_tflite_adds_64_byte_alignment_per_tensor():
    fp = edgefit.analyze(chain())
    memory = runtime_memory(fp, "tflite", "fp32", 4096)
    assert len(fp.buffers) == 4 and memory.tail_bytes == 4 * (64 - 16)
    for name in ("coreml", "tensorrt", "static"):
        assert runtime_memory(fp, name, "fp32", 4096).arena_bytes == 4096


def test_estimate_ram_is_arena_plus_runtime():
    fp = edgefit.analyze(small_cnn())
    tflm = estimate(fp, mcu(memory_model="tflm"), "int8")
    assert tflm.arena_bytes == tflm.memory.head_bytes + tflm.memory.tail_bytes
    assert tflm.ram_bytes == tflm.arena_bytes + 10_000              # weights stay in flash
    static = estimate(fp, mcu(), "int8")
    assert static.arena_bytes == static.activation_bytes and static.ram_bytes == static.activation_bytes + 10_000
    data = tflm.to_dict()
    assert data["arena_bytes"] == tflm.arena_bytes and data["arena"]["breakdown"]["nodes"] == 6 * NODE


def test_hand_built_footprint_counts_each_layer_as_an_op():
    # No graph view (not built by analyze): the planned head stands, and conv and gemm are one op each.
    memory = runtime_memory(two_layer_footprint(), "tflm", "fp32", 12_000)
    assert memory.head_bytes == 12_000
    assert memory.breakdown["nodes"] == 2 * NODE and memory.breakdown["op_data"] == 2 * 112
    assert memory.breakdown["eval_tensors"] == 176    # x + 2 outputs + weights and bias of each: 7 x 24 = 168


def test_every_builtin_profile_names_a_known_memory_model():
    profiles = list_profiles()
    assert profiles and all(p.memory_model in MEMORY_MODELS for p in profiles)
    tflm = {p.name for p in profiles if p.memory_model.startswith("tflm")}
    # every board whose runtime is TFLM, or offers it as one of its stacks, budgets for TFLM's arena
    assert tflm == {p.name for p in profiles if "TensorFlow Lite Micro" in p.runtime and "no TensorFlow" not in p.runtime}
    assert {p.name for p in profiles if p.memory_model == "tflm-cmsis-nn"} == {
        p.name for p in profiles if p.name in tflm and "CMSIS-NN" in p.runtime}


@pytest.mark.parametrize("line", ['memory_model = "tflm-cmsis"', "memory_model = 3", 'memory_model = ""'])
def test_malformed_memory_model_is_a_profile_error(tmp_path, capsys, line):
    path = write_profile(tmp_path, VALID.replace('runtime = "TFLM"\n', 'runtime = "TFLM"\n' + line + "\n"))
    with pytest.raises(ProfileError, match="field 'memory_model'"):
        load_profile_file(path)
    assert main(["profiles", "list", "--profiles-dir", str(tmp_path)]) == 2
    assert "memory_model" in capsys.readouterr().err


def test_memory_model_in_profile_file(tmp_path):
    profile = load_profile_file(write_profile(tmp_path, VALID.replace('runtime = "TFLM"\n', 'runtime = "TFLM"\nmemory_model = "tflm"\n')))
    assert profile.memory_model == "tflm" and profile.to_dict()["memory_model"] == "tflm"
    assert dataclasses.replace(profile, memory_model="static").memory_model == "static"


def test_check_says_how_big_the_tensor_arena_must_be(tmp_path, capsys):
    path = tmp_path / "cnn.onnx"
    path.write_bytes(small_cnn().SerializeToString())
    tflm = ["-t", "stm32h7", "--runtime", "tflm-cmsis-nn"]
    assert main(["check", str(path), *tflm, "--json"]) in (0, 1)
    import json
    estimates = json.loads(capsys.readouterr().out)["targets"][0]["estimates"]
    assert estimates["arena_bytes"] == estimates["arena"]["head_bytes"] + estimates["arena"]["tail_bytes"]
    main(["check", str(path), *tflm])
    out = " ".join(capsys.readouterr().out.split())
    assert f"set the tensor arena to {estimates['arena_bytes']:,} bytes" in out
    # The board's default stack is STM32Cube.AI: generated C, no tensor arena to configure.
    main(["check", str(path), "-t", "stm32h7"])
    out = " ".join(capsys.readouterr().out.split())
    assert "tensor arena" not in out
    assert "memory model static, operators stm32cube-ai of runtime stm32cube-ai-8.1" in out


# Checked against the real interpreter when the `tflm` extra (tflite-micro) is installed: the same network built
# as a TFLite flatbuffer, allocated by TFLM, and reported by its RecordingMicroAllocator.
_RECORD = """
import sys
from tflite_micro.python.tflite_micro import runtime
runtime.Interpreter.from_file(sys.argv[1], arena_size=1_000_000).print_allocations()
"""


def _tflite_cnn() -> bytes:
    """NHWC twin of onnx_cnn: CONV_2D 3->8 (RELU), DEPTHWISE_CONV_2D 8 (RELU), RESHAPE, FULLY_CONNECTED, SOFTMAX."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tfl

    model, graph = tfl.ModelT(), tfl.SubGraphT()
    model.version, model.buffers, model.operatorCodes, graph.tensors, graph.operators = 3, [tfl.BufferT()], [], [], []

    def tensor(shape, data=None, dtype=tfl.TensorType.FLOAT32):
        t = tfl.TensorT()
        t.shape, t.type, t.name, t.buffer = list(shape), dtype, f"t{len(graph.tensors)}", 0
        if data is not None:
            buffer = tfl.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            model.buffers.append(buffer)
            t.buffer = len(model.buffers) - 1
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    def op(code, inputs, output_shape, options_type=0, options=None):
        opcode = tfl.OperatorCodeT()
        opcode.builtinCode, opcode.deprecatedBuiltinCode, opcode.version = code, code, 1
        model.operatorCodes.append(opcode)
        o = tfl.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = len(model.operatorCodes) - 1, inputs, [tensor(output_shape)]
        o.builtinOptionsType, o.builtinOptions = options_type, options
        graph.operators.append(o)
        return o.outputs[0]

    f32 = np.float32
    x = tensor((1, 8, 8, 3))
    conv = tfl.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH, conv.fusedActivationFunction = tfl.Padding.SAME, 1, 1, 1   # RELU
    c1 = op(tfl.BuiltinOperator.CONV_2D, [x, tensor((8, 3, 3, 3), np.zeros((8, 3, 3, 3), f32)),
                                          tensor((8,), np.zeros(8, f32))], (1, 8, 8, 8),
            tfl.BuiltinOptions.Conv2DOptions, conv)
    dw = tfl.DepthwiseConv2DOptionsT()
    dw.padding, dw.strideW, dw.strideH, dw.depthMultiplier, dw.fusedActivationFunction = tfl.Padding.SAME, 1, 1, 1, 1
    c2 = op(tfl.BuiltinOperator.DEPTHWISE_CONV_2D, [c1, tensor((1, 3, 3, 8), np.zeros((1, 3, 3, 8), f32)),
                                                    tensor((8,), np.zeros(8, f32))], (1, 8, 8, 8),
            tfl.BuiltinOptions.DepthwiseConv2DOptions, dw)
    reshape = tfl.ReshapeOptionsT()
    reshape.newShape = [1, 512]
    flat = op(tfl.BuiltinOperator.RESHAPE, [c2, tensor((2,), np.array([1, 512], np.int32), tfl.TensorType.INT32)],
              (1, 512), tfl.BuiltinOptions.ReshapeOptions, reshape)
    fc = op(tfl.BuiltinOperator.FULLY_CONNECTED, [flat, tensor((4, 512), np.zeros((4, 512), f32)),
                                                  tensor((4,), np.zeros(4, f32))], (1, 4),
            tfl.BuiltinOptions.FullyConnectedOptions, tfl.FullyConnectedOptionsT())
    softmax = tfl.SoftmaxOptionsT()
    softmax.beta = 1.0
    y = op(tfl.BuiltinOperator.SOFTMAX, [fc], (1, 4), tfl.BuiltinOptions.SoftmaxOptions, softmax)
    graph.inputs, graph.outputs, model.subgraphs = [x], [y], [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def onnx_cnn():
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"])]
    return model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 4])],
                 [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 8, 1, 3, 3), weight("b2", 8),
                  weight("w3", 4, 512), weight("b3", 4)])


def test_tflm_arena_against_the_interpreter(tmp_path):
    pytest.importorskip("tflite_micro", reason="the tflm extra (tflite-micro) runs TFLM's interpreter")
    import re
    import subprocess
    import sys

    path = tmp_path / "cnn.tflite"
    path.write_bytes(_tflite_cnn())
    run = subprocess.run([sys.executable, "-c", _RECORD, str(path)], capture_output=True, text=True, timeout=120)
    measured = {k: int(v) for k, v in re.findall(r"Arena allocation (head|tail) (\d+)", run.stdout + run.stderr)}
    assert set(measured) == {"head", "tail"}, run.stderr[-500:]
    fp = edgefit.analyze(onnx_cnn())
    ours = runtime_memory(fp, "tflm", "fp32", fp.activation_bytes_at("fp32"))
    assert ours.head_bytes == measured["head"]                  # the same plan, tensor for tensor
    assert measured["tail"] <= ours.tail_bytes <= 1.10 * measured["tail"]
