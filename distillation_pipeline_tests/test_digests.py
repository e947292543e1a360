"""lib/digests: two processes writing the digest cache at once both keep what they hashed."""

import multiprocessing
from pathlib import Path

from distillation_pipeline.lib import digests
from distillation_pipeline.lib.hashing import file_sha256
from distillation_pipeline.lib.layout import Layout


def _remember_one_by_one(root: str, names: list[str]) -> None:
    layout = Layout.at(Path(root))
    for name in names:  # one cache write per file: many chances to interleave with the other
        path = layout.root / name
        digests.remember_digests(layout, {path: file_sha256(path)})


def test_concurrent_writers_lose_no_entry(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path)
    layout.state_dir.mkdir(parents=True)
    halves = [[f"a{i}.txt" for i in range(60)], [f"b{i}.txt" for i in range(60)]]
    for name in halves[0] + halves[1]:
        (tmp_path / name).write_text(name)
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_remember_one_by_one, args=(str(tmp_path), half)) for half in halves]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert [writer.exitcode for writer in writers] == [0, 0]
    stored = digests._read_json_object(digests._cache_file(layout))  # noqa: SLF001
    assert sorted(stored) == sorted(halves[0] + halves[1])
    assert all(entry[-1] == file_sha256(tmp_path / name) for name, entry in stored.items())
