"""PZF codecs against files written by PYME itself: every case decodes to exactly PYME's array, and
our Huffman (and quantising) writer produces PYME's bytes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rules.huffman import HuffmanError, huffman_decode, huffman_encode
from rules.pzf import (
    COMPRESSION_HUFFMAN,
    HEADER_DTYPE,
    QUANT_SQRT,
    PZFError,
    decode_frame,
    encode_frame,
    quantise,
    read_header,
)


@pytest.fixture(scope="module")
def cases(pyme_fixtures):
    folder = pyme_fixtures / "pzf_cases"
    return folder, json.loads((folder / "cases.json").read_text())["cases"], \
        dict(np.load(folder / "decoded.npz"))


def _as_pyme(frame: np.ndarray) -> np.ndarray:
    """Our decoded frame in PYME's (Width, Height, Depth) shape."""
    return frame[:, :, None] if frame.ndim == 2 else frame


def test_every_case_pyme_reads_decodes_to_exactly_pymes_array(cases):
    folder, table, arrays = cases
    checked = 0
    for name, case in table.items():
        expected = arrays.get(f"decoded_{name}")
        if expected is None:  # PYME cannot read this file back itself
            continue
        raw = (folder / case["file"]).read_bytes()
        header = read_header(raw)
        assert (header.compression, header.quantization, header.dim_order) == (
            case["header"]["DataCompression"], case["header"]["DataQuantization"],
            case["header"]["DimOrder"])
        out = _as_pyme(decode_frame(raw))
        assert out.dtype == expected.dtype, name
        assert out.shape == expected.shape, name
        np.testing.assert_array_equal(out, expected, err_msg=name)
        checked += 1
    assert checked == 16
    # the two quirks of PYME's quantised files, as PYME decodes them
    edges = _as_pyme(decode_frame((folder / "quant_huff_u16_edges.pzf").read_bytes()))[:, :, 0]
    assert edges[1].tolist() == [356, 1000, 30029, 60125, 65125, 65125, 65125, 65125]
    saturated = decode_frame((folder / "quant_huff_u16_saturation_1x20.pzf").read_bytes())
    assert saturated.ravel().tolist() == [65125] * 16 + [100] * 4


def test_quantisation_flag_on_a_raw_payload_is_read_as_the_raw_data(cases):
    # PYME's own reader fails on this file its raw writer produced; the data in it is plain uint16
    folder, _, arrays = cases
    raw = (folder / "raw_u16_63x65_quantflag.pzf").read_bytes()
    np.testing.assert_array_equal(decode_frame(raw), arrays["input_raw_u16_63x65_quantflag"])


@pytest.mark.parametrize("series", ["series_huffman", "series_quant"])
def test_compressed_series_decode_to_pymes_frames(pyme_fixtures, series):
    expected = np.load(pyme_fixtures / f"{series}_decoded_by_pyme.npy")
    frames = sorted((pyme_fixtures / f"{series}.pcs").glob("frame*.pzf"))
    assert len(frames) == len(expected) == 8
    for path, want in zip(frames, expected):
        out = decode_frame(path.read_bytes())
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, want)
    if series == "series_huffman":  # lossless: the raw series' frames
        raw = [decode_frame(p.read_bytes()) for p in sorted((pyme_fixtures / "series.pcs").glob("*.pzf"))]
        np.testing.assert_array_equal(np.stack(raw), expected)


def test_our_writer_produces_pymes_bytes(cases):
    """Huffman and quantised Huffman frames (C order) come out byte for byte as PYME wrote them."""
    folder, table, arrays = cases
    compared = 0
    for name, case in table.items():
        h = case["header"]
        if (h["DataCompression"] != COMPRESSION_HUFFMAN or h["DimOrder"] != "C"
                or "saturation" in name):
            continue
        raw = (folder / case["file"]).read_bytes()
        ours = encode_frame(arrays[f"input_{name}"], frame_num=h["FrameNum"],
                            sequence_id=h["SequenceID"], compression=h["DataCompression"],
                            quantization=h["DataQuantization"], quant_offset=h["QuantOffset"],
                            quant_scale=h["QuantScale"])
        assert ours == raw, name
        compared += 1
    assert compared == 9


