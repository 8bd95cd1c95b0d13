"""A seeded generator of hostile edgefit runs: mutated models (bytes and protobuf fields), options, data files,
device profiles, gate configs and paths. Case k of seed s is always the same run.

A case is a list of files to create in its input folder and the command line to run; the harness
(tests/fuzz/harness.py) runs it and checks edgefit's contracts.
"""

from __future__ import annotations

import copy
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
MODEL_COMMANDS = ("analyze", "check", "fuse", "prune", "quantize", "optimize", "report", "fit")
PASS_COMMANDS = ("fuse", "prune", "quantize", "optimize")

# Special file kinds the harness creates instead of writing bytes.
FIFO, DEV_ZERO, LOOP, DIRECTORY = "<fifo>", "<dev-zero>", "<symlink-loop>", "<directory>"


@dataclass
class Case:
    number: int
    kind: str                                    # which mutation family made it
    argv: list[str]                              # {in} stands for the input folder, {out} for the output folder
    files: dict[str, bytes | str] = field(default_factory=dict)   # name in the input folder -> bytes or a kind
    output: str | None = None                    # the output path the command should write ({in}/{out} form)
    json: bool = False


def _seed_models() -> dict[str, onnx.ModelProto]:
    """Small real models plus hand-built ones that reach other code paths (symbolic spatial dims, exporter
    metadata, Paddle's -1 batch, a sparse weight, external data, a subgraph)."""
    models = {p.stem: onnx.load(str(p)) for p in sorted(SAMPLES.glob("*.onnx"))}
    f = TensorProto.FLOAT
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    conv = helper.make_node("Conv", ["images", "W"], ["c"], pads=[1, 1, 1, 1], name="conv")
    relu = helper.make_node("Relu", ["c"], ["y"], name="relu")
    yolo = helper.make_model(helper.make_graph(
        [conv, relu], "yolo", [helper.make_tensor_value_info("images", f, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("y", f, None)], [w]), opset_imports=[helper.make_opsetid("", 13)])
    yolo.ir_version = 8
    helper.set_model_props(yolo, {"imgsz": "[16, 16]"})
    models["yolo_like"] = yolo
    paddle = copy.deepcopy(yolo)
    del paddle.metadata_props[:]
    dims = paddle.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[2].dim_value, dims[3].dim_value = -1, 8, 12
    models["paddle_like"] = paddle
    gemm = helper.make_model(helper.make_graph(
        [helper.make_node("Gemm", ["x", "G", "g"], ["z"], transB=1, alpha=1.0, name="gemm"),
         helper.make_node("Softmax", ["z"], ["probs"], axis=1)], "mlp",
        [helper.make_tensor_value_info("x", f, ["N", 6])], [helper.make_tensor_value_info("probs", f, ["N", 5])],
        [numpy_helper.from_array(np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32), "G"),
         numpy_helper.from_array(np.zeros(5, np.float32), "g")]), opset_imports=[helper.make_opsetid("", 13)])
    gemm.ir_version = 8
    models["mlp"] = gemm
    branch = lambda name, op: helper.make_graph([helper.make_node(op, ["x"], [name])], name, [],  # noqa: E731
                                               [helper.make_tensor_value_info(name, f, [2, 3])])
    cond = helper.make_model(helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["y"], then_branch=branch("a", "Relu"), else_branch=branch("b", "Neg"))],
        "cond", [helper.make_tensor_value_info("x", f, [2, 3])], [helper.make_tensor_value_info("y", f, [2, 3])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]), opset_imports=[helper.make_opsetid("", 13)])
    cond.ir_version = 8
    models["if_model"] = cond
    return models


_MODELS: dict[str, onnx.ModelProto] | None = None


def seed_models() -> dict[str, onnx.ModelProto]:
    global _MODELS
    if _MODELS is None:
        _MODELS = _seed_models()
    return _MODELS


# Values a hostile user types where a number is expected.
_NUMBERS = ["0", "1", "-1", "3", "2", "10", "1000000", "4611686018427387904", "99999999999999999999999",
            "1e3", "1.5", "nan", "inf", "²", "١", "٣", " 4", "", "0x10", "1_000", "\n", "NaN", "-0"]
