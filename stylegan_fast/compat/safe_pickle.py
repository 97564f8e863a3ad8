"""Read NVlabs network pickles as data, without running anything they contain.

NVlabs pickles (StyleGAN2-ADA, StyleGAN3) store every network object through
`torch_utils.persistence`: the object reduces to `_reconstruct_persistent_obj(meta)`, where
meta = {type: 'class', version, module_src, class_name, state}. module_src is the Python
source of the module that defined the class, and the original loader execs it. Here the
unpickler's find_class answers from a fixed allow-list of safe stand-ins instead: the
persistence reconstructor becomes PersistentRecord (module_src is dropped unread), tensors
are rebuilt from their bytes, and any other global raises UnsafePickleError before it is
looked up, imported or called.

Note that the pickle names no module for a persistent class: only its source text and its
class name are stored, so a record carries the class name alone.

The TensorFlow releases (StyleGAN, StyleGAN2) pickle `dnnlib.tflib.network.Network` objects
instead: NEWOBJ of that class, then BUILD with a state dict holding the network's build
function name, static kwargs, sub-networks, the Python source of its module (which the
original loader execs) and its variables as numpy arrays. Here the class is TFNetworkRecord,
which keeps the data and drops the source unread, and numpy arrays are rebuilt from their
bytes as torch tensors (numeric dtypes only).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import re
from typing import Any, BinaryIO, Callable

import numpy as np
import torch


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for a global outside the allow-list, or embeds a rejected payload."""


class NVlabsPickleError(ValueError):
    """The file is not a readable NVlabs network pickle (truncated, corrupt, or unexpected)."""


@dataclasses.dataclass(frozen=True)
class PersistentRecord:
    """One `torch_utils.persistence` object as data: its class name, format version and state.

    For a torch module the state is its `__dict__`: `_parameters`, `_buffers` and `_modules`
    (mappings, the latter holding nested records), `_non_persistent_buffers_set`,
    `_init_args`, `_init_kwargs` and plain attributes.
    """

    class_name: str
    version: int
    state: dict

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The persistent parameters and buffers of this module record and the records under it,
        keyed as `torch.nn.Module.state_dict` keys them ('synthesis.b4.conv1.weight')."""
        tensors: dict[str, torch.Tensor] = {}
        self._collect_tensors("", tensors, set())
        return tensors

    def _collect_tensors(self, prefix: str, tensors: dict[str, torch.Tensor], seen: set[int]) -> None:
        where = prefix.rstrip(".") or "the top level"
        if id(self) in seen:
            raise NVlabsPickleError(f"{self.class_name} at {where} appears twice in the module tree")
        seen.add(id(self))
        parameters, buffers, modules = (self.state.get(key) for key in ("_parameters", "_buffers", "_modules"))
        if not all(isinstance(table, dict) for table in (parameters, buffers, modules)):
            raise NVlabsPickleError(
                f"{self.class_name} at {where} is not a torch module: it lacks _parameters, _buffers or _modules"
            )
        non_persistent = self.state.get("_non_persistent_buffers_set") or set()
        if not isinstance(non_persistent, (set, frozenset)):
            raise NVlabsPickleError(f"{self.class_name} at {where} has a malformed _non_persistent_buffers_set")
        named = [*parameters.items(), *((name, b) for name, b in buffers.items() if name not in non_persistent)]
        for name, value in named:
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise NVlabsPickleError(f"{prefix}{name} holds a {type(value).__name__}, expected a tensor")
            tensors[prefix + name] = value
        for name, child in modules.items():
            if child is None:
                continue
            if not isinstance(child, PersistentRecord):
                raise NVlabsPickleError(
                    f"submodule {prefix}{name} is a {type(child).__name__}, expected a persistent module"
                )
            child._collect_tensors(f"{prefix}{name}.", tensors, seen)


def _persistent_record(meta) -> PersistentRecord:
    # Stands in for torch_utils.persistence._reconstruct_persistent_obj; meta['module_src'] is
    # never touched.
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise NVlabsPickleError("a torch_utils.persistence object has no meta dict of type 'class'")
    class_name, version, state = meta.get("class_name"), meta.get("version"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(version, int) or not isinstance(state, dict):
        raise NVlabsPickleError(f"persistence meta of {class_name!r} lacks a str class_name, int version or dict state")
    return PersistentRecord(class_name=class_name, version=version, state=dict(state))


def _load_storage(data) -> torch.storage.TypedStorage:
    # Stands in for torch.storage._load_from_bytes: `data` is torch.save output (legacy or zip).
    if not isinstance(data, (bytes, bytearray)):
        raise NVlabsPickleError(f"a tensor storage is stored as {type(data).__name__}, expected bytes")
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafePickleError(f"torch.load(weights_only=True) refused an embedded tensor storage: {error}") from None
    except Exception as error:
        raise NVlabsPickleError(f"an embedded tensor storage is corrupt: {type(error).__name__}: {error}") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"an embedded torch.save payload holds a {type(storage).__name__}, expected a storage")
    return storage


def _is_int_tuple(value) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None) -> torch.Tensor:
    # Stands in for torch._utils._rebuild_tensor_v2; requires_grad is dropped (data only).
    if not isinstance(storage, torch.storage.TypedStorage):
        raise NVlabsPickleError(f"a tensor is built on a {type(storage).__name__}, expected a storage")
    if not (_is_int_tuple(size) and _is_int_tuple(stride) and len(size) == len(stride) and _is_int_tuple((storage_offset,))):
        raise NVlabsPickleError(
            f"a tensor has a malformed layout: offset {storage_offset!r}, size {size!r}, stride {stride!r}"
        )
    if backward_hooks or metadata:
        raise NVlabsPickleError("a tensor carries backward hooks or metadata; network pickles never do")
    tensor = torch.empty((0,), dtype=storage.dtype)
    # set_ would silently grow the storage, so check the extent first.
    numel = storage._untyped_storage.nbytes() // tensor.element_size()
    extent = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if 0 not in size else 0
    if extent > numel:
        raise NVlabsPickleError(
            f"a tensor of size {size}, stride {stride} at offset {storage_offset} does not fit its storage "
            f"of {numel} elements"
        )
    return tensor.set_(storage._untyped_storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None) -> torch.Tensor:
    # Stands in for torch._utils._rebuild_parameter(_with_state); the result is the plain tensor.
    if not isinstance(data, torch.Tensor):
        raise NVlabsPickleError(f"a parameter wraps a {type(data).__name__}, expected a tensor")
    if backward_hooks:
        raise NVlabsPickleError("a parameter carries backward hooks; network pickles never do")
    return data


class _NumpyDType:
    """A numeric numpy dtype as pickled: `numpy.dtype(spec, align, copy)` then BUILD with its state."""

    def __init__(self, spec: str):
        self.dtype = np.dtype(spec)

    def __setstate__(self, state) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        order = order.decode("latin1") if isinstance(order, bytes) else order  # Python 2 pickles read as bytes
        if order not in ("<", ">", "|", "="):
            raise NVlabsPickleError(f"a numpy dtype has a malformed state {state!r}")
        self.dtype = self.dtype.newbyteorder(order)


_NUMERIC_DTYPE_SPEC = re.compile(r"[biuf][1248]")


def _numpy_dtype(spec, align=False, copy=False) -> _NumpyDType:
    # Stands in for numpy.dtype; only booleans, integers and floats (scalars such as weight gains).
    spec = spec.decode("latin1") if isinstance(spec, bytes) else spec  # Python 2 pickles read as bytes
    if not isinstance(spec, str) or not _NUMERIC_DTYPE_SPEC.fullmatch(spec):
        raise UnsafePickleError(f"numpy dtype {spec!r} is not a plain numeric dtype")
    return _NumpyDType(spec)


def _numpy_scalar(dtype, data) -> bool | int | float:
    # Stands in for numpy.core.multiarray.scalar; returns the equivalent Python number.
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise NVlabsPickleError("a numpy scalar is malformed")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


class _NumpyArrayClass:
    """Stands in for numpy.ndarray, the class argument of numpy's array reconstructor."""


