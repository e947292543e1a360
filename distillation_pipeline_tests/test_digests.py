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


def _grown_and_new_files(root: Path) -> tuple[Layout, list[Path]]:
    """A root whose cache knows 8 files; then 4 of them grow (2 with their old bytes kept, 2
    rewritten) and 4 new files appear."""
    layout = Layout.at(root)
    layout.state_dir.mkdir(parents=True)
    old = [root / f"old{i}.jsonl" for i in range(8)]
    for i, path in enumerate(old):
        path.write_bytes(b"row %d\n" % i * (1000 + i))
    digests.file_entries(layout, old)
    for i, path in enumerate(old[:4]):
        data = path.read_bytes()
        path.write_bytes((data if i % 2 == 0 else data.upper()) + b"appended\n" * (50 + i))
    new = [root / f"new{i}.jsonl" for i in range(4)]
    for i, path in enumerate(new):
        path.write_bytes(b"fresh %d\n" % i * 500)
    return layout, old + new


def test_files_hashed_two_at_a_time_give_what_one_at_a_time_gives(tmp_path: Path, monkeypatch) -> None:
    pools = []

    class CountedPool(digests.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs) -> None:
            pools.append(kwargs.get("max_workers"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(digests, "ThreadPoolExecutor", CountedPool)
    monkeypatch.setattr(digests, "THREADED_HASH_MIN_BYTES", 0)
    results = {}
    for cores in ("1", "2"):
        monkeypatch.setenv("DISTILL_CORES", cores)
        layout, files = _grown_and_new_files(tmp_path / cores)
        pools.clear()
        entries = digests.file_entries(layout, files)
        assert pools == ([2] if cores == "2" else [])  # threads only with a second core
        results[cores] = (
            {path.name: (rel, size, digest) for path, (rel, size, digest) in entries.items()},
            {path.name: (length, digest) for path, (_, length, digest) in digests.prefix_entries(layout, files).items()},
            digests._read_json_object(digests._cache_file(layout)),  # noqa: SLF001
        )
        assert all(digest == file_sha256(path) for path, (_, _, digest) in entries.items())
    one, two = results["1"], results["2"]
    assert one[0] == two[0] and one[1] == two[1]
    assert sorted(one[1]) == ["old0.jsonl", "old2.jsonl"]  # grown with their old bytes kept
    assert {k: v[-1] for k, v in one[2].items()} == {k: v[-1] for k, v in two[2].items()}
