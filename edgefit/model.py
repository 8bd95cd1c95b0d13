"""Loading and saving ONNX models safely, resolving tensor shapes, and the graph index.

Loading never reads external weight bytes unless asked: their sizes come from tensor metadata, so a model
with a 27 GB weight file is analysed from its small graph file alone.
"""

from __future__ import annotations

import gc
import heapq
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import GraphProto, ModelProto, NodeProto, TensorProto

from edgefit.analysis.dtypes import dtype_name, tensor_bytes
from edgefit.errors import ModelError
from edgefit.guard import existing_kind, output_path, regular_file, shown

_PROTOBUF_LIMIT = 2**31 - 1
_EXTERNAL_TENSOR_BYTES = 1024   # smaller tensors stay inside a model saved with external data


@dataclass(frozen=True)
class LoadedModel:
    proto: ModelProto
    path: Path | None
    has_external_data: bool
    weights_loaded: bool   # every weight's bytes are in memory (inline, or external data was read)


def subgraph_scope(scope: str, position: int, node: NodeProto, attr_name: str) -> str:
    """The scope key of a node's subgraph, unique in the model and equal in reordered copies of it.

    A node's first output names it uniquely (outputs are single-assignment); its position is the fallback for
    the rare node without outputs, and is stable only while the graph keeps its order.
    """
    anchor = next((o for o in node.output if o), f"#{position}:{node.op_type}")
    return f"{scope}>{anchor}.{attr_name}"


def node_subgraphs(node: NodeProto) -> list[tuple[str, GraphProto]]:
    """(attribute name, graph) of each subgraph a node holds (If branches, Loop/Scan bodies)."""
    found = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            found.append((attr.name, attr.g))
        elif attr.type == onnx.AttributeProto.GRAPHS:
            found.extend((f"{attr.name}[{k}]", sub) for k, sub in enumerate(attr.graphs))
    return found


@contextmanager
def collector_paused():
    """Run a block with Python's cyclic garbage collector paused. Analysis and graph edits make a few small
    objects per node and tensor (hundreds of thousands on a large graph), none in reference cycles; the collector's
    full passes over them grow with the graph, which makes the work superlinear for nothing."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def has_subgraph(node: NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def node_attribute(node: NodeProto, name: str, default: Any = None) -> Any:
    """The value of a node's attribute (strings decoded), or `default` when the node does not set it."""
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def set_attribute(node: NodeProto, name: str, value: Any) -> None:
    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


def default_opset(proto: ModelProto, missing: int = 0) -> int:
    """The opset version of the default (ai.onnx) domain the model imports; `missing` when it imports none."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), missing)


def iter_graphs(graph: GraphProto, scope: str = "", parent: str = "") -> Iterator[tuple[str, str, GraphProto]]:
    """(scope, enclosing scope, graph) for the graph and every subgraph below it."""
    yield scope, parent, graph
    for position, node in enumerate(graph.node):
        for attr_name, sub in node_subgraphs(node):
            yield from iter_graphs(sub, subgraph_scope(scope, position, node, attr_name), scope)


def iter_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Every stored tensor: initializers and Constant-node / attribute tensors, in all subgraphs.

    Graph by graph in the order of iter_graphs; each node's attributes are read once for tensors and subgraphs.
    """
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    subgraphs: list[GraphProto] = []
    for node in graph.node:
        attributes = node.attribute
        if not attributes:   # most nodes: skip setting up the loop
            continue
        for attr in attributes:
            kind = attr.type
            if kind == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif kind == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif kind == onnx.AttributeProto.SPARSE_TENSOR:
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            elif kind == onnx.AttributeProto.GRAPH:
                subgraphs.append(attr.g)
            elif kind == onnx.AttributeProto.GRAPHS:
                subgraphs.extend(attr.graphs)
    for sub in subgraphs:
        yield from iter_tensors(sub)


