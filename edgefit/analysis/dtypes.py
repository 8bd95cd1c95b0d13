"""Element types: names and storage sizes for ONNX tensor data types."""

from __future__ import annotations

import math

from onnx import TensorProto

# Bytes per element as stored; 4-bit and 2-bit types are packed, so their sizes are fractional.
_SIZES = {
    TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
    TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT16: 2, TensorProto.UINT16: 2,
    TensorProto.INT32: 4, TensorProto.UINT32: 4, TensorProto.INT64: 8, TensorProto.UINT64: 8,
    TensorProto.BOOL: 1, TensorProto.COMPLEX64: 8, TensorProto.COMPLEX128: 16,
}
for _name, _size in (("FLOAT8E4M3FN", 1), ("FLOAT8E4M3FNUZ", 1), ("FLOAT8E5M2", 1), ("FLOAT8E5M2FNUZ", 1),
                     ("FLOAT8E8M0", 1), ("INT4", 0.5), ("UINT4", 0.5), ("FLOAT4E2M1", 0.5),
                     ("INT2", 0.25), ("UINT2", 0.25)):
    if hasattr(TensorProto, _name):  # newer element types exist only in newer onnx releases
        _SIZES[getattr(TensorProto, _name)] = _size



def dtype_name(elem_type: int) -> str:
    """'float32', 'float16', 'int8' ... (ONNX calls float32 plain FLOAT; users and numpy say float32)."""
    try:
        name = TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"dtype{elem_type}"
    return "float32" if name == "float" else name


DTYPE_BYTES: dict[str, float] = {dtype_name(code): size for code, size in _SIZES.items()}
FLOAT_DTYPES = frozenset(
    name for name in DTYPE_BYTES if name.startswith(("float", "bfloat", "double"))
)
# Integer types that hold quantized weights (as opposed to shapes, indices and counts).
QUANTIZED_DTYPES = frozenset({"int8", "uint8", "int16", "uint16", "int4", "uint4", "int2", "uint2"})
# What a deployment precision means for one stored floating-point element.
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


def tensor_bytes(elements: int, dtype: str) -> int | None:
    """Storage bytes of `elements` values of `dtype`; None for strings and unknown types."""
    size = DTYPE_BYTES.get(dtype)
    if size is None:
        return None
    return math.ceil(elements * size)


def dtype_code(name: str) -> int:
    """Inverse of dtype_name: 'float32' -> TensorProto.FLOAT."""
    return TensorProto.FLOAT if name == "float32" else getattr(TensorProto, name.upper())
