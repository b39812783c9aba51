"""PZF frame files, PYME's per-frame format (``IO.PZFFormat``; pyme-protocol.md §5.2).

A PZF file is a packed little-endian header (64 bytes for version 3, 48 bytes for versions 1–2)
followed by the pixel payload.  We write version 3, raw (uncompressed), ``DimOrder`` ``C``; we read
versions 1–3, raw payloads with or without sqrt quantisation.  Huffman-compressed payloads (PYME's
default spooling setting) need the ``pymecompress`` extension (a fork of the Basic Compression
Library's Huffman coder) and raise :class:`PZFError` saying so; chunked Huffman is unsupported
(PYME's writer records a wrong chunk size for 2-D frames).
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["PZFError", "PZFHeader", "encode_frame", "decode_frame", "read_header",
           "HEADER_DTYPE", "HEADER_DTYPE_V2"]

#: Version-3 header (64 bytes).  Offsets as in pyme-protocol.md §5.2.
HEADER_DTYPE = np.dtype([
    ("ID", "S2"), ("Version", "u1"), ("DataFormat", "u1"), ("DataCompression", "u1"),
    ("DataQuantization", "u1"), ("DimOrder", "S1"), ("RESERVED0", "S1"),
    ("SequenceID", "<i8"), ("FrameNum", "<u4"), ("Width", "<u4"), ("Height", "<u4"),
    ("Depth", "<u4"), ("FrameTimestamp", "<u8"), ("QuantOffset", "<f4"), ("QuantScale", "<f4"),
    ("DataOffset", "<u4"), ("RESERVED1", "S12"),
])
#: Version 1–2 header: the first 48 bytes of the version-3 layout.
HEADER_DTYPE_V2 = np.dtype([(name, field[0]) for name, field in (HEADER_DTYPE.fields or {}).items()
                            if field[1] < 48])
assert HEADER_DTYPE.itemsize == 64 and HEADER_DTYPE_V2.itemsize == 48

MAGIC = b"BD"
VERSION = 3

FORMAT_UINT8, FORMAT_UINT16, FORMAT_FLOAT32 = 0, 1, 2
_DTYPES: dict[int, np.dtype] = {FORMAT_UINT8: np.dtype("u1"), FORMAT_UINT16: np.dtype("<u2"),
           FORMAT_FLOAT32: np.dtype("<f4")}
_FORMATS = {np.dtype("u1"): FORMAT_UINT8, np.dtype("u2"): FORMAT_UINT16,
            np.dtype("f4"): FORMAT_FLOAT32}

COMPRESSION_NONE, COMPRESSION_HUFFMAN, COMPRESSION_HUFFMAN_CHUNKED = 0, 1, 2
QUANT_NONE, QUANT_SQRT = 0, 1


class PZFError(ValueError):
    """A PZF file could not be read or written (bad header, truncated, unsupported mode)."""


@dataclasses.dataclass(frozen=True)
class PZFHeader:
    """The fields of a PZF header, with the payload dtype resolved."""

    version: int
    data_format: int
    compression: int
    quantization: int
    dim_order: str
    sequence_id: int
    frame_num: int
    width: int
    height: int
    depth: int
    timestamp: int
    quant_offset: float
    quant_scale: float
    data_offset: int

    @property
    def dtype(self) -> np.dtype:
        return _DTYPES[self.data_format]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.width, self.height, self.depth)


def read_header(raw: bytes) -> PZFHeader:
    """Parse and check the header of the PZF file in ``raw``."""
    raw = bytes(raw[:64]) if not isinstance(raw, bytes) else raw
    if len(raw) < HEADER_DTYPE_V2.itemsize:
        raise PZFError(f"PZF data too short for a header: {len(raw)} bytes")
    if raw[:2] != MAGIC:
        raise PZFError(f"not a PZF file: magic {raw[:2]!r}, expected {MAGIC!r}")
    version = raw[2]
    if version < 1:
        raise PZFError(f"bad PZF header version {version}")
    if version >= 3:
        if len(raw) < HEADER_DTYPE.itemsize:
            raise PZFError(f"PZF v{version} data too short for a 64-byte header: {len(raw)} bytes")
        h = np.frombuffer(raw, HEADER_DTYPE, count=1)[0]
        data_offset = int(h["DataOffset"])
        if data_offset < HEADER_DTYPE.itemsize:
            raise PZFError(f"bad PZF DataOffset {data_offset} (< 64)")
    else:
        h = np.frombuffer(raw, HEADER_DTYPE_V2, count=1)[0]
        data_offset = HEADER_DTYPE_V2.itemsize
    data_format = int(h["DataFormat"])
    if data_format not in _DTYPES:
        raise PZFError(f"unknown PZF DataFormat {data_format} (0 uint8, 1 uint16, 2 float32)")
    compression = int(h["DataCompression"])
    if compression not in (COMPRESSION_NONE, COMPRESSION_HUFFMAN, COMPRESSION_HUFFMAN_CHUNKED):
        raise PZFError(f"unknown PZF DataCompression {compression}")
    quantization = int(h["DataQuantization"])
    if quantization not in (QUANT_NONE, QUANT_SQRT):
        raise PZFError(f"unknown PZF DataQuantization {quantization}")
    dim_order = "C" if version < 2 else h["DimOrder"].decode("ascii", "replace")
    if dim_order not in ("C", "F"):
        raise PZFError(f"bad PZF DimOrder {dim_order!r} (expected 'C' or 'F')")
    return PZFHeader(
        version=version, data_format=data_format, compression=compression,
        quantization=quantization, dim_order=dim_order, sequence_id=int(h["SequenceID"]),
        frame_num=int(h["FrameNum"]), width=int(h["Width"]), height=int(h["Height"]),
        depth=int(h["Depth"]), timestamp=int(h["FrameTimestamp"]),
        quant_offset=float(h["QuantOffset"]), quant_scale=float(h["QuantScale"]),
        data_offset=data_offset)


def decode_frame(raw: bytes) -> np.ndarray:
    """Decode a PZF file to an array of shape ``(Width, Height)`` (``(W, H, D)`` when Depth > 1).

    Axis 0 is PYME's x.  Raises :class:`PZFError` for malformed data or unsupported compression.
    """
    raw = bytes(raw)
    header = read_header(raw)
    if header.compression == COMPRESSION_HUFFMAN:
        raise PZFError(
            "PZF frame is Huffman-compressed (DataCompression=1); decoding it needs PYME's "
            "'pymecompress' extension (a BCL Huffman decoder), which Spoolside does not include. "
            "Spool with compression off (raw PZF) to analyse with Spoolside.")
    if header.compression == COMPRESSION_HUFFMAN_CHUNKED:
        raise PZFError("chunked Huffman PZF frames (DataCompression=2) are not supported "
                       "(PYME's writer records wrong chunk sizes for 2-D frames)")
    n = header.width * header.height * header.depth
    payload = memoryview(raw)[header.data_offset:]
    full_size = n * header.dtype.itemsize
    if header.quantization == QUANT_SQRT and len(payload) == n and full_size != n:
        q = np.frombuffer(payload, np.uint8, count=n).astype(np.float64)
        values = (q * header.quant_scale) ** 2 + header.quant_offset
        if header.dtype.kind in "ui":
            info = np.iinfo(header.dtype)
            values = np.clip(np.round(values), info.min, info.max)
        flat = values.astype(header.dtype)
    else:
        if header.quantization == QUANT_SQRT:
            # PYME's raw writer sets the flag without quantising: the payload is plain data.
            logger.warning("PZF frame %d: sqrt-quantisation flag set on an unquantised raw "
                           "payload (PYME raw-writer quirk); reading it as raw", header.frame_num)
        if len(payload) < full_size:
            raise PZFError(f"PZF payload truncated: {len(payload)} bytes, expected {full_size} "
                           f"for {header.width}x{header.height}x{header.depth} {header.dtype}")
        flat = np.frombuffer(payload, header.dtype, count=n)
    data = flat.reshape(header.shape, order="F" if header.dim_order == "F" else "C")
    if header.depth == 1:
        data = data[:, :, 0]
    return np.array(data, dtype=header.dtype.newbyteorder("="), order="C")


def encode_frame(data: np.ndarray, frame_num: int = 0, sequence_id: int = 0,
                 timestamp: int = 0) -> bytes:
    """Encode a 2-D (or 3-D) uint8/uint16/float32 array as a raw version-3 PZF file.

    Axis 0 of ``data`` is PYME's x (the header's Width).
    """
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise PZFError(f"PZF frames are 2-D or 3-D arrays, got shape {data.shape}")
    key = data.dtype.newbyteorder("=")
    if key not in _FORMATS:
        raise PZFError(f"PZF supports uint8, uint16 and float32 frames, not {data.dtype}")
    data_format = _FORMATS[key]
    header = np.zeros(1, HEADER_DTYPE)
    header["ID"] = MAGIC
    header["Version"] = VERSION
    header["DataFormat"] = data_format
    header["DataCompression"] = COMPRESSION_NONE
    header["DataQuantization"] = QUANT_NONE
    header["DimOrder"] = b"C"
    header["SequenceID"] = sequence_id
    header["FrameNum"] = frame_num
    header["Width"], header["Height"], header["Depth"] = data.shape
    header["FrameTimestamp"] = timestamp
    header["DataOffset"] = HEADER_DTYPE.itemsize
    payload = np.ascontiguousarray(data, dtype=_DTYPES[data_format]).tobytes(order="C")
    return header.tobytes() + payload