def initializer_names(graph: GraphProto) -> set[str]:
    """Names of a graph's initializers, dense and sparse (a sparse initializer is named by its values)."""
    return {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}


def external_location(tensor: TensorProto) -> str | None:
    if tensor.data_location != TensorProto.EXTERNAL:
        return None
    return next((entry.value for entry in tensor.external_data if entry.key == "location"), "")


@dataclass
class _DataFile:
    """What a model expects of one external data file: the first tensor stored there, the furthest byte read."""

    first_tensor: str
    end: int = 0
    end_tensor: str = ""


def _external_files(proto: ModelProto, base_dir: Path) -> dict[str, _DataFile]:
    """External data files by location; refuses locations outside the model's folder."""
    root = base_dir.resolve()
    files: dict[str, _DataFile] = {}
    for tensor in iter_tensors(proto.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        if "\0" in location or not location:
            raise ModelError(f"external data of tensor {tensor.name!r} has {'no' if not location else 'a malformed'} "
                             f"location ({shown(location)!r})")
        data_file = files.get(location)
        if data_file is None:   # one data file usually serves every tensor: resolve each location once
            target = Path(os.path.realpath(root / location))   # Path.resolve() raises on a symlink loop
            if Path(location).is_absolute() or not target.is_relative_to(root):
                raise ModelError(f"external data of tensor {tensor.name!r} points outside the model's folder: "
                                 f"{location!r}")
            data_file = files[location] = _DataFile(tensor.name)
        try:
            offset = int(entries.get("offset", 0))
            length = int(entries["length"]) if "length" in entries else tensor_bytes(
                math.prod(tensor.dims), dtype_name(tensor.data_type)) or 0
        except ValueError:
            raise ModelError(f"external data of tensor {tensor.name!r} has a malformed offset or length") from None
        expected = tensor_bytes(math.prod(tensor.dims), dtype_name(tensor.data_type))
        if offset < 0 or length < 0 or expected is not None and length != expected:
            raise ModelError(f"external data of tensor {tensor.name!r} has offset {offset} and length {length}; its "
                             f"type and dims need {expected} bytes")
        if offset + length > data_file.end:
            data_file.end, data_file.end_tensor = offset + length, tensor.name
    return files


def _check_data_file(path: Path, location: str, data_file: _DataFile, model_path: Path) -> None:
    """The file exists and holds every byte the model's metadata points at (a truncated download or a Git LFS
    pointer would otherwise pass the analysis, which never reads it, and fail much later)."""
    if existing_kind(path, "external data file", ModelError) == "missing":
        raise ModelError(f"external data file {location!r} of tensor {data_file.first_tensor!r} is missing next to "
                         f"{shown(model_path)}")
    size = path.stat().st_size
    if size < data_file.end:
        with path.open("rb") as handle:
            pointer = handle.read(len(_LFS_POINTER)) == _LFS_POINTER
        hint = "it is a Git LFS pointer: run `git lfs pull`" if pointer else "truncated?"
        raise ModelError(f"external data file {location!r} has {size:,} bytes but tensor {data_file.end_tensor!r} "
                         f"ends at byte {data_file.end:,} ({hint})")


def external_data_bytes(proto: ModelProto) -> int:
    """Bytes of all externally stored tensors, from their metadata (the files are not touched)."""
    total = 0
    for tensor in iter_tensors(proto.graph):
        if external_location(tensor) is not None:
            elements = 1
            for d in tensor.dims:
                elements *= d
            total += tensor_bytes(elements, dtype_name(tensor.data_type)) or 0
    return total


# The first bytes of a Git LFS pointer file, which a clone without `git lfs pull` has in place of the real file.
_LFS_POINTER = b"version https://git-lfs"


def parse_model_bytes(data: bytes, source: str) -> ModelProto:
    if data.startswith(_LFS_POINTER):
        raise ModelError(f"{source} is a Git LFS pointer, not the model: run `git lfs pull` to fetch it")
    proto = ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as error:  # protobuf raises DecodeError or RuntimeWarning-like errors by version
        raise ModelError(f"{source} is not a valid ONNX protobuf (truncated or corrupt): {error}") from None
    if not proto.HasField("graph") or not proto.opset_import or proto.ir_version <= 0:
        raise ModelError(f"{source} is not an ONNX model (no graph, opset or IR version)")
    return proto


def load_model(path: str | os.PathLike, *, load_weights: bool = False) -> LoadedModel:
    """Read and validate a model file. External weight bytes are read only with load_weights=True."""
    path = regular_file(path, "model file", ModelError)
    try:
        size = path.stat().st_size
        if size >= 2**31:   # protobuf cannot parse a message of 2 GiB or more: do not read it into memory first
            raise ModelError(f"{shown(path)} is {size:,} bytes; an ONNX protobuf holds under 2 GiB (larger models "
                             f"keep their weights in external data files)")
        data = path.read_bytes()
    except OSError as error:
        raise ModelError(f"cannot read {shown(path)}: {error.strerror}") from None
    if not data:
        raise ModelError(f"{shown(path)} is empty")
    proto = parse_model_bytes(data, shown(path))
    del data
    files = _external_files(proto, path.parent)
    has_external = bool(files)
    for location, data_file in files.items():
        _check_data_file(path.parent / location, location, data_file, path)
    if has_external and load_weights:
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except Exception as error:
            raise ModelError(f"cannot read external data of {path}: {error}") from None
    return LoadedModel(proto, path, has_external, weights_loaded=load_weights or not has_external)


def validate(proto: ModelProto, source: str = "model", order: list[int] | None = None,
             light: ModelProto | None = None) -> None:
    """onnx.checker on the graph structure, run on a metadata-only copy (external files were checked at load).

    `order` is a topological order for graphs stored unsorted: onnxruntime accepts those, the checker does not.
    `light` is a metadata_only_copy(proto, order) the caller made already; it is left as it was given.
    """
    check_tensors(proto, source)
    if light is None:
        light = metadata_only_copy(proto, order)
    # The IR makes a tensor type's shape optional (rank unknown) and onnxruntime accepts such outputs, but the
    # checker demands the field on graph inputs and outputs; give it an empty one while checking.
    # The copy lists the model's own inputs first, then the stubs for weights, which always have a shape.
    declared = list(light.graph.input[:len(proto.graph.input)]) + list(light.graph.output)
    shapeless = [value.type.tensor_type for value in declared
                 if value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape")]
    for tensor_type in shapeless:
        tensor_type.shape.SetInParent()
    try:
        onnx.checker.check_model(light)
    except onnx.checker.ValidationError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ModelError(f"{source} is not a valid ONNX graph: {first_line}") from None
    except Exception as error:
        raise ModelError(f"{source} could not be checked: {str(error).strip().splitlines()[0]}") from None
    finally:
        for tensor_type in shapeless:
            tensor_type.ClearField("shape")


# Element types a tensor may hold: every TensorProto.DataType but UNDEFINED.
_ELEMENT_TYPES = frozenset(TensorProto.DataType.values()) - {TensorProto.UNDEFINED}
# Typed value fields per element type, with the stored values per element (complex numbers take two).
_TYPED_FIELDS = {TensorProto.FLOAT: ("float_data", 1), TensorProto.COMPLEX64: ("float_data", 2),
                 TensorProto.DOUBLE: ("double_data", 1), TensorProto.COMPLEX128: ("double_data", 2),
                 TensorProto.INT64: ("int64_data", 1), TensorProto.UINT32: ("uint64_data", 1),
                 TensorProto.UINT64: ("uint64_data", 1), TensorProto.STRING: ("string_data", 1)}
# Element counts beyond this overflow int64 arithmetic in onnx, numpy and onnxruntime.
_MAX_ELEMENTS = 2**62


def check_tensors(proto: ModelProto, source: str = "model") -> None:
    """Every stored tensor has a real element type and exactly the bytes its dims need, and every graph input
    and output a real element type: what a pass or onnxruntime would reject, analyze and check reject too.
    External data offsets and lengths are checked where the files are (load_model)."""
    for tensor in iter_tensors(proto.graph):
        name = tensor.name or "(unnamed)"
        if tensor.data_type not in _ELEMENT_TYPES:
            raise ModelError(f"{source}: tensor {name!r} has element type {tensor.data_type}, which ONNX does not "
                             f"define")
        if any(d < 0 for d in tensor.dims) or math.prod(tensor.dims) > _MAX_ELEMENTS:
            raise ModelError(f"{source}: tensor {name!r} has dims {list(tensor.dims)}, which no tensor can have")
        if tensor.data_location == TensorProto.EXTERNAL:
            continue
        elements = math.prod(tensor.dims)
        if tensor.HasField("raw_data"):
            expected = tensor_bytes(elements, dtype_name(tensor.data_type))
            stored = len(tensor.raw_data)
            unit = "bytes"
        else:
            field_name, per_element = _TYPED_FIELDS.get(tensor.data_type, ("int32_data", 1))
            stored, unit = len(getattr(tensor, field_name)), "values"
            expected = elements * per_element
            if tensor.data_type in (TensorProto.INT4, TensorProto.UINT4) or dtype_name(tensor.data_type) in (
                    "float4e2m1", "int2", "uint2"):
                expected = tensor_bytes(elements, dtype_name(tensor.data_type))   # packed into int32_data
        if expected is not None and stored != expected:
            raise ModelError(f"{source}: tensor {name!r} holds {stored} {unit} of data, its dims "
                             f"{list(tensor.dims)} need {expected}")
    for value in [*proto.graph.input, *proto.graph.output]:
        kind = value.type.WhichOneof("value")
        if kind == "tensor_type" and value.type.tensor_type.elem_type not in _ELEMENT_TYPES:
            raise ModelError(f"{source}: graph input or output {value.name!r} has element type "
                             f"{value.type.tensor_type.elem_type}, which ONNX does not define")


# Top-level initializers with more elements than this are left out of the copy used for checking and shape
# inference: both need only their dtype and dims. Values matter only for tensors that describe shapes (Reshape
# targets, Slice bounds, Resize scales, axes), which hold at most a few elements per axis; copying and
# serializing the weights themselves would cost more than the checker and inference together.
STUB_ABOVE_ELEMENTS = 64


def _is_repeated(field_descriptor) -> bool:
    if hasattr(field_descriptor, "is_repeated"):   # protobuf >= 5; `label` is gone in the newest releases
        return field_descriptor.is_repeated
    return field_descriptor.label == field_descriptor.LABEL_REPEATED


def copy_fields(source, target, skip: tuple[str, ...] = ()) -> None:
    """Copy every set field of one protobuf message into another of the same type, except those named in `skip`."""
    for field_descriptor, value in source.ListFields():
        if field_descriptor.name in skip:
            continue
        if _is_repeated(field_descriptor):
            getattr(target, field_descriptor.name).extend(value)
        elif field_descriptor.message_type is not None:
            getattr(target, field_descriptor.name).CopyFrom(value)
        else:
            setattr(target, field_descriptor.name, value)


def metadata_only_copy(proto: ModelProto, order: list[int] | None = None) -> ModelProto:
    """A copy in which large or external top-level initializers become typed graph inputs, nodes in `order`.

    The ONNX checker and shape inference treat an input exactly like an initializer of the same type, except
    that they cannot read its values, which no shape rule needs for a large tensor. Both also need the nodes
    topologically sorted, which onnxruntime does not demand of a model file.
    """
    light = ModelProto()
    copy_fields(proto, light, skip=("graph",))
    copy_fields(proto.graph, light.graph, skip=("initializer", "node"))
    nodes = proto.graph.node
    light.graph.node.extend(nodes if order is None else (nodes[i] for i in order))
    declared = {i.name for i in proto.graph.input}
    # Most weights share a type with another: one serialized TypeProto per (dtype, dims), merged into each stub,
    # costs a fraction of building every stub's dimensions field by field.
    stub_types: dict[tuple[int, tuple[int, ...]], bytes] = {}
    for tensor in proto.graph.initializer:
        dims = tuple(tensor.dims)
        elements = 1
        for d in dims:
            elements *= d
        if elements <= STUB_ABOVE_ELEMENTS and tensor.data_location != TensorProto.EXTERNAL:
            light.graph.initializer.add().CopyFrom(tensor)
        elif tensor.name not in declared:
            key = (tensor.data_type, dims)
            type_bytes = stub_types.get(key)
            if type_bytes is None:
                type_bytes = stub_types[key] = onnx.helper.make_tensor_type_proto(*key).SerializeToString()
            stub = light.graph.input.add()
            stub.name = tensor.name
            stub.type.MergeFromString(type_bytes)
    return light


def serialized_size(message) -> int:
    """A message's size in bytes as one protobuf; at least 2 GiB when it is that large (protobuf will not measure,
    let alone write, such a message: recent releases raise instead of answering)."""
    try:
        return message.ByteSize()
    except Exception:  # noqa: BLE001 - google.protobuf.message.EncodeError, by implementation
        return 2**31


def refuse_overwrite(input_path: str | os.PathLike, out_path: str | os.PathLike, force: bool,
                     forceable: bool = True) -> None:
    """The input model is never written unless the user insists (where the command offers --force)."""
    output_path(out_path, ModelError)
    # os.path.realpath, unlike Path.resolve(), does not raise on a symlink loop (the input's own check says so).
    if not force and (os.path.realpath(out_path) == os.path.realpath(input_path) or _same_file(input_path, out_path)):
        hint = " or pass --force" if forceable else ""
        raise ModelError(f"refusing to overwrite the input model {shown(out_path)}; choose another -o{hint}")


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """One file under two names: a hard link, a bind mount, another case on a case-insensitive file system."""
    try:
        return os.path.samefile(a, b)
    except OSError:   # the output does not exist yet (or cannot be inspected)
        return False


def prepare_output(out_path: str | os.PathLike, *, create: bool = True) -> Path:
    """Make sure a model can be written at `out_path`, creating missing folders; with `create` False only check
    that they can be created (before any work is done: a command that then fails leaves no empty folders)."""
    out = output_path(out_path, ModelError)
    try:
        if create:
            out.parent.mkdir(parents=True, exist_ok=True)
        folder = out.parent
        while not folder.exists():   # the deepest existing folder: the missing ones will be made in it
            folder = folder.parent
        if not folder.is_dir():
            raise ModelError(f"cannot write {out}: {folder} is not a directory")
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix(out), suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ModelError(f"cannot write {shown(out)}: {error.strerror or error}") from None
    return out


def _temp_prefix(out: Path) -> str:
    return f".{out.name[:64]}."   # a hidden sibling; short, so that a long output name still leaves room


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_model(proto: ModelProto, out_path: str | os.PathLike, *, input_path: str | os.PathLike | None = None,
               force: bool = False) -> Path:
    """Write atomically (temp file + rename); never over the input unless force; external data above 2 GB.
    The files get the permissions a newly created file gets (0666 less the umask), as with any other writer."""
    out = Path(out_path)
    if input_path is not None:
        refuse_overwrite(input_path, out, force)
    prepare_output(out)
    mode = 0o666 & ~_umask()
    tmp = tmp_data = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(out), suffix=".tmp", dir=out.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        if serialized_size(proto) > _PROTOBUF_LIMIT - 2**20:
            data_name = out.name + ".data"
            fd, data_tmp_name = tempfile.mkstemp(prefix=_temp_prefix(out), suffix=".data.tmp", dir=out.parent)
            os.close(fd)
            tmp_data = Path(data_tmp_name)
            onnx.save_model(_with_external_weights(proto, tmp_data, data_name), str(tmp))
            os.chmod(tmp_data, mode)
            os.replace(tmp_data, out.parent / data_name)
        else:
            onnx.save_model(proto, str(tmp))
        os.chmod(tmp, mode)   # mkstemp creates 0600: the model would be unreadable to other users
        os.replace(tmp, out)
    except OSError as error:
        _remove(tmp, tmp_data)
        raise ModelError(f"cannot write {out}: {error.strerror or error}") from None
    except BaseException:
        _remove(tmp, tmp_data)
        raise
    return out


def write_text_atomic(out_path: str | os.PathLike, text: str, *,
                      inputs: Sequence[str | os.PathLike] = (), force: bool = False,
                      validate: Callable[[Path], None] | None = None) -> Path:
    """Write a text output (a report, a manifest, a profile) the way models are written: temp file + rename, so a
    reader never sees half a file; never over one of `inputs` unless force; 0666 less the umask. `validate` gets
    the written temporary file before the rename: whatever it raises leaves `out_path` as it was."""
    out = Path(out_path)
    for input_path in inputs:
        refuse_overwrite(input_path, out, force)
    prepare_output(out)
    tmp = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(out), suffix=".tmp", dir=out.parent)
        tmp = Path(tmp_name)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if validate is not None:
            validate(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except OSError as error:
        _remove(tmp)
        raise ModelError(f"cannot write {out}: {error.strerror or error}") from None
    except BaseException:
        _remove(tmp)
        raise
    return out


def _with_external_weights(proto: ModelProto, data_path: Path, location: str) -> ModelProto:
    """A copy of `proto` whose top-level initializers of 1 KiB or more point at `location`, their bytes written to
    `data_path`. onnx.save_model(save_as_external_data=True) would instead strip the weights out of the caller's
    model (the in-memory result) and point it at a temporary file name; this writes each tensor's bytes as it
    is and copies only the rest of the model."""
    light = ModelProto()
    copy_fields(proto, light, skip=("graph",))
    copy_fields(proto.graph, light.graph, skip=("initializer",))
    offset = 0
    with open(data_path, "wb") as data:
        for tensor in proto.graph.initializer:
            stub = light.graph.initializer.add()
            if tensor.data_location == TensorProto.EXTERNAL or not tensor.HasField("raw_data") \
                    or serialized_size(tensor) < _EXTERNAL_TENSOR_BYTES:
                stub.CopyFrom(tensor)
                continue
            copy_fields(tensor, stub, skip=("raw_data",))
            padding = -offset % 4096   # aligned, as onnx writes them, so runtimes can map the data
            data.write(b"\0" * padding)
            offset += padding
            raw = tensor.raw_data
            data.write(raw)
            stub.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
                stub.external_data.add(key=key, value=value)
            offset += len(raw)
            del raw
    return light


def _remove(*paths: Path | None) -> None:
    for path in paths:
        if path is not None:
            path.unlink(missing_ok=True)


@dataclass
class GraphIndex:
    """Producers, consumers and a topological order of one graph; subgraph reads of outer names count as reads."""

    graph: GraphProto
    order: list[int]                                   # node indices in a valid execution order
    producer: dict[str, int] = field(default_factory=dict)
    reads: list[tuple[str, ...]] = field(default_factory=list)   # per node: inputs + outer names its subgraphs use
    with_subgraphs: set[int] = field(default_factory=set)        # nodes holding subgraphs (If, Loop, Scan ...)
    # The graph read once: every later pass takes nodes and their input/output names from here. Reading a field
    # through protobuf costs far more than reading a Python tuple, and a graph has tens of thousands of nodes.
    nodes: list[NodeProto] = field(default_factory=list)
    inputs: list[tuple[str, ...]] = field(default_factory=list)  # node.input as stored, empty optionals included
    outputs: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def in_file_order(self) -> bool:
        return self.order == list(range(len(self.nodes)))


def subgraph_outer_reads(node: NodeProto) -> set[str]:
    """Names a node's subgraphs read from enclosing scopes (implicit inputs of If/Loop/Scan)."""
    outer: set[str] = set()
    for attr in node.attribute:
        subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in subs:
            defined = {i.name for i in sub.input} | initializer_names(sub)
            for inner in sub.node:
                defined.update(inner.output)
            for inner in sub.node:
                outer.update(n for n in inner.input if n and n not in defined)
                outer.update(n for n in subgraph_outer_reads(inner) if n not in defined)
            outer.update(o.name for o in sub.output if o.name not in defined)
    return outer


def index_graph(graph: GraphProto, outer_names: frozenset[str] = frozenset()) -> GraphIndex:
    """Topologically sort (Kahn, stable: file order wins ties) and reject cycles and undefined inputs."""
    nodes = list(graph.node)
    outputs = [tuple(node.output) for node in nodes]
    producer: dict[str, int] = {}
    for i, names in enumerate(outputs):
        for name in names:
            if name:
                if name in producer:
                    raise ModelError(f"tensor {name!r} is produced by two nodes")
                producer[name] = i
    available = {i.name for i in graph.input} | initializer_names(graph) | outer_names
    reads: list[tuple[str, ...]] = []
    with_subgraphs: set[int] = set()
    graph_kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    in_file_order = True   # every node depends only on earlier ones
    inputs: list[tuple[str, ...]] = []
    for i, node in enumerate(nodes):
        stored = tuple(node.input)
        inputs.append(stored)
        names = stored if "" not in stored else tuple(filter(None, stored))
        attributes = node.attribute
        if attributes and any(a.type in graph_kinds for a in attributes):
            with_subgraphs.add(i)
            names += tuple(sorted(subgraph_outer_reads(node) - set(names)))
        reads.append(names)
        for name in names:
            if name in available:
                continue
            source = producer.get(name)
            if source is None:
                raise ModelError(f"node {node.name or node.op_type!r} reads {name!r}, which nothing produces")
            if source >= i:
                if source == i:
                    raise ModelError(f"graph has a cycle: node {node.name or node.op_type!r} reads its own output")
                in_file_order = False
    order = list(range(len(nodes))) if in_file_order else _kahn_order(nodes, reads, producer, available)
    return GraphIndex(graph, order, producer, reads, with_subgraphs, nodes, inputs, outputs)


def _kahn_order(nodes: list[NodeProto], reads: list[tuple[str, ...]], producer: dict[str, int],
                available: set[str]) -> list[int]:
    """A stable topological order (file order wins ties) of a graph stored out of order; rejects cycles."""
    waiting = [0] * len(nodes)
    dependents: list[list[int]] = [[] for _ in nodes]
    for i, names in enumerate(reads):
        deps = {producer[name] for name in names if name not in available}
        waiting[i] = len(deps)
        for d in deps:
            dependents[d].append(i)
    ready = [i for i in range(len(nodes)) if waiting[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        stuck = next(nodes[i] for i in range(len(nodes)) if waiting[i] > 0)
        raise ModelError(f"graph has a cycle (node {stuck.name or stuck.op_type!r} depends on its own output)")
    return order


def sort_nodes(proto: ModelProto) -> None:
    """Put the main graph's nodes in a topological order that counts subgraphs' reads of outer tensors.

    For models edgefit itself just created (never a user's input): tools that sort graphs without looking into
    If/Loop bodies (onnxruntime's quantizer, for one) can place an If before the node producing what its
    branches read.
    """
    order = index_graph(proto.graph).order
    if order == list(range(len(order))):
        return
    nodes = [proto.graph.node[i] for i in order]
    copies = [NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del proto.graph.node[:]
    proto.graph.node.extend(copies)
