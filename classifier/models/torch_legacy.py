"""Read PyTorch state dicts saved in the legacy (pre-zip) format, without torch.

The pretrained EfficientNet-Lite0 weights ship as such a ``.pth`` file, but
PyTorch is a multi-gigabyte dependency we do not want at runtime (nor in the
conversion step). The legacy format is a handful of consecutive pickles plus
raw storage bytes, so numpy and the standard library are enough to read it.

Only the pickle globals a plain state dict needs are resolved, so reading an
untrusted file cannot execute arbitrary code (unlike ``torch.load``).

Layout, as written by ``torch.save(..., _use_new_zipfile_serialization=False)``:

1. pickle: magic number; pickle: protocol version; pickle: sys info;
2. pickle: the object itself, where every storage is a persistent id
   ``('storage', storage_type, key, location, numel[, view_metadata])``
   and tensors are rebuilt by ``torch._utils._rebuild_tensor_v2``;
3. pickle: the list of storage keys, in the order their data follows;
4. per key: little-endian int64 element count, then the raw elements.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype).newbyteorder("<")
    for name, dtype in {
        "DoubleStorage": np.float64,
        "FloatStorage": np.float32,
        "HalfStorage": np.float16,
        "LongStorage": np.int64,
        "IntStorage": np.int32,
        "ShortStorage": np.int16,
        "CharStorage": np.int8,
        "ByteStorage": np.uint8,
        "BoolStorage": np.bool_,
    }.items()
}


@dataclass
class _Storage:
    """A storage whose bytes only arrive after the object pickle has been read."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _StorageView:
    """A slice of a root storage (only produced by very old torch versions)."""

    root: _Storage
    offset: int
    numel: int

    @property
    def data(self) -> np.ndarray | None:
        if self.root.data is None:
            return None
        return self.root.data[self.offset : self.offset + self.numel]


@dataclass
class _PendingTensor:
    """Stand-in for a tensor, materialised once its storage has been read."""

    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ValueError("tensor refers to a storage whose data is missing")
        # as_strided does no bounds checking, so a corrupt file must be caught here.
        last = sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if 0 not in self.size and (min(self.stride, default=0) < 0 or self.offset + last >= data.size):
            raise ValueError("tensor extends beyond its storage")
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)  # copy: detach from the (shared) storage buffer


def _rebuild_tensor_v2(
    storage: _Storage | _StorageView,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_ignored: Any,  # requires_grad, backward hooks, metadata: irrelevant for inference
) -> _PendingTensor:
    return _PendingTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: _PendingTensor, *_ignored: Any) -> _PendingTensor:
    return data


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): name for name in _STORAGE_DTYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler that knows just enough torch to rebuild a state dict.

    Every other global is refused, so a hostile file cannot run code on load.
    """

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise ValueError(f"unsupported pickle global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> _Storage | _StorageView:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ValueError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel, *rest = pid[1:]
        view_metadata = rest[0] if rest else None
        root = self.storages.setdefault(key, _Storage(_STORAGE_DTYPES[storage_type], numel))
        if view_metadata is None:
            return root
        _view_key, offset, view_numel = view_metadata
        return _StorageView(root, offset, view_numel)


def _read_header(file: BinaryIO) -> None:
    try:
        magic, version, sys_info = (_StateDictUnpickler(file).load() for _ in range(3))
    except Exception as error:
        raise ValueError("not a legacy PyTorch file (unreadable header)") from error
    if magic != _MAGIC_NUMBER:
        raise ValueError("not a legacy PyTorch file (bad magic number)")
    if version != _PROTOCOL_VERSION:
        raise ValueError(f"unsupported legacy PyTorch protocol version {version!r}")
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian")):
        raise ValueError("only little-endian legacy PyTorch files are supported")


def _read_storage(file: BinaryIO, storage: _Storage) -> None:
    count = int.from_bytes(file.read(8), "little")
    nbytes = count * storage.dtype.itemsize
    raw = file.read(nbytes)
    if count != storage.numel or len(raw) != nbytes:
        raise ValueError("truncated or inconsistent storage data")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def load_legacy_state_dict(path: str) -> dict[str, np.ndarray]:
    """Return the tensors of a legacy-format ``.pth`` state dict as numpy arrays.

    Raises ValueError if the file is not a legacy PyTorch file or does not
    hold a flat mapping of names to tensors.
    """
    with open(path, "rb") as file:
        _read_header(file)
        unpickler = _StateDictUnpickler(file)
        try:
            obj = unpickler.load()
            for key in _StateDictUnpickler(file).load():
                _read_storage(file, unpickler.storages[key])
        except (pickle.UnpicklingError, EOFError, TypeError, KeyError) as error:
            raise ValueError(f"malformed legacy PyTorch file: {error!r}") from error
    if not isinstance(obj, dict) or not all(isinstance(t, _PendingTensor) for t in obj.values()):
        raise ValueError("file does not contain a state dict of tensors")
    return {name: tensor.to_numpy() for name, tensor in obj.items()}
