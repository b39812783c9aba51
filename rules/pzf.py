"""PZF frame files, PYME's per-frame format (``IO.PZFFormat``; pyme-protocol.md §5.2).

A PZF file is a packed little-endian header (64 bytes for version 3, 48 bytes for versions 1–2)
followed by the pixel payload.  We read versions 1–3 with every codec PYME writes: raw or Huffman
(``DataCompression`` 0/1, :mod:`rules.huffman`), with or without sqrt quantisation, ``DimOrder``
``C`` or ``F``, decoding to exactly the arrays PYME's reader returns.  We write version 3,
``DimOrder`` ``C``: raw (the default here), Huffman (what PYME Acquire spools by default) or
Huffman with sqrt quantisation.  Chunked Huffman (2) is refused: PYME's writer cannot write it.

Sqrt quantisation (uint16 only): ``q = round(sqrt(max(v - offset, 0)) / scale)`` stored as uint8;
decoded as ``(q * scale)**2 + offset`` computed in float32 and cast to the frame dtype by truncation,
as PYME does.  PYME's encoder saturates ``q`` at 255 in whole blocks of 16 pixels but wraps it to 0 in
the last ``n % 16``; ours saturates everywhere.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["PZFError", "PZFHeader", "encode_frame", "decode_frame", "read_header", "quantise",
           "HEADER_DTYPE", "HEADER_DTYPE_V2", "COMPRESSION_NONE", "COMPRESSION_HUFFMAN", "QUANT_NONE",
           "QUANT_SQRT"]

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


def _dequantise(q: np.ndarray, header: PZFHeader) -> np.ndarray:
    values = (q.astype(np.float32) * np.float32(header.quant_scale)) ** 2
    return (values + np.float32(header.quant_offset)).astype(header.dtype)


def quantise(data: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """Sqrt-quantise uint16 ``data`` to uint8 ``round(sqrt(max(v - offset, 0)) / scale)``, saturated."""
    if scale <= 0:
        raise PZFError(f"quantisation scale must be > 0, got {scale}")
    root = np.sqrt(np.maximum(data.astype(np.float32) - np.float32(offset), 0)) / np.float32(scale)
    return np.minimum(np.rint(root), 255).astype(np.uint8)


def _payload(raw: bytes, header: PZFHeader, n: int) -> np.ndarray:
    """The frame's ``n`` values as a flat array in file order (dequantised when quantised)."""
    payload = memoryview(raw)[header.data_offset:]
    if header.compression == COMPRESSION_HUFFMAN:
        from rules.huffman import HuffmanError, huffman_decode  # numba: imported when first needed

        quantised = header.quantization == QUANT_SQRT
        size = n if quantised else n * header.dtype.itemsize
        try:
            flat = huffman_decode(payload, size)
        except HuffmanError as exc:
            raise PZFError(f"PZF frame {header.frame_num} is Huffman-coded (DataCompression=1) and "
                           f"cannot be decoded: {exc}. The file is damaged or incomplete: copy or "
                           f"spool it again.") from exc
        return _dequantise(flat, header) if quantised else flat.view(header.dtype)
    full_size = n * header.dtype.itemsize
    if header.quantization == QUANT_SQRT and len(payload) == n and full_size != n:
        return _dequantise(np.frombuffer(payload, np.uint8, count=n), header)
    if header.quantization == QUANT_SQRT:
        # PYME's raw writer sets the flag without quantising: the payload is plain data.
        logger.warning("PZF frame %d: sqrt-quantisation flag set on an unquantised raw "
                       "payload (PYME raw-writer quirk); reading it as raw", header.frame_num)
    if len(payload) < full_size:
        raise PZFError(f"PZF payload truncated: {len(payload)} bytes, expected {full_size} "
                       f"for {header.width}x{header.height}x{header.depth} {header.dtype}")
    return np.frombuffer(payload, header.dtype, count=n)


def decode_frame(raw: bytes) -> np.ndarray:
    """Decode a PZF file to an array of shape ``(Width, Height)`` (``(W, H, D)`` when Depth > 1).

    Axis 0 is PYME's x.  Raises :class:`PZFError` for malformed data or an unsupported codec.
    """
    raw = bytes(raw)
    header = read_header(raw)
    if header.compression == COMPRESSION_HUFFMAN_CHUNKED:
        raise PZFError(
            f"PZF frame {header.frame_num} uses chunked Huffman coding (DataCompression=2), which "
            "cannot be decoded: PYME's own writer stores wrong chunk sizes in it and PYME cannot "
            "read it back either. Spool with plain Huffman compression (PYME Acquire's default) "
            "or none.")
    n = header.width * header.height * header.depth
    data = _payload(raw, header, n).reshape(header.shape, order="F" if header.dim_order == "F" else "C")
    if header.depth == 1:
        data = data[:, :, 0]
    return np.array(data, dtype=header.dtype.newbyteorder("="), order="C")


def encode_frame(data: np.ndarray, frame_num: int = 0, sequence_id: int = 0,
                 timestamp: int = 0, *, compression: int = COMPRESSION_NONE,
                 quantization: int = QUANT_NONE, quant_offset: float = 0.0,
                 quant_scale: float = 1.0) -> bytes:
    """Encode a 2-D (or 3-D) uint8/uint16/float32 array as a version-3 PZF file.

    Axis 0 of ``data`` is PYME's x (the header's Width).  ``compression`` is
    :data:`COMPRESSION_NONE` or :data:`COMPRESSION_HUFFMAN`; ``quantization`` :data:`QUANT_SQRT`
    (uint16 with Huffman only, as in PYME) stores ``quantise(data, quant_offset, quant_scale)``.
    """
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise PZFError(f"PZF frames are 2-D or 3-D arrays, got shape {data.shape}")
    key = data.dtype.newbyteorder("=")
    if key not in _FORMATS:
        raise PZFError(f"PZF supports uint8, uint16 and float32 frames, not {data.dtype}")
    if compression not in (COMPRESSION_NONE, COMPRESSION_HUFFMAN):
        raise PZFError(f"PZF compression {compression} cannot be written (0 raw, 1 Huffman)")
    if quantization not in (QUANT_NONE, QUANT_SQRT):
        raise PZFError(f"unknown PZF quantisation {quantization} (0 none, 1 sqrt)")
    data_format = _FORMATS[key]
    if quantization == QUANT_SQRT and (compression != COMPRESSION_HUFFMAN
                                       or data_format != FORMAT_UINT16):
        raise PZFError("sqrt quantisation is written for uint16 frames with Huffman compression only")
    header = np.zeros(1, HEADER_DTYPE)
    header["ID"] = MAGIC
    header["Version"] = VERSION
    header["DataFormat"] = data_format
    header["DataCompression"] = compression
    header["DataQuantization"] = quantization
    header["DimOrder"] = b"C"
    header["SequenceID"] = sequence_id
    header["FrameNum"] = frame_num
    header["Width"], header["Height"], header["Depth"] = data.shape
    header["FrameTimestamp"] = timestamp
    if quantization == QUANT_SQRT:
        header["QuantOffset"], header["QuantScale"] = quant_offset, quant_scale
    header["DataOffset"] = HEADER_DTYPE.itemsize
    values = np.ascontiguousarray(data, dtype=_DTYPES[data_format])
    if quantization == QUANT_SQRT:
        values = quantise(values, quant_offset, quant_scale)
    if compression == COMPRESSION_NONE:
        payload = values.tobytes()
    else:
        from rules.huffman import huffman_encode

        payload = huffman_encode(values)
    return header.tobytes() + payload
