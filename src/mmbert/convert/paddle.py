"""Reading Paddle 1.8 ``save_persistables`` directories without Paddle: one LoDTensor file per variable.

The stream (Paddle ``framework/lod_tensor.cc`` ``SerializeToStream`` and ``tensor_util.cc``
``TensorToStream``), all little-endian:

1. uint32 LoDTensor version (0);
2. uint64 number of LoD levels, then per level a uint64 byte size and that many bytes of uint64 offsets;
3. the tensor: uint32 version (0), int32 byte size of a ``TensorDesc`` protobuf (field 1 ``data_type``
   enum, field 2 repeated int64 ``dims``), the protobuf, then the raw data (numel x element size).

Anything else — another version, a truncated file, trailing bytes, a dtype we do not read — is an error
naming the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmbert.convert.common import CheckpointError

# framework.proto VarType.Type values of the dtypes parameters are stored in.
PADDLE_DTYPES: dict[int, np.dtype] = {
    3: np.dtype("<i8"),  # INT64
    4: np.dtype("<f2"),  # FP16
    5: np.dtype("<f4"),  # FP32
    6: np.dtype("<f8"),  # FP64
}
PADDLE_DTYPE_NAMES = {0: "BOOL", 1: "INT16", 2: "INT32", 3: "INT64", 4: "FP16", 5: "FP32", 6: "FP64",
                      20: "UINT8", 21: "INT8", 22: "BF16"}  # fmt: skip


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.pos, self.name = data, 0, name

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise CheckpointError(
                f"{self.name}: truncated LoDTensor file: {what} needs {n} bytes at offset {self.pos}, "
                f"the file has {len(self.data)}"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]


def _varint(buf: bytes, pos: int, name: str) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise CheckpointError(f"{name}: malformed TensorDesc protobuf (varint runs past its end)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_tensor_desc(buf: bytes, name: str) -> tuple[int, list[int]]:
    """The (data_type, dims) of a serialised ``TensorDesc`` (dims packed or not, as protobuf allows)."""
    data_type, dims, pos = None, [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, name)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 0:
            data_type, pos = _varint(buf, pos, name)
        elif field == 2 and wire == 0:
            v, pos = _varint(buf, pos, name)
            dims.append(_signed64(v))
        elif field == 2 and wire == 2:
            length, pos = _varint(buf, pos, name)
            end = pos + length
            while pos < end:
                v, pos = _varint(buf, pos, name)
                dims.append(_signed64(v))
        else:
            raise CheckpointError(
                f"{name}: unexpected field {field} (wire type {wire}) in the TensorDesc protobuf"
            )
    if data_type is None:
        raise CheckpointError(f"{name}: the TensorDesc protobuf has no data_type")
    if any(d < 0 for d in dims):
        raise CheckpointError(f"{name}: negative dimension in {dims}")
    return data_type, dims


def read_lod_tensor(path: str | os.PathLike) -> np.ndarray:
    """One variable file -> a numpy array (its LoD, empty for parameters, is checked and dropped)."""
    path = Path(path)
    r = _Reader(path.read_bytes(), str(path))
    version = r.unpack("<I", "the LoDTensor version")
    if version != 0:
        raise CheckpointError(f"{path}: LoDTensor version {version}, only version 0 (Paddle 1.x) is known")
    levels = r.unpack("<Q", "the LoD level count")
    for level in range(levels):
        size = r.unpack("<Q", f"the byte size of LoD level {level}")
        r.take(size, f"LoD level {level}")
    tensor_version = r.unpack("<I", "the tensor version")
    if tensor_version != 0:
        raise CheckpointError(f"{path}: tensor version {tensor_version}, only version 0 is known")
    desc_size = r.unpack("<i", "the TensorDesc size")
    if desc_size < 0:
        raise CheckpointError(f"{path}: negative TensorDesc size {desc_size}")
    data_type, dims = parse_tensor_desc(r.take(desc_size, "the TensorDesc protobuf"), str(path))
    if data_type not in PADDLE_DTYPES:
        raise CheckpointError(
            f"{path}: dtype {PADDLE_DTYPE_NAMES.get(data_type, data_type)} is not one mmbert reads "
            f"({', '.join(PADDLE_DTYPE_NAMES[k] for k in PADDLE_DTYPES)})"
        )
    dtype = PADDLE_DTYPES[data_type]
    numel = int(np.prod(dims)) if dims else 1
    raw = r.take(numel * dtype.itemsize, f"{numel} {PADDLE_DTYPE_NAMES[data_type]} values of shape {dims}")
    if r.pos != len(r.data):
        raise CheckpointError(f"{path}: {len(r.data) - r.pos} trailing bytes after the tensor data")
    return np.frombuffer(raw, dtype=dtype).reshape(dims).copy()


def read_float_parameter(path: Path) -> Tensor:
    """A parameter file as a float32 tensor (FP16 converts exactly; anything else is refused)."""
    array = read_lod_tensor(path)
    if array.dtype not in (np.float32, np.float16):
        raise CheckpointError(f"{path}: a parameter must be FP32 or FP16, the file holds {array.dtype}")
    return torch.from_numpy(array.astype(np.float32))
