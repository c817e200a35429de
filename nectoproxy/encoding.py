"""Content-Encoding codecs for message bodies (gzip, deflate; br and zstd when brotli and
zstandard are installed)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

try:  # brotli is optional: `pip install nectoproxy[brotli]`
    import brotli as _brotli  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None

try:  # zstandard is optional: `pip install nectoproxy[zstd]`
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None  # type: ignore[assignment]


def _inflate(data: bytes) -> bytes:
    # "deflate" is zlib-wrapped by the RFC, but some servers send raw deflate streams.
    try:
        return zlib.decompress(data)
    except zlib.error:
        return zlib.decompress(data, -zlib.MAX_WBITS)


_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "identity": lambda data: data,
    "gzip": gzip.decompress,
    "x-gzip": gzip.decompress,
    "deflate": _inflate,
}
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "identity": lambda data: data,
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "x-gzip": lambda data: gzip.compress(data, mtime=0),
    "deflate": zlib.compress,
}
if _brotli is not None:
    _DECODERS["br"] = _brotli.decompress
    _ENCODERS["br"] = _brotli.compress
if _zstd is not None:
    # A decompression object, since zstandard.decompress() refuses frames that do not state
    # their size (what a streaming encoder writes); read_across_frames for concatenations.
    _DECODERS["zstd"] = lambda data: _zstd.ZstdDecompressor().decompressobj(
        read_across_frames=True).decompress(data)
    _ENCODERS["zstd"] = _zstd.compress


def _codings(header: str) -> list[str]:
    return [c.strip().lower() for c in header.split(",") if c.strip()]


def can_decode(header: str) -> bool:
    """True if every coding named in a Content-Encoding header can be decoded here."""
    return all(c in _DECODERS for c in _codings(header))


def can_encode(header: str) -> bool:
    """True if every coding named in a Content-Encoding header can be applied here."""
    return all(c in _ENCODERS for c in _codings(header))


def decode(data: bytes, header: str) -> bytes:
    """Undo a Content-Encoding (codings are applied in order, so undo them in reverse)."""
    for coding in reversed(_codings(header)):
        try:
            decoder = _DECODERS[coding]
        except KeyError:
            raise ValueError(f"unsupported Content-Encoding {coding!r}") from None
        data = decoder(data)
    return data


def encode(data: bytes, header: str) -> bytes:
    """Apply a Content-Encoding."""
    for coding in _codings(header):
        try:
            encoder = _ENCODERS[coding]
        except KeyError:
            raise ValueError(f"unsupported Content-Encoding {coding!r}") from None
        data = encoder(data)
    return data
