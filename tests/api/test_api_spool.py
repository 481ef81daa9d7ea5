"""The disk spool on its own: order, segments, cursor, checksums, cap, slot ownership."""

from __future__ import annotations

from pathlib import Path

from api.spool import MAGIC, Spool


def _fill(spool: Spool, n: int, start: int = 0) -> list[bytes]:
    keys = []
    for i in range(start, start + n):
        key = i.to_bytes(4, "big")
        assert spool.append("events", key, b"value-%d" % i * 3)
        keys.append(key)
    return keys


def _drain(spool: Spool, chunk: int = 7) -> list[bytes]:
    out = []
    while True:
        records, token = spool.read(chunk)
        if not records:
            return out
        out += [k for _, k, _ in records]
        spool.commit(token)


def test_records_come_back_in_order_across_segments_and_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=10_000_000, segment_bytes=4096).open()
    first: list[bytes] = []
    for start in range(0, 300, 30):  # segments roll at a flush once over segment_bytes
        first += _fill(spool, 30, start=start)
        spool.flush()
    second = _fill(spool, 200, start=300)
    spool.close()
    assert len(list((tmp_path / "s").glob("*.seg"))) > 3
    reopened = Spool(tmp_path / "s", max_bytes=10_000_000, segment_bytes=4096).open()
    records, token = reopened.read(10)
    assert [k for _, k, _ in records] == first[:10] and records[0][0] == "events"
    assert records[0][2] == b"value-0value-0value-0"
    reopened.commit(token)
    reopened.close()  # the cursor survives a restart: the first 10 are not replayed again
    again = Spool(tmp_path / "s", max_bytes=10_000_000, segment_bytes=4096).open()
    assert _drain(again) == (first + second)[10:]
    assert again.empty and not list((tmp_path / "s").glob("*.seg"))
    again.close()


def test_appends_during_replay_keep_their_place(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=10_000_000).open()
    a = _fill(spool, 20)
    records, token = spool.read(5)
    spool.commit(token)
    b = _fill(spool, 20, start=20)
    assert [k for _, k, _ in records] + _drain(spool) == a + b
    spool.close()


def test_a_corrupt_record_is_skipped_counted_and_the_rest_recovered(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=10_000_000).open()
    keys = _fill(spool, 50)
    spool.close()
    (seg,) = (tmp_path / "s").glob("*.seg")
    data = bytearray(seg.read_bytes())
    starts = [i for i in range(len(data)) if data.startswith(MAGIC, i)]
    assert len(starts) == 50
    data[starts[10] + 20] ^= 0xFF  # a payload byte of record 10: checksum mismatch
    data[starts[30] + 5] ^= 0xFF  # the length field of record 30: framing broken
    seg.write_bytes(bytes(data))
    reopened = Spool(tmp_path / "s", max_bytes=10_000_000).open()
    got = _drain(reopened)
    assert got == [k for i, k in enumerate(keys) if i not in (10, 30)]
    assert reopened.stats.corrupt == 2
    reopened.close()


def test_a_torn_tail_loses_only_the_torn_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=10_000_000).open()
    keys = _fill(spool, 10)
    spool.close()
    (seg,) = (tmp_path / "s").glob("*.seg")
    seg.write_bytes(seg.read_bytes()[:-5])
    reopened = Spool(tmp_path / "s", max_bytes=10_000_000).open()
    assert _drain(reopened) == keys[:9] and reopened.stats.corrupt == 1
    reopened.close()


def test_the_size_cap_refuses_appends(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=1000).open()
    accepted = sum(spool.append("events", b"k", b"x" * 90) for _ in range(20))
    assert 0 < accepted < 20
    assert spool.size_bytes <= 1000
    spool.close()


def test_each_process_owns_one_slot_and_orphans_are_adopted_once(tmp_path: Path) -> None:
    a = Spool.claim(tmp_path, max_bytes=10**6)
    b = Spool.claim(tmp_path, max_bytes=10**6)
    assert a.path != b.path  # a live owner's slot is never shared
    _fill(b, 5)
    b.flush()
    assert Spool.orphans(tmp_path, exclude=a.path) == []  # b is alive: not adoptable
    b.close()
    (orphan,) = Spool.orphans(tmp_path, exclude=a.path)
    assert orphan.path == b.path
    assert Spool.orphans(tmp_path, exclude=a.path) == []  # held by the adopter now
    assert len(_drain(orphan)) == 5
    orphan.close()
    a.close()
