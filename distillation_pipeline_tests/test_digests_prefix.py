"""lib/digests: a grown file's old prefix is proven while the file is hashed whole."""

import os
from pathlib import Path

from distillation_pipeline.lib.digests import file_entries, prefix_entries
from distillation_pipeline.lib.hashing import file_sha256_with_prefix, sha256_hex
from distillation_pipeline.lib.layout import Layout


def _layout(tmp_path: Path) -> Layout:
    layout = Layout.at(tmp_path)
    layout.state_dir.mkdir(parents=True)
    return layout


def test_an_appended_file_records_its_old_bytes_as_a_proven_prefix(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    log = tmp_path / "data" / "log.jsonl"
    log.write_bytes(b'{"a":1}\n')
    file_entries(layout, [log])
    assert prefix_entries(layout, [log]) == {}  # nothing grew yet
    with open(log, "ab") as handle:
        handle.write(b'{"a":2}\n')
    (_, size, digest) = file_entries(layout, [log])[log]
    assert digest == sha256_hex(b'{"a":1}\n{"a":2}\n') and size == 16
    stat, length, prefix = prefix_entries(layout, [log])[log]
    assert (length, prefix) == (8, sha256_hex(b'{"a":1}\n'))
    now = os.stat(log)
    assert stat == (now.st_size, now.st_mtime_ns, now.st_ino, now.st_ctime_ns)


def test_a_grown_file_whose_old_bytes_changed_proves_no_prefix(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    log = tmp_path / "data" / "log.jsonl"
    log.write_bytes(b'{"a":1}\n')
    file_entries(layout, [log])
    log.write_bytes(b'{"a":9}\n{"a":2}\n')  # rewritten, not appended
    file_entries(layout, [log])
    assert prefix_entries(layout, [log]) == {}


def test_a_recorded_prefix_is_not_served_once_the_file_changes(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    log = tmp_path / "data" / "log.jsonl"
    log.write_bytes(b"x\n")
    file_entries(layout, [log])
    with open(log, "ab") as handle:
        handle.write(b"y\n")
    file_entries(layout, [log])
    assert log in prefix_entries(layout, [log])
    with open(log, "ab") as handle:
        handle.write(b"z\n")
    assert prefix_entries(layout, [log]) == {}


def test_file_sha256_with_prefix(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(3 << 20)
    path.write_bytes(data)
    for length in (0, 1, 1 << 20, (1 << 20) + 7, len(data)):
        assert file_sha256_with_prefix(path, length, chunk_size=1 << 20) == (sha256_hex(data[:length]), sha256_hex(data))
    assert file_sha256_with_prefix(path, len(data) + 1) == (None, sha256_hex(data))
