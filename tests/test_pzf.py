"""PZF frame files: PYME's fixture frames, round trips, unsupported modes and bad headers."""
from __future__ import annotations

import numpy as np
import pytest

from cluster.pzf import HEADER_DTYPE, PZFError, decode_frame, encode_frame, read_header


def _fixture_frames(pyme_fixtures):
    return sorted((pyme_fixtures / "series.pcs").glob("frame*.pzf"))


def test_fixture_frames_decode_and_reencode_byte_identically(pyme_fixtures):
    paths = _fixture_frames(pyme_fixtures)
    assert len(paths) == 8
    for i, path in enumerate(paths):
        raw = path.read_bytes()
        header = read_header(raw)
        assert (header.version, header.compression, header.quantization) == (3, 0, 0)
        assert header.frame_num == i and header.sequence_id == 424242
        assert header.shape == (64, 64, 1) and header.data_offset == 64
        frame = decode_frame(raw)
        assert frame.shape == (64, 64) and frame.dtype == np.uint16
        # background ~100 ADU offset + 50 photons / 0.5 e-/ADU; spots well above it
        assert 140 < np.median(frame) < 220 and frame.max() > 300
        again = encode_frame(frame, frame_num=header.frame_num, sequence_id=header.sequence_id,
                             timestamp=header.timestamp)
        assert again == raw


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_round_trip(dtype):
    rng = np.random.default_rng(1)
    data = (rng.random((37, 23)) * 200).astype(dtype)
    raw = encode_frame(data, frame_num=12, sequence_id=-5, timestamp=123456789)
    assert len(raw) == 64 + data.nbytes
    header = read_header(raw)
    assert (header.frame_num, header.sequence_id, header.timestamp) == (12, -5, 123456789)
    assert (header.width, header.height, header.depth) == (37, 23, 1)
    out = decode_frame(raw)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, data)


def test_round_trip_3d_and_big_endian_input():
    data = np.arange(4 * 3 * 2, dtype=">u2").reshape(4, 3, 2)
    out = decode_frame(encode_frame(data))
    assert out.shape == (4, 3, 2)
    np.testing.assert_array_equal(out, data)


def test_unsupported_dtype_and_shape():
    with pytest.raises(PZFError, match="uint8, uint16 and float32"):
        encode_frame(np.zeros((4, 4), np.int32))
    with pytest.raises(PZFError, match="2-D or 3-D"):
        encode_frame(np.zeros(4, np.uint16))


def _patched(raw: bytes, **fields) -> bytes:
    header = np.frombuffer(raw[:64], HEADER_DTYPE).copy()
    for name, value in fields.items():
        header[name] = value
    return header.tobytes() + raw[64:]


def test_chunked_frame_unsupported():
    raw = _patched(encode_frame(np.zeros((8, 8), np.uint16)), DataCompression=2)
    with pytest.raises(PZFError, match="chunked"):
        decode_frame(raw)


def test_bad_headers():
    good = encode_frame(np.ones((8, 8), np.uint16))
    with pytest.raises(PZFError, match="magic"):
        decode_frame(b"XX" + good[2:])
    with pytest.raises(PZFError, match="too short"):
        decode_frame(good[:20])
    with pytest.raises(PZFError, match="truncated"):
        decode_frame(good[:-2])
    with pytest.raises(PZFError, match="DataFormat"):
        decode_frame(_patched(good, DataFormat=7))
    with pytest.raises(PZFError, match="version"):
        decode_frame(_patched(good, Version=0))
    with pytest.raises(PZFError, match="DimOrder"):
        decode_frame(_patched(good, DimOrder=b"Z"))
    with pytest.raises(PZFError, match="DataOffset"):
        decode_frame(_patched(good, DataOffset=10))


def test_version_2_header_and_fortran_order():
    data = np.arange(6 * 4, dtype=np.uint16).reshape(6, 4)
    v3 = np.frombuffer(encode_frame(data)[:64], HEADER_DTYPE).copy()
    v3["Version"] = 2
    v3["DimOrder"] = b"F"
    raw = v3.tobytes()[:48] + data.tobytes(order="F")
    header = read_header(raw)
    assert header.version == 2 and header.data_offset == 48 and header.dim_order == "F"
    np.testing.assert_array_equal(decode_frame(raw), data)
    v3["Version"] = 1  # v1: DimOrder byte ignored, always C
    raw = v3.tobytes()[:48] + data.tobytes(order="C")
    np.testing.assert_array_equal(decode_frame(raw), data)


def test_sqrt_quantised_payload_decoded():
    rng = np.random.default_rng(2)
    values = rng.integers(100, 5000, size=(5, 7)).astype(np.uint16)
    offset, scale = 100.0, 0.5
    q = np.round(np.sqrt(values - offset) / scale).astype(np.uint8)
    header = np.frombuffer(encode_frame(values)[:64], HEADER_DTYPE).copy()
    header["DataQuantization"] = 1
    header["QuantOffset"], header["QuantScale"] = offset, scale
    out = decode_frame(header.tobytes() + q.tobytes())
    assert out.dtype == np.uint16
    # PYME's decoding: float32 arithmetic, then truncation to the frame dtype
    expected = ((q.astype(np.float32) * np.float32(scale)) ** 2 + np.float32(offset)).astype(np.uint16)
    np.testing.assert_array_equal(out, expected)
    # quantisation error of sqrt coding is ~ scale * sqrt(v)
    assert np.all(np.abs(out.astype(float) - values) <= scale * np.sqrt(values) + 1)


def test_sqrt_flag_on_unquantised_raw_payload_reads_raw():
    data = np.arange(16, dtype=np.uint16).reshape(4, 4) * 100
    raw = _patched(encode_frame(data), DataQuantization=1, QuantScale=1.0)
    np.testing.assert_array_equal(decode_frame(raw), data)
