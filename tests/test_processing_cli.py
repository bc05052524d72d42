"""`cmr-clip inspect`: the summary, the montage and overrides from the command line."""

from __future__ import annotations

import pytest

from cmr_clip.cli import main
from processing_factory import write_study


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "study"
    write_study(root, style="ge", n_slices=4, n_phases=5, seed=11)
    return root


def test_inspect_prints_summary_and_writes_montage(study_dir, tmp_path, capsys):
    png = tmp_path / "montage.png"
    assert main(["inspect", str(study_dir), "--layout", "reference", "--montage", str(png)]) == 0
    out = capsys.readouterr().out
    assert "cine/sax" in out and "Layout 'reference' uses 64 frames" in out and "merged from series" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_applies_overrides(study_dir, capsys):
    assert main(["inspect", str(study_dir), "--override", "de_4ch=other/other", "--num-frames", "8"]) == 0
    out = capsys.readouterr().out
    assert "classification overridden by the user" in out and "Layout 'default' uses 8 frames" in out


def test_inspect_reports_a_bad_path_as_an_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2  # nothing done
    assert "no readable DICOM image" in capsys.readouterr().err
