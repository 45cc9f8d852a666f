"""`detoxedit.files`: atomic writes keep the old file on failure; users' text files fail in one line."""

from __future__ import annotations

import errno

import pytest

import detoxedit.files as files
from detoxedit.errors import DetoxeditError
from detoxedit.files import WriteError, atomic_write_text, check_writable_folder, read_text_file


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, '{"old": 1}')

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(WriteError, match="disk is full"):
        atomic_write_text(target, '{"new": 2}')
    assert target.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_non_utf8_byte_is_named_with_its_offset_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DetoxeditError, match=r"latin1.txt: not UTF-8 text: byte 0xe9 at offset 14 \(line 2\)"):
        read_text_file(path)


def test_missing_and_folder_inputs_are_one_line(tmp_path):
    with pytest.raises(DetoxeditError, match="prompt file not found"):
        read_text_file(tmp_path / "nope.txt", "prompt file")
    with pytest.raises(DetoxeditError, match="is a folder"):
        read_text_file(tmp_path)


def test_writable_folder_check(tmp_path, monkeypatch):
    assert check_writable_folder(tmp_path / "new" / "run").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="is a file"):
        check_writable_folder(tmp_path / "file")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(WriteError, match="read-only"):
        check_writable_folder(tmp_path / "other")
