"""Read a PyTorch *legacy* (pre-1.6, non-zip) checkpoint into numpy arrays, without PyTorch.

Layout of the legacy format (torch/serialization.py, `_legacy_save`): five consecutive pickles
(magic number, protocol version, sys info, the object whose tensors reference storages by
persistent id, the list of storage keys), then for every storage key in that order: an int64
element count followed by the raw little-endian bytes.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class LegacyCheckpointError(ValueError):
    """The file is not a PyTorch legacy checkpoint this reader understands."""


class _TensorRef:
    """A tensor whose storage bytes have not been read yet."""

    def __init__(self, storage_key, offset, size, stride):
        self.storage_key, self.offset, self.size, self.stride = storage_key, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, storage_offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return name  # the storage type travels as its name inside the persistent id
        raise LegacyCheckpointError(f"unsupported pickled object {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise LegacyCheckpointError(f"unsupported persistent id {pid!r}")
        return pid[2], pid[1]


def load_state_dict(path: str | Path) -> "OrderedDict[str, np.ndarray]":
    """Return the checkpoint's state dict as name -> numpy array (copies, C-contiguous)."""
    with open(path, "rb") as f:
        if _Unpickler(f).load() != LEGACY_MAGIC:
            raise LegacyCheckpointError(f"{path}: not a PyTorch legacy checkpoint (bad magic number)")
        _Unpickler(f).load()  # protocol version
        sys_info = _Unpickler(f).load()
        if not sys_info.get("little_endian", True):
            raise LegacyCheckpointError(f"{path}: big-endian checkpoints are not supported")
        state = _Unpickler(f).load()
        keys = _Unpickler(f).load()
        dtypes = {}
        for ref in state.values():
            if isinstance(ref, _TensorRef):
                dtypes[ref.storage_key[0]] = _STORAGE_DTYPES[ref.storage_key[1]]
        storages = {}
        for key in keys:
            count = int(np.frombuffer(f.read(8), "<i8")[0])
            dtype = np.dtype(dtypes.get(key, np.float32)).newbyteorder("<")
            storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
    out = OrderedDict()
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            continue
        flat = storages[ref.storage_key[0]]
        itemsize = flat.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(
            flat[ref.offset:], shape=ref.size, strides=[s * itemsize for s in ref.stride]
        )
        out[name.removeprefix("module.")] = np.ascontiguousarray(arr)
    return out