def test_our_quantiser_saturates_where_pymes_wraps(cases):
    folder, _, arrays = cases
    data = arrays["input_quant_huff_u16_saturation_1x20"]
    assert quantise(data, 100.0, 1.0).ravel().tolist() == [255] * 20
    raw = encode_frame(data, compression=COMPRESSION_HUFFMAN, quantization=QUANT_SQRT,
                       quant_offset=100.0, quant_scale=1.0)
    assert decode_frame(raw).ravel().tolist() == [65125] * 20


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(63, 65), (1, 1), (16, 12, 3), (200, 7)])
def test_huffman_round_trip(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    data = (rng.poisson(30, shape) * 3 + 100).astype(dtype)
    raw = encode_frame(data, frame_num=3, sequence_id=9, compression=COMPRESSION_HUFFMAN)
    header = read_header(raw)
    assert (header.compression, header.quantization, header.shape[:2]) == (1, 0, shape[:2])
    out = decode_frame(raw)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_array_equal(out, data)


def test_quantised_round_trip_within_the_quantisation_error():
    rng = np.random.default_rng(4)
    data = (rng.poisson(200, (64, 48)) + 100).astype(np.uint16)
    raw = encode_frame(data, compression=COMPRESSION_HUFFMAN, quantization=QUANT_SQRT,
                       quant_offset=100.0, quant_scale=0.5)
    assert len(raw) < 64 + data.size  # about a byte a pixel at most, Huffman-coded
    out = decode_frame(raw).astype(float)
    signal = data.astype(float) - 100
    assert np.all(np.abs(out - data) <= 0.5 * np.sqrt(signal) + 1)


def test_writer_refuses_what_pyme_cannot_write():
    with pytest.raises(PZFError, match="uint16 frames with Huffman"):
        encode_frame(np.zeros((4, 4), np.uint8), compression=COMPRESSION_HUFFMAN,
                     quantization=QUANT_SQRT, quant_offset=0, quant_scale=1)
    with pytest.raises(PZFError, match="uint16 frames with Huffman"):
        encode_frame(np.zeros((4, 4), np.uint16), quantization=QUANT_SQRT)
    with pytest.raises(PZFError, match="cannot be written"):
        encode_frame(np.zeros((4, 4), np.uint16), compression=2)


def test_damaged_huffman_frame_names_the_codec_and_what_to_do(pyme_fixtures):
    raw = (pyme_fixtures / "series_huffman.pcs" / "frame00003.pzf").read_bytes()
    with pytest.raises(PZFError, match=r"Huffman-coded \(DataCompression=1\).*spool it again"):
        decode_frame(raw[:len(raw) // 2])
    header = np.frombuffer(raw[:64], HEADER_DTYPE).copy()
    header["DataCompression"] = 2
    with pytest.raises(PZFError, match=r"chunked Huffman .*DataCompression=2.*Spool with plain"):
        decode_frame(header.tobytes() + raw[64:])


def test_huffman_streams_with_long_codes_and_one_symbol():
    rng = np.random.default_rng(7)
    weights = 0.5 ** np.arange(1, 31)
    data = rng.choice(np.arange(30, dtype=np.uint8) * 7, size=40_000, p=weights / weights.sum())
    stream = huffman_encode(data)
    np.testing.assert_array_equal(huffman_decode(stream, data.size), data)
    with pytest.raises(HuffmanError, match="ends before"):
        huffman_decode(stream[:-1], data.size)
    assert huffman_decode(huffman_encode(b"\x05" * 10), 10).tolist() == [5] * 10
    with pytest.raises(HuffmanError, match="tree"):
        huffman_decode(b"\x00", 4)
