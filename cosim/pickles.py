"""Pickled numpy arrays read without running any code the file names.

A pickle can call any importable function while it loads. :func:`load_array_pickle` admits only
what a pickled container of numeric numpy arrays references (numpy's array reconstructor, the
``ndarray`` type as its argument, ``dtype`` of a plain numeric type); :func:`check_array_pickle`
checks the same rule by reading the opcodes alone, without building any object.
:func:`load_record_pickle` admits less: exactly what a batch of the python version of CIFAR-10 /
CIFAR-100 holds (one dict of strings to ``uint8`` arrays, lists of integers or strings, strings
and integers).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import pickletools
import stat
from pathlib import Path

import numpy as np

__all__ = [
    "MAX_PICKLE_BYTES",
    "UnsafePickleError",
    "check_array_pickle",
    "load_array_pickle",
    "load_record_pickle",
]


MAX_PICKLE_BYTES = 512 * 1024**2
"""Largest decompressed pickle read, bytes: MNIST's is 0.22 GB (a float64 copy 0.44 GB); a gzip bomb
stops here."""


class UnsafePickleError(ValueError):
    """A pickle that is refused: it names something outside the admitted globals, is not a regular
    file, is larger than :data:`MAX_PICKLE_BYTES`, or does not parse. ``reason`` says which."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(
            f"{path}: {reason}; nothing in it was run (only pickles of plain numeric numpy arrays are read)"
        )


class _Refused(Exception):
    """Raised inside the readers, where the path is not at hand; becomes an UnsafePickleError."""