def _numpy_reconstruct(cls, shape, typecode) -> _NumpyArray:
    # Stands in for numpy.core.multiarray._reconstruct(ndarray, (0,), b'b'); BUILD fills it in.
    if cls is not _NumpyArrayClass:
        raise UnsafePickleError("numpy's array reconstructor is asked for a class other than numpy.ndarray")
    return _NumpyArray()


class _NumpyArray:
    """A numeric numpy array as pickled; BUILD's state gives its shape, dtype, order and bytes."""

    tensor: torch.Tensor

    def __setstate__(self, state) -> None:
        # (version, shape, dtype, is_fortran, data); numpy's oldest format has no version.
        if isinstance(state, tuple) and len(state) == 4:
            state = (0, *state)
        if not (isinstance(state, tuple) and len(state) == 5):
            raise NVlabsPickleError("a numpy array has a malformed state")
        _, shape, dtype, is_fortran, data = state
        if not isinstance(dtype, _NumpyDType):
            raise NVlabsPickleError(f"a numpy array has the dtype {type(dtype).__name__}, expected a numeric numpy dtype")
        if not _is_int_tuple(shape) or not isinstance(is_fortran, bool) or not isinstance(data, (bytes, bytearray)):
            raise NVlabsPickleError(f"a numpy array has a malformed shape {shape!r}, order or data")
        nbytes = dtype.dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if len(data) != nbytes:
            raise NVlabsPickleError(
                f"a numpy array of shape {shape} and dtype {dtype.dtype} holds {len(data)} bytes, expected {nbytes}"
            )
        array = np.frombuffer(data, dtype=dtype.dtype).reshape(shape, order="F" if is_fortran else "C")
        self.tensor = torch.from_numpy(np.array(array, dtype=dtype.dtype.newbyteorder("="), order="C", copy=True))


