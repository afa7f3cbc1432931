"""A short run of the server fuzzer (``python tests/fuzz_server.py`` runs the long one)."""

from __future__ import annotations

from pathlib import Path

from fuzz_server import fuzz


async def test_mutated_frames_never_crash_the_server_or_poison_a_room(tmp_path: Path) -> None:
    report = await fuzz(frames=3000, connections=6, seed=7, directory=tmp_path)
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert report.frames >= 3000
    assert not report.server_died
    assert report.internal_errors == 0, report.closes
    assert report.tracebacks == 0, log[-3000:]
    assert report.unreadable_rooms == []