_RECONSTRUCT = np.zeros(0).__reduce__()[0]
"""numpy's ``_reconstruct``, found the way numpy itself pickles, whatever module numpy keeps it in."""
_RECONSTRUCT_NAMES = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
"""The name written by numpy < 2 (the classic ``mnist.pkl.gz``) and by numpy >= 2."""
_NUMERIC_KINDS = "biuf"


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` inside the pickle: it is only ever an argument of
    ``_reconstruct``, and as a non-callable it cannot be the target of a REDUCE."""

    __slots__ = ()  # no attributes, so BUILD cannot write any onto the shared instance

    def __repr__(self) -> str:
        return "numpy.ndarray"


class _Reconstruct:
    """numpy's ``_reconstruct``, called only the way numpy pickles an array: an empty byte array
    that BUILD then fills (``ndarray.__setstate__`` checks the data against the shape)."""

    __slots__ = ()

    def __call__(self, subtype, shape, typecode):
        if subtype is not _NDARRAY or tuple(shape) != (0,) or typecode not in (b"b", "b"):
            raise pickle.UnpicklingError(
                f"_reconstruct called with ({subtype!r}, {shape!r}, {typecode!r}), not as numpy pickles an array"
            )
        return _RECONSTRUCT(np.ndarray, (0,), b"b")


class _Dtype:
    """``numpy.dtype`` of a plain numeric type only: no object, structured or void dtypes."""

    __slots__ = ()

    def admits(self, dtype: np.dtype) -> bool:
        return dtype.kind in _NUMERIC_KINDS and dtype.fields is None and not dtype.hasobject

    def __call__(self, name, align=False, copy=True):
        if isinstance(name, bytes):
            name = name.decode("latin1")
        if not isinstance(name, str) or len(name) > 8:
            raise pickle.UnpicklingError(f"dtype {name!r} is not {self}")
        try:
            dtype = np.dtype(name)
        except TypeError:
            raise pickle.UnpicklingError(f"dtype {name!r} is not a numpy type") from None
        if not self.admits(dtype):
            raise pickle.UnpicklingError(f"dtype {name!r} is not {self}")
        return np.dtype(name, bool(align), bool(copy))

    def __str__(self) -> str:
        return "a plain numeric type"


class _ByteDtype(_Dtype):
    """``numpy.dtype`` of ``uint8`` only (a rule in a method: a slot-less instance cannot be widened
    by a BUILD)."""

    __slots__ = ()

    def admits(self, dtype: np.dtype) -> bool:
        return dtype == np.uint8

    def __str__(self) -> str:
        return "uint8"


_NDARRAY = _NdarrayToken()
_ADMITTED = {
    **{key: _Reconstruct() for key in _RECONSTRUCT_NAMES},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype(),
}
"""Exactly the globals the classic ``mnist.pkl.gz`` references (``pickletools.genops`` lists
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``), as guarded stand-ins."""


_ADMITTED_BYTES = {**_ADMITTED, ("numpy", "dtype"): _ByteDtype()}
"""The same globals with ``dtype`` narrowed to ``uint8``: what a CIFAR batch references."""


def _admitted(module: str, name: str):
    return _ADMITTED.get((module, name))


class _ArrayUnpickler(pickle.Unpickler):
    admitted = _ADMITTED

    def find_class(self, module: str, name: str):
        found = self.admitted.get((module, name))
        if found is None:
            raise _Refused(f"it references {module}.{name}, which a pickle of numpy arrays never needs")
        return found

    def persistent_load(self, pid):
        raise _Refused("it uses persistent ids, which a pickle of numpy arrays never needs")


class _Bounded:
    """A read-only stream that delivers at most ``limit`` bytes. A request past the limit is
    refused before anything is read: the unpickler allocates an object's declared size before it
    fills it, so a gzip bomb or a forged length never reaches memory."""

    def __init__(self, raw, limit: int):
        self.raw, self.limit, self.count = raw, limit, 0

    def _room(self, size: int | None) -> int:
        room = self.limit - self.count
        if size is None or size < 0:
            return room + 1
        if size > room:
            raise _Refused(f"it holds (or declares) more than {self.limit} bytes of pickled data")
        return size

    def _take(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.count > self.limit:
            raise _Refused(f"it holds (or declares) more than {self.limit} bytes of pickled data")
        return data

    def read(self, size: int = -1) -> bytes:
        return self._take(self.raw.read(self._room(size)))

    def readline(self, size: int = -1) -> bytes:
        return self._take(self.raw.readline(self._room(size)))

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _open_pickle(path: Path, limit: int):
    """The decompressed stream of ``path`` (gzip when it ends in ``.gz``), only if it is a regular
    file: a FIFO would block the reader forever, a device would never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _Refused(f"cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise _Refused("it is not a regular file (a FIFO, device or folder)")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open() still returns.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _Refused(f"cannot read it: {exc.strerror or exc}") from None
    with open(fd, "rb") as raw:
        if not stat.S_ISREG(os.fstat(raw.fileno()).st_mode):
            raise _Refused("it is not a regular file (a FIFO, device or folder)")
        os.set_blocking(raw.fileno(), True)
        if path.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                yield _Bounded(fh, limit)
        else:
            yield _Bounded(raw, limit)


_PARSE_ERRORS = (
    OSError,
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    MemoryError,
)


def load_array_pickle(path: str | Path, limit: int = MAX_PICKLE_BYTES, encoding: str = "latin1"):
    """Unpickle ``path`` (gzip'd when it ends in ``.gz``) admitting only numeric numpy arrays and
    plain containers (tuples, lists, dicts, numbers, strings); anything else raises
    :class:`UnsafePickleError` before it is called. ``encoding`` decodes Python 2 strings (numpy's
    raw array bytes among them: ``latin1`` keeps them intact)."""
    path = Path(path)
    try:
        with _open_pickle(path, limit) as stream:
            return _ArrayUnpickler(stream, encoding=encoding).load()
    except _Refused as exc:
        raise UnsafePickleError(path, str(exc)) from None
    except _PARSE_ERRORS as exc:
        raise UnsafePickleError(path, f"it does not parse as a pickle of numpy arrays ({exc})") from None


class _ByteArrayUnpickler(_ArrayUnpickler):
    admitted = _ADMITTED_BYTES


def _plain_string(value) -> str | None:
    """``value`` as ``str`` if it is a string (a Python 2 ``str`` reads as ``bytes`` or ``str``)."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    return value if isinstance(value, str) else None


def _record_value(value) -> bool:
    if type(value) is int:
        return True
    if isinstance(value, np.ndarray):
        return value.dtype == np.uint8
    if isinstance(value, list):
        return all(type(v) is int for v in value) or all(_plain_string(v) is not None for v in value)
    return _plain_string(value) is not None


def load_record_pickle(path: str | Path, limit: int = MAX_PICKLE_BYTES) -> dict[str, object]:
    """Unpickle ``path`` admitting exactly what a batch of the python version of CIFAR-10 /
    CIFAR-100 holds: one dict whose keys are strings and whose values are ``uint8`` arrays, lists
    of integers, lists of strings, strings or integers. The globals are those of :func:`load_array_pickle`
    with ``dtype`` only ``uint8``; anything else raises :class:`UnsafePickleError`, a global before
    it is called, a container or value of another kind once the file is read. Keys and string
    values come back as ``str`` (Python 2 strings are decoded as latin1, as the files were written)."""
    path = Path(path)
    try:
        with _open_pickle(path, limit) as stream:
            record = _ByteArrayUnpickler(stream, encoding="latin1").load()
    except _Refused as exc:
        raise UnsafePickleError(path, str(exc)) from None
    except _PARSE_ERRORS as exc:
        raise UnsafePickleError(path, f"it does not parse as a pickled batch of uint8 images ({exc})") from None
    if not isinstance(record, dict):
        raise UnsafePickleError(path, f"it holds a {type(record).__name__}, not a dict of named arrays and lists")
    out = {}
    for key, value in record.items():
        name = _plain_string(key)
        if name is None:
            raise UnsafePickleError(path, f"it has a key of type {type(key).__name__}, not a string")
        if not _record_value(value):
            raise UnsafePickleError(
                path,
                f"its entry {name!r} is a {type(value).__name__}"
                + (f" of {value.dtype}" if isinstance(value, np.ndarray) else "")
                + ", not a uint8 array, a list of integers or strings, a string or an integer",
            )
        if isinstance(value, list):
            out[name] = [v if type(v) is int else _plain_string(v) for v in value]
        elif isinstance(value, bytes):
            out[name] = _plain_string(value)
        else:
            out[name] = value
    return out


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_MEMO_STORE_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_NO_STACK_OPS = {"FRAME", "PROTO"}
_CHECKED: set[tuple] = set()
"""Files found clean, by path and stat identity: a configuration is parsed several times per run,
and scanning MNIST takes about 0.5 s; any change to the file changes its key."""


def check_array_pickle(path: str | Path, limit: int = MAX_PICKLE_BYTES) -> None:
    """Raise :class:`UnsafePickleError` if ``path`` references a global that
    :func:`load_array_pickle` refuses, is not a regular file or decompresses past ``limit``; reads
    the opcodes only, builds and calls nothing. A file that stops parsing is not refused here:
    the loader reads opcodes in the same order and fails at the same point.

    ``STACK_GLOBAL`` takes its module and name from the stack, so the scan follows which stack
    items are known strings: pushed as literals or fetched from memo slots that were stored from a
    known string (picklers reuse a memoized ``"numpy"``). Unless both items are known, or for
    extension codes and persistent ids, the file is refused."""
    path = Path(path)
    try:
        info = os.stat(path)
        key = (os.path.realpath(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _CHECKED:
        return
    strings: list[str] = []
    """The known strings on top of the stack, topmost last; cleared by any other push or pop."""
    memo: dict[int, str | None] = {}
    try:
        with _open_pickle(path, limit) as stream:
            for opcode, arg, _ in pickletools.genops(stream):
                name = opcode.name
                if name in _STRING_OPS:
                    strings.append(arg.decode("latin1") if isinstance(arg, bytes) else arg)
                    continue
                if name in _MEMO_STORE_OPS:
                    memo[len(memo) if name == "MEMOIZE" else arg] = strings[-1] if strings else None
                    continue
                if name in _MEMO_GET_OPS and isinstance(memo.get(arg), str):
                    strings.append(memo[arg])
                    continue
                if name in _NO_STACK_OPS:
                    continue
                if name in ("GLOBAL", "INST"):
                    module, _, attr = arg.partition(" ")
                    if _admitted(module, attr) is None:
                        raise _Refused(f"it references {module}.{attr}, which a pickle of numpy arrays never needs")
                elif name == "STACK_GLOBAL":
                    if len(strings) < 2 or _admitted(strings[-2], strings[-1]) is None:
                        what = f"{strings[-2]}.{strings[-1]}" if len(strings) >= 2 else "a global built at load time"
                        raise _Refused(f"it references {what}, which a pickle of numpy arrays never needs")
                elif name in ("EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"):
                    raise _Refused(f"it uses {name}, which a pickle of numpy arrays never needs")
                strings.clear()
    except _Refused as exc:
        raise UnsafePickleError(path, str(exc)) from None
    except _PARSE_ERRORS:
        return  # load_array_pickle reports it; it stops at the same opcode, before anything past it
    if key is not None:
        _CHECKED.add(key)