def _numpy_frombuffer(buffer, dtype, shape, order) -> _NumpyArray:
    # Stands in for numpy.core.numeric._frombuffer, numpy's array reduction at pickle protocol 5.
    if order not in ("C", "F") or not isinstance(buffer, (bytes, bytearray)):
        raise NVlabsPickleError(f"a numpy array (protocol 5) has a malformed buffer or order {order!r}")
    array = _NumpyArray()
    array.__setstate__((1, shape, dtype, order == "F", bytes(buffer)))
    return array


def _empty_bytes(*args) -> bytes:
    # Stands in for bytes(): pickle protocol 2 writes b'' as a call of bytes without arguments.
    if args:
        raise UnsafePickleError("refusing a call of bytes with arguments")
    return b""


def _latin1_encode(text, encoding) -> bytes:
    # Stands in for _codecs.encode: pickle protocol 2 writes bytes as encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with {type(text).__name__} and {encoding!r}")
    return text.encode("latin1")


class TFNetworkRecord:
    """One `dnnlib.tflib.network.Network` (TensorFlow StyleGAN and StyleGAN2 pickles) as data.

    Attributes:
        name: the network's scope name ('G', 'D', 'Gs', 'G_mapping', 'G_synthesis').
        build_func_name: the name of the function that built its graph ('G_main', 'G_style',
            'G_mapping', 'G_synthesis_stylegan2', 'D_stylegan2', ...).
        static_kwargs: the keyword arguments it was built with (plain data).
        components: its sub-networks by name ('mapping', 'synthesis'), each a TFNetworkRecord.
        variables: its own variables by local name ('4x4/Conv/weight'), as float32 CPU
            tensors in TensorFlow's layouts (0-d for scalars).
    """

    name: str
    build_func_name: str
    static_kwargs: dict
    components: dict
    variables: dict[str, torch.Tensor]

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict) or state.get("version") not in (2, 3, 4):
            version = state.get("version") if isinstance(state, dict) else None
            raise NVlabsPickleError(f"a dnnlib.tflib Network has state version {version!r}; 2, 3 and 4 are known")
        name, func, kwargs = state.get("name"), state.get("build_func_name"), state.get("static_kwargs")
        components, variables = state.get("components", {}), state.get("variables")
        if not (isinstance(name, str) and isinstance(func, str) and isinstance(kwargs, dict)):
            raise NVlabsPickleError("a dnnlib.tflib Network lacks a str name, a str build_func_name or a static_kwargs dict")
        if not isinstance(components, dict) or not all(isinstance(c, TFNetworkRecord) for c in components.values()):
            raise NVlabsPickleError(f"network {name!r} has components that are not dnnlib.tflib Networks")
        if not isinstance(variables, (list, tuple)) or not all(
            isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str) for item in variables
        ):
            raise NVlabsPickleError(f"network {name!r} has no list of (name, value) variables")
        self.name, self.build_func_name, self.static_kwargs, self.components = name, func, dict(kwargs), dict(components)
        self.variables = {}
        for var_name, value in variables:
            if isinstance(value, _NumpyArray):
                value = value.tensor
            elif isinstance(value, (bool, int, float)):  # 0-d variables come back from TF as numpy scalars
                value = torch.tensor(value)
            else:
                raise NVlabsPickleError(f"variable {name}/{var_name} holds a {type(value).__name__}, expected an array")
            self.variables[var_name] = value.to(torch.float32)

    def __repr__(self) -> str:
        return f"TFNetworkRecord({self.name!r}, {self.build_func_name!r}, {len(self.variables)} variables)"


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,  # pickle protocol < 4 writes sets as set(list)
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # numpy < 2
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # numpy >= 2
    ("numpy", "ndarray"): _NumpyArrayClass,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,  # protocol 2 names Python 2's module
    ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
}


def few(names: list[str], limit: int = 8) -> str:
    """`names` for an error message: the first `limit`, and how many more."""
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global '{module}.{name}': not on the allow-list of stylegan_fast.compat.safe_pickle"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing a persistent id: network pickles have none")


def load(file: BinaryIO, what: str = "the file", encoding: str = "ASCII") -> Any:
    """Unpickle `file` with the allow-list; persistence objects come back as PersistentRecord,
    dnnlib.tflib Networks as TFNetworkRecord, numpy arrays as objects whose `tensor` is theirs.
    `encoding` is pickle's, for Python 2 strings ('bytes' keeps them as bytes).

    Raises:
        UnsafePickleError: a global outside ALLOWED_GLOBALS, or an embedded payload that
            torch.load(weights_only=True) refuses. Nothing from the pickle has run.
        NVlabsPickleError: the data is truncated, corrupt, or not shaped as expected.
    """
    try:
        return _RestrictedUnpickler(file, encoding=encoding).load()
    except (UnsafePickleError, NVlabsPickleError):
        raise
    except EOFError:
        raise NVlabsPickleError(f"{what} ends in the middle of the pickle: truncated (an interrupted download?)") from None
    except Exception as error:
        raise NVlabsPickleError(f"{what} is not a readable pickle: {type(error).__name__}: {error}") from None