_SIZES = ["512KB", "520 KiB", "0", "-1KB", "1e999KB", "nan", "4MB", "1.5GiB", "x", "1 ZB", "²KB", "0.000001B",
          "18446744073709551616"]
_DURATIONS = ["20ms", "0", "-5ms", "1e999s", "nan", "2min", "fast", "1µs", "9" * 400]
_POWERS = ["50mW", "0W", "-1W", "inf", "1e-300W", "nan", "x"]
_TARGETS = ["esp32", "esp32-s3", "arduino-uno", "dgx-a100", "nosuch", "", "ESP32", "esp 32", "../esp32",
            "tpu-v4-pod", "iphone-15-pro"]


def _text_value(rng: random.Random, pool: list[str]) -> str:
    value = rng.choice(pool)
    if rng.random() < 0.1:
        value = value + rng.choice(["\n", "\t", "é", "x", "=", ",", "\u202e"])
    return value


def _inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    weights = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def _shape_spec(rng: random.Random, model: onnx.ModelProto) -> str:
    """Half the time the model's own shape with small sizes for its free axes, else something hostile."""
    inputs = _inputs(model)
    if inputs and rng.random() < 0.5:
        value = rng.choice(inputs)
        sizes = [d.dim_value if d.dim_value > 0 else rng.choice([1, 2, 8, 16]) for d in
                 value.type.tensor_type.shape.dim]
        return f"{value.name}={'x'.join(map(str, sizes))}" if sizes else f"{value.name}=1"
    name = rng.choice([i.name for i in inputs] + ["", "nosuch"]) if inputs else ""
    rank = rng.choice([1, 2, 3, 4, 4, 4, 5])
    dims = "x".join(rng.choice(_NUMBERS[:12] + ["8", "16", "32", "²", "١", "0"]) for _ in range(rank))
    return f"{name}={dims}" if name and rng.random() < 0.8 else dims


def _dim_spec(rng: random.Random, model: onnx.ModelProto) -> str:
    params = sorted({d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim
                     if d.dim_param}) or ["batch"]
    if rng.random() < 0.5:
        return f"{rng.choice(params)}={rng.choice([1, 2, 4, 16, 1000])}"
    return f"{rng.choice(params + ['N', 'nosuch', ''])}={_text_value(rng, _NUMBERS)}"


# ---- model mutations ------------------------------------------------------------------------------------

def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        if not data:
            break
        if choice < 0.4:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.6:
            del data[rng.randrange(len(data)):]
        elif choice < 0.8:
            at = rng.randrange(len(data))
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            start = rng.randrange(len(data))
            data[start:start] = data[start:start + rng.randint(1, 64)]
    return bytes(data)


def _all_dims(model: onnx.ModelProto):
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.type.HasField("tensor_type"):
            yield from value.type.tensor_type.shape.dim


_HUGE = [0, -1, -7, 2**31, 2**40, 2**62, 2**63 - 1, 10**6]


