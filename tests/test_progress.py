"""Progress on stderr: one line per compile stage with its time when stderr is not a terminal (logs, CI);
EDGEC_PROGRESS=0 silences everything, EDGEC_PROGRESS=1 adds bars and status messages (core/progress.py)."""
from __future__ import annotations

import re

import pytest

import edgec
from edgec.core import compiler, progress

STAGE_LINE = re.compile(r"^edgec: stage (\w+) +(done|failed) +(\d+\.\d\d) s  \(total +(\d+\.\d\d) s\)$")


def _stage_lines(err: str) -> list[re.Match]:
    return [m for m in map(STAGE_LINE.match, err.splitlines()) if m]


@pytest.mark.parametrize("flag, expected", [(None, "stages"), ("0", "off"), ("off", "off"), ("1", "full")])
def test_mode_when_stderr_is_not_a_terminal(monkeypatch, flag, expected):
    if flag is None:
        monkeypatch.delenv("EDGEC_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("EDGEC_PROGRESS", flag)
    assert progress.mode() == expected  # pytest's captured stderr is not a terminal
    assert progress.enabled() == (expected == "full")


def test_one_line_per_stage_with_its_time(monkeypatch, capsys, tmp_path, tiny_cnn_path, tiny_data):
    monkeypatch.delenv("EDGEC_PROGRESS", raising=False)
    art = edgec.compile(tiny_cnn_path, "onnxruntime", "fp32", validation=tiny_data, output=tmp_path / "out")
    err = capsys.readouterr().err
    lines = _stage_lines(err)
    names = [name for name, _ in compiler.PREPARE + compiler.IN_STAGING]
    assert [m.group(1) for m in lines] == names, err
    assert all(m.group(2) == "done" for m in lines)
    totals = [float(m.group(4)) for m in lines]
    assert totals == sorted(totals)
    # the same times as the manifest's stage_seconds (rounded for the line)
    for m in lines:
        if m.group(1) in art.manifest["stage_seconds"]:
            assert abs(float(m.group(3)) - art.manifest["stage_seconds"][m.group(1)]) < 0.006
    assert not any(line.startswith("edgec: TVM") or "calibrating" in line for line in err.splitlines())


def test_failed_stage_is_named(monkeypatch, capsys, tmp_path, tiny_cnn_path):
    monkeypatch.delenv("EDGEC_PROGRESS", raising=False)
    with pytest.raises(edgec.core.errors.EdgecError):
        edgec.compile(tiny_cnn_path, "onnxruntime", "int8", calibration=tmp_path / "missing.npz",
                      output=tmp_path / "out")
    lines = _stage_lines(capsys.readouterr().err)
    assert lines and lines[-1].group(2) == "failed" and lines[-1].group(1) == "data"


def test_silent_when_off(monkeypatch, capsys, tmp_path, tiny_cnn_path, tiny_data):
    monkeypatch.setenv("EDGEC_PROGRESS", "0")
    edgec.compile(tiny_cnn_path, "onnxruntime", "fp32", validation=tiny_data, output=tmp_path / "out")
    assert not _stage_lines(capsys.readouterr().err)
