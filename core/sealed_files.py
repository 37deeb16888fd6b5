"""Write and read files sealed in chunks with AES-256-GCM, so no plaintext touches the disk.

A sealed file is the magic header, an 8-byte random nonce prefix, then chunks of at most
:data:`CHUNK_SIZE` plaintext bytes, each stored as a 4-byte big-endian length and its
ciphertext.  Chunk ``i`` is sealed with the nonce ``prefix + i`` (4 bytes) and the
associated data ``context + i + final``, where ``final`` is 1 for the last chunk only.
So a reader detects a changed byte, chunks swapped or dropped, a file cut short or
extended, another key and another context.  The last chunk is always written, even
empty, and a file is the last chunk's owner: nothing may follow it.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.crypto import DecryptionError

MAGIC = b"LETHE-SEALED\x01"
#: Plaintext bytes per chunk: what a reader or writer holds in memory at once.
CHUNK_SIZE = 64 * 1024
_PREFIX_SIZE = 8
_TAG_SIZE = 16
_LENGTH = struct.Struct(">I")
_MAX_CHUNKS = 2**32


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + _LENGTH.pack(index)


def _associated_data(context: bytes, index: int, final: bool) -> bytes:
    return context + struct.pack(">IB", index, final)


def _cipher(key: bytes) -> AESGCM:
    if len(key) != 32:
        raise ValueError("a sealed file needs a 32-byte (AES-256) key")
    return AESGCM(key)


def _check_open(file: io.IOBase) -> None:
    if file.closed:
        raise ValueError("I/O operation on closed file")


class SealedWriter(io.RawIOBase):
    """A write-only binary file that seals what it is given; :meth:`close` commits it.

    Data goes to ``path`` + ``.part``, renamed to ``path`` only by :meth:`close`.  Leaving
    a ``with`` block through an exception, calling :meth:`discard`, or dropping the object
    unclosed deletes the partial file instead, so a cut-short file never looks complete.
    """

    def __init__(self, path: Path, key: bytes, context: bytes):
        self._cipher = _cipher(key)
        self.path = Path(path)
        self._part = self.path.with_name(self.path.name + ".part")
        self._context = bytes(context)
        self._prefix = os.urandom(_PREFIX_SIZE)
        self._index = 0
        self._size = 0
        self._buffer = bytearray()
        descriptor = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: BinaryIO = os.fdopen(descriptor, "wb")
        self._file.write(MAGIC + self._prefix)

    @property
    def size(self) -> int:
        """Return the number of plaintext bytes written, also after closing."""
        return self._size

    def writable(self) -> bool:
        """Return True: a sealed file is written front to back."""
        return True

    def tell(self) -> int:
        """Return the plaintext position, which ``zipfile`` needs for its offsets."""
        _check_open(self)
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Take all of ``data``; seal a chunk whenever a full one is followed by more."""
        _check_open(self)
        view = memoryview(data).cast("B")
        taken = 0
        while taken < len(view):
            if len(self._buffer) == CHUNK_SIZE:
                self._seal(self._buffer, final=False)
                self._buffer.clear()
            if not self._buffer and len(view) - taken > CHUNK_SIZE:
                # A whole chunk with more behind it: seal it without copying it first.
                self._seal(view[taken : taken + CHUNK_SIZE], final=False)
                taken += CHUNK_SIZE
                continue
            piece = view[taken : taken + CHUNK_SIZE - len(self._buffer)]
            self._buffer += piece
            taken += len(piece)
        self._size += len(view)
        return len(view)

    def flush(self) -> None:
        """Push the sealed chunks to the OS; the unsealed tail stays until :meth:`close`."""
        _check_open(self)
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        """Seal the final chunk, sync the file and rename it into place."""
        if self.closed:
            return
        try:
            self._seal(self._buffer, final=True)
            self._buffer.clear()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._part, self.path)
        except BaseException:
            self._remove_part()
            raise
        finally:
            super().close()

    def discard(self) -> None:
        """Delete the partial file; a committed file is left alone."""
        if self.closed:
            return
        self._buffer.clear()
        self._remove_part()
        super().close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()

    def __del__(self) -> None:
        # io's default would close(), committing a file that was abandoned half-written.
        if hasattr(self, "_file"):
            self.discard()

    def _seal(self, plaintext: bytes | bytearray | memoryview, *, final: bool) -> None:
        if self._index >= _MAX_CHUNKS:
            raise OverflowError("a sealed file holds at most 2**32 chunks")
        sealed = self._cipher.encrypt(
            _nonce(self._prefix, self._index),
            plaintext,
            _associated_data(self._context, self._index, final),
        )
        self._file.write(_LENGTH.pack(len(sealed)))
        self._file.write(sealed)
        self._index += 1

    def _remove_part(self) -> None:
        self._file.close()
        self._part.unlink(missing_ok=True)


def _read_chunk(file: BinaryIO, name: str) -> bytes | None:
    length = file.read(_LENGTH.size)
    if not length:
        return None
    if len(length) < _LENGTH.size:
        raise DecryptionError(f"{name} ends inside a chunk: it was cut short or extended")
    (size,) = _LENGTH.unpack(length)
    if not _TAG_SIZE <= size <= CHUNK_SIZE + _TAG_SIZE:
        raise DecryptionError(f"{name} has a chunk of impossible length: it was altered")
    sealed = file.read(size)
    if len(sealed) < size:
        raise DecryptionError(f"{name} ends inside a chunk: it was cut short or extended")
    return sealed


def open_sealed(path: Path, key: bytes, context: bytes) -> Iterator[bytes]:
    """Yield the plaintext chunks of a sealed file; raise DecryptionError if it is not intact.

    Each chunk is authentic when it is yielded, but whether the file is whole is known
    only at the end: act on the data once the iteration finished without an error.
    """
    cipher = _cipher(key)
    name = Path(path).name
    with open(path, "rb") as file:
        header = file.read(len(MAGIC) + _PREFIX_SIZE)
        if len(header) < len(MAGIC) + _PREFIX_SIZE or not header.startswith(MAGIC):
            raise DecryptionError(f"{name} is not a Lethe sealed file")
        prefix = header[len(MAGIC) :]
        sealed = _read_chunk(file, name)
        if sealed is None:
            raise DecryptionError(f"{name} holds no chunk: it was cut short")
        index = 0
        while sealed is not None:
            # Only the last chunk in the file may carry the final flag, so look ahead.
            following = _read_chunk(file, name)
            final = following is None
            try:
                yield cipher.decrypt(
                    _nonce(prefix, index), sealed, _associated_data(context, index, final)
                )
            except InvalidTag:
                raise DecryptionError(
                    f"{name}: chunk {index} does not authenticate: the file was altered, "
                    "cut short or extended, or the key or context is wrong"
                ) from None
            sealed, index = following, index + 1


class SealedReader(io.RawIOBase):
    """A read-only, forward-only binary file over the plaintext of a sealed file.

    It streams, so it cannot seek: to open a sealed ZIP with :mod:`zipfile`, copy it into
    a seekable file first (``io.BytesIO(reader.read())`` for a small one).
    """

    def __init__(self, path: Path, key: bytes, context: bytes):
        self._chunks = open_sealed(path, key, context)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        """Return True."""
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Fill ``buffer`` from the next authenticated chunk; return 0 at the end."""
        _check_open(self)
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        """Close the underlying file."""
        if hasattr(self, "_chunks"):
            self._chunks.close()
        super().close()
