"""The floor: the least any collector must do with the same bytes, timed in this process.

Every source line is parsed with orjson (the fastest JSON parser we have), hashed the way
``sig_hash`` is (sha256 of ``lib.hashing.canonical_json``) and written back out: the hex digest,
a tab, the canonical line. No validation, no partitioning, no scoring, no exports: the pipeline's time divided by
this one is a machine-independent measure of what all the rest costs.
"""

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from distillation_pipeline.lib.hashing import canonical_json
from distillation_pipeline.lib.jsonl import BOM

_FLUSH_BYTES = 1 << 20


@dataclass(frozen=True)
class FloorResult:
    seconds: float
    cpu_s: float
    lines: int  # non-blank source lines
    parsed: int  # lines that parsed, were hashed and written
    unparsable: int
    bytes_in: int
    bytes_out: int

    def to_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 3),
            "cpu_s": round(self.cpu_s, 3),
            "lines": self.lines,
            "parsed": self.parsed,
            "unparsable": self.unparsable,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "lines_per_s": round(self.lines / self.seconds) if self.seconds else 0,
        }


def measure_floor(sources: list[Path], out_dir: Path) -> FloorResult:
    """Parse, hash and rewrite every line of ``sources`` into ``out_dir`` (removed afterwards)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    lines = parsed = unparsable = bytes_in = bytes_out = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for source in sources:
        buffer = bytearray()
        with open(source, "rb") as handle, open(out_dir / source.name, "wb") as out:
            for raw in handle:
                bytes_in += len(raw)
                line = raw.strip()
                if line.startswith(BOM):
                    line = line[len(BOM) :]
                if not line:
                    continue
                lines += 1
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    unparsable += 1
                    continue
                canonical = canonical_json(row)
                buffer += hashlib.sha256(canonical).hexdigest().encode()
                buffer += b"\t"
                buffer += canonical
                buffer += b"\n"
                parsed += 1
                if len(buffer) >= _FLUSH_BYTES:
                    out.write(buffer)
                    bytes_out += len(buffer)
                    buffer.clear()
            out.write(buffer)
            bytes_out += len(buffer)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    shutil.rmtree(out_dir, ignore_errors=True)
    return FloorResult(seconds, cpu_s, lines, parsed, unparsable, bytes_in, bytes_out)