def _mutate_proto(rng: random.Random, model: onnx.ModelProto, folder: dict[str, bytes | str]) -> str:
    """Change one to three fields in `model` (a private copy); may add files next to it. Returns a label."""
    labels = []
    for _ in range(rng.choices([1, 2, 3], weights=[6, 3, 1])[0]):
        graph = model.graph
        kind = rng.choice(["dim", "elem_type", "data_type", "raw_data", "cut", "drop_node", "attr_nan", "opset",
                           "ir", "sparse_input", "external", "metadata", "rename", "dup_output", "expand_rank",
                           "dim_param", "initializer_dims", "drop_output", "empty_graph", "functions"])
        labels.append(kind)
        dims = list(_all_dims(model))
        if kind == "dim" and dims:
            rng.choice(dims).dim_value = rng.choice(_HUGE)
        elif kind == "dim_param" and dims:
            rng.choice(dims).dim_param = rng.choice(["height", "width", "batch", "seq", "a + 1", "2 * b", "(" * 300,
                                                     "s0", "unk__3", "", "x\ny"])
        elif kind == "elem_type" and graph.input:
            value = rng.choice(list(graph.input) + list(graph.output))
            value.type.tensor_type.elem_type = rng.choice([0, 8, 13, 16, 17, 23, 99, 2**31 - 1])
        elif kind == "data_type" and graph.initializer:
            rng.choice(graph.initializer).data_type = rng.choice([0, 2, 8, 999, 16, 7])
        elif kind == "raw_data" and graph.initializer:
            tensor = rng.choice(graph.initializer)
            if tensor.HasField("raw_data"):
                raw = tensor.raw_data
                tensor.raw_data = raw[:rng.randrange(len(raw) + 1)] if rng.random() < 0.7 else raw + b"\0" * 3
        elif kind == "initializer_dims" and graph.initializer:
            tensor = rng.choice(graph.initializer)
            if tensor.dims:
                tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice(_HUGE)
        elif kind == "cut" and graph.node:
            keep = rng.randint(1, len(graph.node))
            last = graph.node[keep - 1]
            del graph.node[keep:]
            del graph.output[:]
            graph.output.append(helper.make_tensor_value_info(last.output[0], TensorProto.FLOAT, None))
        elif kind == "drop_node" and graph.node:
            del graph.node[rng.randrange(len(graph.node))]
        elif kind == "drop_output" and graph.output:
            del graph.output[rng.randrange(len(graph.output))]
        elif kind == "attr_nan" and graph.node:
            node = rng.choice(graph.node)
            floats = [a for a in node.attribute if a.type == onnx.AttributeProto.FLOAT]
            ints = [a for a in node.attribute if a.type == onnx.AttributeProto.INT]
            if floats:
                rng.choice(floats).f = rng.choice([float("nan"), float("inf"), -1e38, 0.0])
            elif ints:
                rng.choice(ints).i = rng.choice([-1, 0, 2**62, -(2**62)])
            else:
                node.attribute.append(helper.make_attribute("alpha", float("nan")))
        elif kind == "opset" and model.opset_import:
            model.opset_import[0].version = rng.choice([1, 7, 9, 11, 25, 10**6])
        elif kind == "ir":
            model.ir_version = rng.choice([1, 3, 4, 11, 99])
        elif kind == "sparse_input" and graph.initializer:
            tensor = rng.choice(graph.initializer)
            try:   # an earlier mutation may have broken the tensor: then there is nothing to sparsify
                array = (numpy_helper.to_array(tensor).reshape(-1) if tensor.data_type == TensorProto.FLOAT
                         and tensor.data_location != TensorProto.EXTERNAL else None)
            except Exception:  # noqa: BLE001
                array = None
            if array is not None and array.size:
                nonzero = np.flatnonzero(array)[:8]
                values = numpy_helper.from_array(array[nonzero].astype(np.float32), tensor.name)
                indices = numpy_helper.from_array(nonzero.astype(np.int64), tensor.name + "_idx")
                graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(tensor.dims)))
                graph.initializer.remove(tensor)
                graph.input.append(helper.make_tensor_value_info(tensor.name, TensorProto.FLOAT, list(tensor.dims)))
        elif kind == "external" and graph.initializer:
            tensor = rng.choice(graph.initializer)
            raw = tensor.raw_data if tensor.HasField("raw_data") else b""
            name = rng.choice(["w.bin", "w.bin", "../w.bin", "/etc/passwd", "w\0.bin", "", "sub/../w.bin",
                               "loop.bin", "fifo.bin"])
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            length = rng.choice([len(raw), len(raw), -1, 2**62, 0, len(raw) + 1])
            offset = rng.choice([0, 0, -5, 2**40, 3])
            for key, value in (("location", name), ("offset", str(offset)), ("length", str(length))):
                tensor.external_data.add(key=key, value=value)
            if name == "loop.bin":
                folder["loop.bin"] = LOOP
            elif name == "fifo.bin":
                folder["fifo.bin"] = FIFO
            elif "\0" not in name and name and not name.startswith(("/", "..")):
                folder["w.bin"] = raw[:rng.choice([len(raw), len(raw) // 2])]
        elif kind == "metadata":
            helper.set_model_props(model, {rng.choice(["imgsz", "image_size", "img_size", "input_size"]):
                                           rng.choice(["[320, 320]", "0", "[-1, 5]", "[2**62, 1]", "640", "[" * 200,
                                                       "[1, 2, 3, 4]", "1e9", "'a'", str(2**62)])})
        elif kind == "rename" and graph.node:
            node = rng.choice(graph.node)
            if node.input:
                node.input[rng.randrange(len(node.input))] = rng.choice(["", "nosuch", node.output[0]])
        elif kind == "dup_output" and len(graph.node) > 1:
            graph.node[-1].output[0] = graph.node[0].output[0]
        elif kind == "expand_rank":
            graph.node.append(helper.make_node("Expand", [graph.input[0].name if graph.input else "x", "shape_in"],
                                               ["expanded"]))
            graph.input.append(helper.make_tensor_value_info("shape_in", TensorProto.INT64,
                                                             [rng.choice([2**62, 2**40, 5000, 4])]))
            graph.output.append(helper.make_tensor_value_info("expanded", TensorProto.FLOAT, None))
            model.opset_import[0].version = 9
        elif kind == "empty_graph":
            del graph.node[:]
        elif kind == "functions":
            model.functions.append(onnx.FunctionProto(name="f", domain="custom", node=list(graph.node[:1])))
    return "+".join(labels)


# ---- data files, profiles, configs ----------------------------------------------------------------------

def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _data_file(rng: random.Random, model: onnx.ModelProto) -> tuple[str, bytes]:
    inputs = _inputs(model)
    value = inputs[0] if inputs else None
    shape = [d.dim_value if d.dim_value > 0 else rng.choice([1, 2, 8]) for d in
             value.type.tensor_type.shape.dim] if value is not None else [1]
    kind = rng.choice(["good", "good", "nan", "wrong_shape", "npy_as_npz", "truncated", "huge_header", "object",
                       "labels", "int", "empty", "wrong_name", "scalar"])
    name = value.name if value is not None else "x"
    rows = rng.choice([1, 3, 8])
    array = np.random.default_rng(rng.randrange(2**31)).standard_normal([rows, *shape[1:]] if shape else [rows])
    array = array.astype(np.float32)
    if kind == "nan":
        array[...] = np.nan
    elif kind == "wrong_shape":
        array = array.reshape(-1)[:5] if array.size >= 5 else array
    elif kind == "int":
        array = (array * 1000).astype(np.int64)
    elif kind == "empty":
        array = array[:0]
    elif kind == "scalar":
        array = np.float32(3.0)
    if kind == "npy_as_npz":
        buffer = io.BytesIO()
        np.save(buffer, array)
        return "calib.npz", buffer.getvalue()
    if kind == "huge_header":
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (2**40, *array.shape[1:])})
        buffer.write(b"\0" * 64)
        inner = buffer.getvalue()
        zipped = io.BytesIO()
        import zipfile
        with zipfile.ZipFile(zipped, "w") as archive:
            archive.writestr(f"{name}.npy", inner)
        return "calib.npz", zipped.getvalue()
    if kind == "object":
        buffer = io.BytesIO()
        np.save(buffer, np.array([1, None], dtype=object), allow_pickle=True)
        import zipfile
        zipped = io.BytesIO()
        with zipfile.ZipFile(zipped, "w") as archive:
            archive.writestr(f"{name}.npy", buffer.getvalue())
        return "calib.npz", zipped.getvalue()
    arrays = {("nosuch" if kind == "wrong_name" else name): array}
    if kind == "labels":
        arrays["labels"] = np.arange(rows) % 3
    data = _npz(arrays)
    if kind == "truncated":
        data = data[:rng.randrange(len(data))]
    return "calib.npz", data


def _profile_toml(rng: random.Random) -> str:
    from edgefit.devices.profiles import BUILTIN_PROFILES_DIR

    base = (BUILTIN_PROFILES_DIR / "esp32.toml").read_text()
    kind = rng.choice(["deep", "bad_value", "missing", "garbage", "huge_number", "dup_name", "bom", "binary"])
    if kind == "deep":
        depth = rng.choice([100, 1000, 5000])
        return "a = " + "[" * depth + "]" * depth
    if kind == "bad_value":
        key = rng.choice(["ram", "flash", "active_power", "efficiency", "peak_gmacs", "tier", "precisions"])
        return "\n".join(f'{key} = "{rng.choice(_SIZES + _POWERS)}"' if line.startswith(key + " ") else line
                         for line in base.splitlines()).replace('name = "esp32"', 'name = "fuzzed"')
    if kind == "missing":
        return "\n".join(line for line in base.splitlines() if not line.startswith("ram "))
    if kind == "huge_number":
        return base.replace("efficiency = 0.085", f"efficiency = {'9' * 5000}").replace('name = "esp32"',
                                                                                         'name = "fuzzed"')
    if kind == "dup_name":
        return base
    if kind == "bom":
        return "\ufeff" + base.replace('name = "esp32"', 'name = "fuzzed"')
    if kind == "binary":
        return "\x00\xff\xfe garbage"
    return "this is [not toml"


def _gate_toml(rng: random.Random, model_name: str) -> str:
    lines = ["[[gate]]", f'name = "{rng.choice(["g", "é", "", "x" * 500])}"',
             f'model = "{rng.choice([model_name, model_name, "nosuch.onnx", "../" + model_name, ""])}"',
             f'target = "{rng.choice(_TARGETS)}"']
    for key, pool in (("max_ram", _SIZES), ("max_latency", _DURATIONS), ("max_power", _POWERS),
                      ("rate", ["1", "0", "-1", "1e400", "nan"]), ("precision", ['"int8"', '"fp64"', "3"]),
                      ("max_growth", ['"5%"', '"-5%"', '"1e400%"', "0.1", '"x"'])):
        if rng.random() < 0.3:
            value = rng.choice(pool)
            literal = key in ("rate", "precision", "max_growth") and value[:1] in '"-0123456789n'
            lines.append(f"{key} = {value if literal else json.dumps(value)}")
    if rng.random() < 0.3:
        lines.append(rng.choice(['input_shape = { x = [1, 0, 3] }', 'input_shape = { input = "1x1x8x8" }',
                                 'dim = { batch = -3 }', 'dim = { batch = 4611686018427387905 }',
                                 'input_shape = { input = [1, 1, 99999999999, 8] }', 'dim = "x"',
                                 'assume_dims = 1', 'assume_dims = 0', 'assume_dims = "²"']))
    if rng.random() < 0.4:
        lines.append('baseline = "base.json"')
    if rng.random() < 0.1:
        lines.append("[" * 3000)
    return "\n".join(lines) + "\n"


def _baseline_json(rng: random.Random) -> str:
    return rng.choice([json.dumps({"weight_bytes": 10**400, "peak_activation_bytes": 5}),
                       json.dumps({"weight_bytes": 100, "peak_activation_bytes": 2**63}),
                       json.dumps({"weight_bytes": -1, "peak_activation_bytes": 1}),
                       "[" * 100000, "{", json.dumps({"weight_bytes": 1.5e308, "peak_activation_bytes": 1}),
                       json.dumps({"weight_bytes": 1000, "peak_activation_bytes": 1000}), "1" * 5000])


# ---- cases ----------------------------------------------------------------------------------------------

def make_case(seed: int, number: int, *, commands: tuple[str, ...] | None = None) -> Case:
    """Case `number` of the run seeded `seed`."""
    rng = random.Random(f"{seed}:{number}")
    models = seed_models()
    model_name = rng.choice(sorted(models))
    model = copy.deepcopy(models[model_name])
    files: dict[str, bytes | str] = {}
    family = rng.choices(["plain", "proto", "bytes", "options", "data", "profile", "gate", "path"],
                         weights=[15, 30, 8, 22, 10, 7, 10, 7])[0]
    kind = family
    if family == "proto":
        kind = "proto:" + _mutate_proto(rng, model, files)
    model_bytes = model.SerializeToString()
    if family == "bytes":
        model_bytes = _mutate_bytes(rng, model_bytes)
    files["model.onnx"] = model_bytes
    model_path = "{in}/model.onnx"
    command = rng.choice(commands or MODEL_COMMANDS + ("gate", "profiles"))
    if family == "gate" and (commands is None or "gate" in commands):
        command = "gate"
    if family == "profile" and command not in ("check", "profiles", "gate"):
        command = rng.choice(["check", "profiles"]) if commands is None else command
    argv: list[str] = [command]
    output = None
    want_json = rng.random() < 0.5
    if family == "path":
        trick = rng.choice(["fifo", "dev_zero", "loop", "directory", "newline", "missing", "out_loop", "out_dir",
                            "out_is_input", "out_missing_parent"])
        kind = f"path:{trick}"
        if trick == "fifo":
            files["model.onnx"], model_path = FIFO, "{in}/model.onnx"
        elif trick == "dev_zero":
            files["model.onnx"] = DEV_ZERO
        elif trick == "loop":
            files["model.onnx"] = LOOP
        elif trick == "directory":
            files["model.onnx"] = DIRECTORY
        elif trick == "newline":
            files["mo\ndel.onnx"] = model_bytes
            model_path = "{in}/mo\ndel.onnx"
        elif trick == "missing":
            model_path = "{in}/nosuch\n.onnx"
        elif trick == "out_loop":
            files["out.onnx"] = LOOP
            output = "{in}/out.onnx"
        elif trick == "out_dir":
            output = "{out}"
        elif trick == "out_is_input":
            output = model_path
        elif trick == "out_missing_parent":
            output = "{out}/a/b/c.onnx"
    if command == "profiles":
        argv += [rng.choice(["list", "show", "show", "nosuch"])]
        if argv[-1] == "show":
            argv.append(rng.choice(_TARGETS + ["fuzzed"]))
        if family == "profile":
            files["profiles/p.toml"] = _profile_toml(rng)
            argv += ["--profiles-dir", "{in}/profiles"]
    elif command == "gate":
        files["edgefit.toml"] = _gate_toml(rng, "model.onnx")
        files["base.json"] = _baseline_json(rng)
        if family == "profile":
            files["profiles/p.toml"] = _profile_toml(rng)
            argv += ["--profiles-dir", "{in}/profiles"]
        argv += ["--config", "{in}/edgefit.toml"]
        if rng.random() < 0.5:
            argv += ["--format", rng.choice(["table", "json", "markdown", "junit", "github", "html", "nosuch"])]
    else:
        argv.append(model_path)
        if command == "check":
            if rng.random() < 0.2:
                argv.append("--all")
            else:
                for _ in range(rng.randint(0, 2)):
                    argv += ["-t", rng.choice(_TARGETS)]
            for option, pool in (("--max-ram", _SIZES), ("--max-flash", _SIZES), ("--max-latency", _DURATIONS),
                                 ("--max-power", _POWERS), ("--rate", _NUMBERS),
                                 ("--precision", ["fp32", "int8", "fp64", ""])):
                if rng.random() < 0.15:
                    argv += [option, _text_value(rng, pool)]
            if family == "profile":
                files["profiles/p.toml"] = _profile_toml(rng)
                argv += ["--profiles-dir", "{in}/profiles", "-t", rng.choice(["esp32", "fuzzed"])]
        if command == "fit":
            output = output or "{out}/fit.onnx"
            argv += ["-o", output, "-t", rng.choice(_TARGETS), "--time-budget", "10s"]
        if command == "report":
            output = output or "{out}/report.html"
            argv += ["-o", output] + (["-t", rng.choice(_TARGETS)] if rng.random() < 0.5 else [])
            if rng.random() < 0.2:
                argv += ["--compare", "{in}/model.onnx"]
        if command in PASS_COMMANDS:
            if output is None and rng.random() < 0.7:
                output = "{out}/result.onnx"
            if output is not None:
                argv += ["-o", output]
            if command in ("prune", "optimize") and rng.random() < 0.4:
                argv += ["--sparsity", _text_value(rng, ["0.5", "0", "0.99", "1", "-0.1", "nan", "2"])]
            if command in ("quantize", "optimize") and rng.random() < 0.5:
                argv += ["--mode", rng.choice(["int8", "dynamic", "fp16", "int4", ""])]
            if command == "optimize" and rng.random() < 0.5:
                argv += ["--passes", rng.choice(["fuse,prune:0.5,quantize", "fuse", "quantize:fp16", "prune:x",
                                                 "nosuch", "", ",,,", "prune:0.5:structured,quantize:dynamic"])]
            if command in ("quantize", "optimize") and (family == "data" or rng.random() < 0.1):
                name, data = _data_file(rng, model)
                files[name] = data
                argv += ["--calib", "{in}/" + name]
            elif family == "data" or rng.random() < 0.05:
                name, data = _data_file(rng, model)
                files["eval.npz"] = data
                argv += ["--eval", "{in}/eval.npz"]
            if rng.random() < 0.1:
                argv += ["--samples", _text_value(rng, _NUMBERS)]
            if rng.random() < 0.1:
                argv += ["--target", rng.choice(_TARGETS)]
        if family == "options" or rng.random() < 0.15:
            for _ in range(rng.randint(1, 3)):
                if rng.random() < 0.5:
                    argv += ["--input-shape", _shape_spec(rng, model)]
                else:
                    argv += ["--dim", _dim_spec(rng, model)]
            if command == "analyze" and rng.random() < 0.3:
                argv += ["--alignment", _text_value(rng, _NUMBERS)]
            if command == "analyze" and rng.random() < 0.3:
                argv += ["--top", _text_value(rng, _NUMBERS)]
        if rng.random() < 0.25:
            argv += ["--assume-dims", rng.choice(["1", "1", "2", "0", "8", "x", "²"])]
    if want_json and command not in ("gate", "report"):
        argv.append("--json")
    json_out = "--json" in argv or ("--format" in argv and argv[argv.index("--format") + 1] == "json")
    if command in PASS_COMMANDS and output is None and model_path == "{in}/model.onnx":
        output = None   # the default output next to the input; the harness finds it by its suffix
    return Case(number, kind, argv, files, output, json_out)


def clean_cases() -> list[Case]:
    """Every command on good input, each with and without --json: all must exit 0 or 1 and leave the working
    directory empty."""
    models = seed_models()
    model = models["digits_cnn"].SerializeToString()
    calib = _npz({"input": np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32),
                  "labels": np.arange(4)})
    gate = ('[[gate]]\nname = "g"\nmodel = "model.onnx"\ntarget = "esp32"\nbaseline = "base.json"\n'
            'max_growth = "5%"\n')
    base = json.dumps({"weight_bytes": 10**6, "peak_activation_bytes": 10**6})
    files = {"model.onnx": model, "calib.npz": calib, "edgefit.toml": gate, "base.json": base}
    commands = [["analyze", "{in}/model.onnx"], ["analyze", "{in}/model.onnx", "--per-layer", "--assume-dims", "1"],
                ["check", "{in}/model.onnx", "-t", "esp32"], ["check", "{in}/model.onnx", "--all"],
                ["fuse", "{in}/model.onnx"], ["prune", "{in}/model.onnx", "-o", "{out}/p.onnx", "--structured"],
                ["quantize", "{in}/model.onnx", "--calib", "{in}/calib.npz", "-o", "{out}/q.onnx"],
                ["quantize", "{in}/model.onnx", "--mode", "dynamic", "-o", "{out}/d.onnx"],
                ["quantize", "{in}/model.onnx", "--mode", "fp16", "-o", "{out}/h.onnx", "-t", "esp32-s3"],
                ["optimize", "{in}/model.onnx", "--passes", "fuse,prune:0.5,quantize", "--eval", "{in}/calib.npz",
                 "-o", "{out}/o.onnx"],
                ["quantize", "{in}/model.onnx", "-o", "{out}/s.onnx", "--method", "entropy"],
                ["profiles", "list"], ["profiles", "show", "esp32"],
                ["report", "{in}/model.onnx", "-o", "{out}/r.html", "-t", "esp32"],
                ["fit", "{in}/model.onnx", "-t", "esp32", "--time-budget", "10s", "-o", "{out}/fit.onnx"]]
    cases = []
    for number, argv in enumerate(commands):
        cases.append(Case(number * 2, "clean", argv, dict(files)))
        cases.append(Case(number * 2 + 1, "clean", argv + ["--json"], dict(files), json=True))
    for number, extra in enumerate(([], ["--format", "json"], ["--format", "junit"])):
        cases.append(Case(100 + number, "clean", ["gate", "--config", "{in}/edgefit.toml", *extra], dict(files),
                          json=extra[-1:] == ["json"]))
    return cases
