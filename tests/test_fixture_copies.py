"""The repository's copy of PYME's reference files stays byte-identical to the shared originals."""
from __future__ import annotations

import filecmp
import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pyme"


def _files(root: pathlib.Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_fixture_copy_is_complete_in_the_repository(pyme_fixtures):
    names = _files(pyme_fixtures)
    for needed in ("README.md", "results.h5r", "series.pcs/metadata.json", "series_truth_nm.npy",
                   "series_huffman.pcs/frame00007.pzf", "series_quant.pcs/events.json",
                   "series_huffman_decoded_by_pyme.npy", "series_quant_decoded_by_pyme.npy",
                   "pzf_cases/cases.json", "pzf_cases/decoded.npz"):
        assert needed in names


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared beside this clone to compare with")
def test_fixture_copy_is_byte_identical_to_shared(pyme_fixtures):
    assert _files(pyme_fixtures) == _files(SHARED)
    for name in sorted(_files(SHARED)):
        assert filecmp.cmp(SHARED / name, pyme_fixtures / name, shallow=False), name
