"""Undoing a Content-Encoding as a stream, in bounded pieces.

``?decoded=1`` on a body endpoint must not hold a decoded body in memory: a stored body is at
most ``max_body_size`` bytes, but a small gzip, br or zstd body can expand a thousandfold (a
"decompression bomb"). Each decoder here is a generator from chunks to chunks that produces
at most about :data:`PIECE` bytes at a time, so memory stays bounded whatever the ratio;
the client reading the answer sets the pace.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, cast

try:
    import brotli as _brotli  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None
try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None  # type: ignore[assignment]

#: The most decoded bytes produced at once.
PIECE = 256 * 1024

Decoder = Callable[[Iterator[bytes]], Iterator[bytes]]


class DecodeError(ValueError):
    """The body is not what its Content-Encoding says, or the coding is unknown here."""


def _inflate(chunks: Iterator[bytes], wbits: int, members: bool) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(wbits)
    for data in chunks:
        while data or not decompressor.eof:
            if decompressor.eof:
                if not members:
                    return  # bytes after a deflate stream are ignored, as zlib does
                decompressor = zlib.decompressobj(wbits)  # the next gzip member
            try:
                out = decompressor.decompress(data, PIECE)
            except zlib.error as exc:
                raise DecodeError(str(exc)) from None
            if out:
                yield out
            data = decompressor.unused_data if decompressor.eof else decompressor.unconsumed_tail
            if not data and (decompressor.eof or len(out) < PIECE):
                break
    if not decompressor.eof:
        tail = decompressor.flush()  # a truncated body: what it holds so far
        if tail:
            yield tail


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    return _inflate(chunks, 16 + zlib.MAX_WBITS, members=True)


def _deflate(chunks: Iterator[bytes]) -> Iterator[bytes]:
    # zlib-wrapped as RFC 9110 says, or the raw stream some servers send: the header decides.
    first = next(chunks, b"")
    while len(first) < 2:
        more = next(chunks, None)
        if more is None:
            break
        first += more
    zlib_header = (len(first) >= 2 and first[0] & 0x0F == 8
                   and ((first[0] << 8) | first[1]) % 31 == 0)

    def all_chunks() -> Iterator[bytes]:
        yield first
        yield from chunks

    return _inflate(all_chunks(), zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS, False)


def _unbrotli(chunks: Iterator[bytes]) -> Iterator[bytes]:
    assert _brotli is not None
    decompressor = _brotli.Decompressor()
    for data in chunks:
        try:
            yield from _brotli_pieces(decompressor, data)
        except _brotli.error as exc:
            raise DecodeError(f"invalid br data: {exc}") from None


def _brotli_pieces(decompressor: Any, data: bytes) -> Iterator[bytes]:
    process = decompressor.process
    if hasattr(decompressor, "can_accept_more_data"):  # brotli >= 1.2 can bound its output
        # The limit is where the buffer stops growing (it doubles, so up to twice that); output
        # still pending comes from calls with no input, until one returns nothing.
        out = process(data, output_buffer_limit=PIECE // 2)
        while out:
            yield out
            if decompressor.is_finished():
                return
            out = process(b"", output_buffer_limit=PIECE // 2)
    else:  # older brotli: small inputs keep each output small in practice
        for start in range(0, len(data), 1024):
            yield process(data[start:start + 1024])


class _ChunkReader:
    """A ``read(n)`` file over an iterator of chunks, for zstandard's stream reader."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _unzstd(chunks: Iterator[bytes]) -> Iterator[bytes]:
    assert _zstd is not None
    source = cast(IO[bytes], _ChunkReader(chunks))  # zstandard only calls read()
    reader = _zstd.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    while True:
        try:
            piece = reader.read(PIECE)
        except _zstd.ZstdError as exc:
            raise DecodeError(f"invalid zstd data: {exc}") from None
        if not piece:
            return
        yield piece


DECODERS: dict[str, Decoder] = {"gzip": _gunzip, "x-gzip": _gunzip, "deflate": _deflate}
if _brotli is not None:
    DECODERS["br"] = _unbrotli
if _zstd is not None:
    DECODERS["zstd"] = _unzstd


def codings(header: str) -> list[str]:
    """The codings of a Content-Encoding value, in the order applied ("identity" dropped)."""
    return [c for c in (p.strip().lower() for p in header.split(",")) if c and c != "identity"]


def check(header: str) -> None:
    """Raise :class:`DecodeError` if some coding of ``header`` cannot be undone here."""
    for coding in codings(header):
        if coding not in DECODERS:
            extra = {"br": " (install brotli)", "zstd": " (install zstandard)"}.get(coding, "")
            raise DecodeError(f"the Content-Encoding {coding!r} cannot be decoded here{extra}")


def decode_stream(chunks: Iterable[bytes], header: str) -> Iterator[bytes]:
    """The decoded body, for the encoded chunks and the Content-Encoding ``header``."""
    check(header)
    stream = iter(chunks)
    for coding in reversed(codings(header)):
        stream = DECODERS[coding](stream)
    return stream
