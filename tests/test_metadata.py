"""MetaDataHandler against PYME's own metadata.json, and PYME's EM-gain fix-up."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rules.metadata import MetaDataHandler, fix_em_gain


@pytest.fixture
def fixture_md_path(pyme_fixtures):
    return pyme_fixtures / "series.pcs" / "metadata.json"


def test_round_trips_pyme_metadata(fixture_md_path):
    text = fixture_md_path.read_text()
    md = MetaDataHandler.from_JSON(text)
    again = MetaDataHandler.from_JSON(md.to_JSON())
    assert again == md and again.to_dict() == json.loads(text)
    assert md.to_JSON() == text.rstrip("\n")  # byte-for-byte PYME's layout: sorted, indent 2
    assert isinstance(md["Camera.ADOffset"], float) and isinstance(md["imageID"], int)
    assert md["Analysis.BGRange"] == [-30, 0] and md["voxelsize.units"] == "um"
    assert MetaDataHandler.load(fixture_md_path) == md


def test_pyme_and_dict_interfaces(fixture_md_path):
    md = MetaDataHandler.load(fixture_md_path)
    assert md.getEntry("Camera.ReadNoise") == 1.5
    with pytest.raises(KeyError, match="Nope.Missing"):
        md.getEntry("Nope.Missing")
    assert md.getOrDefault("Nope.Missing", 7) == 7
    md.setEntry("Analysis.StartAt", 30)
    md["Analysis.ROISize"] = 5
    assert "Analysis.ROISize" in md and md["Analysis.StartAt"] == 30
    assert md.getEntryNames() == sorted(md.keys()) == [k for k, _ in md.items()]
    other = MetaDataHandler({"Analysis.StartAt": 10, "Extra.Key": "x"})
    md.update(other)
    assert md["Analysis.StartAt"] == 10 and md["Extra.Key"] == "x"
    md.update({"Extra.Key": "y"})
    copy = MetaDataHandler()
    copy.copyEntriesFrom(md)
    assert copy == md and copy is not md
    with pytest.raises(TypeError):
        md.update(42)


def test_numpy_values_serialise_as_plain_json():
    md = MetaDataHandler({"a.int": np.int32(3), "a.float": np.float64(0.5),
                          "a.array": np.arange(3)})
    assert json.loads(md.to_JSON()) == {"a.int": 3, "a.float": 0.5, "a.array": [0, 1, 2]}


def test_bad_json_is_a_value_error():
    with pytest.raises(ValueError, match="object"):
        MetaDataHandler.from_JSON("[1, 2]")
    with pytest.raises(ValueError, match="not JSON"):
        MetaDataHandler.from_JSON("{oops")


@pytest.mark.parametrize("register, expected", [(200, 100), (150, 20), (0, 1.0), (77, None)])
def test_fix_em_gain_table(register, expected):
    md = fix_em_gain(MetaDataHandler({"Camera.EMGain": register}))
    assert md.getOrDefault("Camera.TrueEMGain") == expected


def test_fix_em_gain_keeps_a_true_gain_and_handles_the_simulator():
    kept = fix_em_gain(MetaDataHandler({"Camera.EMGain": 200, "Camera.TrueEMGain": 55}))
    assert kept["Camera.TrueEMGain"] == 55
    simulated = fix_em_gain(MetaDataHandler({"Camera.EMGain": 77,
                                             "Camera.Name": "Simulated Standard CCD Camera"}))
    assert simulated["Camera.TrueEMGain"] == 77
    assert "Camera.TrueEMGain" not in fix_em_gain(MetaDataHandler({"Camera.Name": "x"}))
