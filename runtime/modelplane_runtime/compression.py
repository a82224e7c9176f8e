"""Compressed request and response bodies, as Triton accepts and tritonclient sends them
(``request_compression_algorithm`` / ``response_compression_algorithm``): gzip and deflate
(zlib) per ``Content-Encoding`` and ``Accept-Encoding``."""

from __future__ import annotations

import enum
import zlib

from .errors import bad_input


class Encoding(enum.StrEnum):
    GZIP = "gzip"
    DEFLATE = "deflate"


# zlib's wbits: 16 + 15 reads and writes gzip framing, 15 zlib framing (HTTP's "deflate").
_WBITS = {Encoding.GZIP: 16 + zlib.MAX_WBITS, Encoding.DEFLATE: zlib.MAX_WBITS}
_CHUNK = 1 << 20
# Smaller responses go out as they are: compressing a few hundred bytes costs more time
# than it saves on the wire (most HTTP clients, httpx and curl --compressed among them,
# accept gzip by default).
MIN_COMPRESSED_BYTES = 1024


def _request_encoding(header: bytes) -> Encoding | None:
    name = header.decode("latin-1").strip().lower()
    if name in ("", "identity"):
        return None
    try:
        return Encoding(name)
    except ValueError:
        raise bad_input(
            f"unsupported Content-Encoding {name!r}: send gzip, deflate or an uncompressed body"
        ) from None


def decode_body(body: bytes, content_encoding: bytes | None, limit: int) -> bytes:
    """The body as sent before compression, refused once it would exceed ``limit`` bytes
    (a small compressed body can expand to gigabytes)."""
    encoding = _request_encoding(content_encoding or b"")
    if encoding is None:
        return body
    inflater = zlib.decompressobj(_WBITS[encoding])
    parts: list[bytes] = []
    size = 0
    data = body
    try:
        while data:
            part = inflater.decompress(data, _CHUNK)
            size += len(part)
            if size > limit:
                raise bad_input(
                    f"request body too large once decompressed: the limit is {limit} bytes"
                )
            parts.append(part)
            data = inflater.unconsumed_tail
        if not inflater.eof:
            raise bad_input(f"truncated {encoding} request body")
    except zlib.error as exc:
        raise bad_input(f"request body is not valid {encoding}: {exc}") from None
    return b"".join(parts)


def response_encoding(accept_encoding: bytes | None) -> Encoding | None:
    """gzip or deflate when the client accepts one (q > 0), gzip first; else none."""
    if not accept_encoding:
        return None
    accepted: dict[str, float] = {}
    for item in accept_encoding.decode("latin-1").lower().split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        accepted[name.strip()] = q
    for encoding in (Encoding.GZIP, Encoding.DEFLATE):
        if accepted.get(encoding.value, accepted.get("*", 0.0)) > 0:
            return encoding
    return None


def encode_body(body: bytes, encoding: Encoding) -> bytes:
    deflater = zlib.compressobj(6, zlib.DEFLATED, _WBITS[encoding])
    return deflater.compress(body) + deflater.flush()
