"""Export files are replaced at once or not at all: a writer that raises leaves the target and no temporary file."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import pytest

from sae_assets.core.common.atomic_file import ExportError, atomic_file, stage_file, write_atomic


def test_a_clean_block_replaces_the_target_and_leaves_only_it(tmp_path: Path) -> None:
    target = tmp_path / "labels.json"
    target.write_text("old")
    with atomic_file(target) as out:
        out.write("new ✓")
        assert target.read_text() == "old"  # nothing shows before the block ends
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # readable by a web server, not mkstemp's 0600


def test_a_writer_that_raises_leaves_the_target_untouched_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "examples.jsonl"
    target.write_bytes(b"before")
    with pytest.raises(RuntimeError, match="labeller down"), atomic_file(target, "wb") as out:
        out.write(b"half a file")
        raise RuntimeError("labeller down")
    assert target.read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == ["examples.jsonl"]

    fresh = tmp_path / "new.csv"
    with pytest.raises(KeyboardInterrupt), atomic_file(fresh) as out:
        out.write("a,b\n")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["examples.jsonl"]


def test_staged_data_shows_only_when_committed(tmp_path: Path) -> None:
    target = tmp_path / "layer-1.json"
    staged = stage_file(target, b"{}")
    assert not target.exists() and staged.temp.read_bytes() == b"{}"
    assert staged.commit() == target and target.read_bytes() == b"{}" and not staged.temp.exists()
    stage_file(target, "[]").discard()
    assert [p.name for p in tmp_path.iterdir()] == ["layer-1.json"] and target.read_text() == "{}"
    assert write_atomic(target, "[1]") == target and target.read_text() == "[1]"


def test_an_unwritable_directory_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        write_atomic(tmp_path / "missing" / "x.json", "{}")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ExportError, match="is not a directory"), atomic_file(not_a_dir / "x.csv"):
        pass

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    target = tmp_path / "out"
    target.mkdir()
    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", refuse)
        with pytest.raises(ExportError, match="is not writable.*Permission denied"):
            write_atomic(target / "layer-1.json", b"{}")
    with monkeypatch.context() as m:  # the rename fails: the temporary file is removed
        m.setattr("os.replace", refuse)
        with pytest.raises(ExportError, match="could not write"):
            write_atomic(target / "layer-1.json", b"{}")
        with pytest.raises(ExportError, match="could not write"), atomic_file(target / "report.csv") as out:
            out.write("a,b\n")
    assert list(target.iterdir()) == []
