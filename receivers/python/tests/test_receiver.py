"""The receiver as a program: ids, concurrency, logging and shutdown."""

import random
import signal
import threading
import time
from decimal import Decimal

import psycopg
import pytest
from conftest import start_receiver
from support import event, rows, versions

from walhook_sync import PayloadError, Version, json_text, parse_body, parse_version


def test_versions_come_from_the_ids():
    assert parse_version("evt_00000000016B3748_3") == Version(0x16B3748, 3)
    assert parse_version("evt_00000000016B3748_3_12") == Version(0x16B3748, 3)
    assert parse_version("evt_FFFFFFFFFFFFFFFF_4294967295") == Version(2**64 - 1, 2**32 - 1)
    assert Version(2**64 - 1, 0).pg_lsn == "FFFFFFFF/FFFFFFFF"
    # a read event is placed at its watermark, whatever its backfill id and key hash
    assert parse_version("bf_7_af63dc4c8601ec8c", "16/B374D848") == Version(0x16_B374D848, 0)
    assert parse_version("bf_-7_0000000000000000_1", "0/0") == Version(0, 0)
    assert Version(0x16_B374D848, 0) > Version(0x16_B374D847, 99)
    for bad_id, lsn in [("evt_16B3748_3", None), ("evt_00000000016B3748", None), ("batch_evt_1_2", None),
                        ("bf_7_af63dc4c8601ec8c", None), ("bf_7_af63dc4c8601ec8c", "16-B374D848"), (7, None)]:
        with pytest.raises(PayloadError):
            parse_version(bad_id, lsn)


def test_numbers_stay_exact_through_python():
    body = b'{"a":[12.50,1e-7,123456789012345678901234567890,' + b"9" * 5000 + b',-0.0,0.1]}'
    assert json_text(parse_body(body)[0]) == '{"a":[12.50,1E-7,123456789012345678901234567890,' + "9" * 5000 + ',-0.0,0.1]}'
    assert parse_body(b"[1, 2]") == [Decimal(1), Decimal(2)]


def test_concurrent_requests_converge(receiver, replica, table):
    t = table("id int PRIMARY KEY, v int")
    # GIVEN 20 versions of each of 10 keys, two truncates and a last delete, in a random order
    events = [event(t, "update", lsn, key, row={"id": key, "v": lsn}) for lsn in range(0x100, 0x114) for key in range(10)]
    events += [event(t, "truncate", 0x105, 99), event(t, "truncate", 0x10A, 99)]
    events += [event(t, "delete", 0x113, 99, old={"id": 0})]
    random.Random(7).shuffle(events)
    # WHEN 8 threads post them at once, a quarter of them twice
    answers = []

    def post(share):
        answers.extend(receiver.post(body)[0] for body in share)

    work = events + events[: len(events) // 4]
    threads = [threading.Thread(target=post, args=(work[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN every request succeeded and each key holds its newest version
    assert answers == [200] * len(work)
    assert rows(replica, t) == [{"id": k, "v": 0x113} for k in range(1, 10)]
    assert versions(replica, t)['{"id": 0}'] == ("0/113", 99, True)


def test_it_logs_a_line_per_request_and_stops_on_sigterm(database_urls, tmp_path, replica, table):
    t = table("id int PRIMARY KEY")
    own = start_receiver(database_urls[1], tmp_path / "stderr.log")
    try:
        status, answer = own.post(event(t, "insert", 0x100, row={"id": 1}), msg_id="evt_0000000000000100_0")
        assert status == 200
        own.process.send_signal(signal.SIGTERM)
        assert own.process.wait(timeout=10) == 0
    finally:
        own.stop()
    assert own.log_path.read_text() == "evt_0000000000000100_0 events=1 applied=1 skipped=0\n"


def test_trace_logs_each_event_with_its_key(database_urls, tmp_path, replica, table):
    t = table("id numeric PRIMARY KEY, body text")
    own = start_receiver(database_urls[1], tmp_path / "stderr.log", "--trace")
    try:
        insert = event(t, "insert", 0x100, row={"id": 1.5, "body": "x"})
        moved = event(t, "update", 0x200, row={"id": 2.5}, old={"id": 1.5}, toast=["body"])
        status, _ = own.post(insert, msg_id="evt_0000000000000100_0")
        assert status == 200
        status, _ = own.post(moved, msg_id="evt_0000000000000200_0")
        assert status == 200
    finally:
        own.stop()
    lines = own.log_path.read_text().splitlines()
    assert lines[0] == "evt_0000000000000100_0 events=1 applied=1 skipped=0"
    assert lines[1].split() == ["evt_0000000000000100_0", t, "insert", "at=0/100/0", "key=[1.5]", "old=-", "toast=-", "applied"]
    assert lines[3].split()[2:] == ["update", "at=0/200/0", "key=[2.5]", "old=[1.5]", "toast=body", "applied"]


def waiting_on_a_lock(conn):
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()[0]


@pytest.mark.parametrize("held, sent", [("SHARE", "truncate"), ("UPDATE", "insert")])
def test_truncates_and_writes_of_a_table_wait_for_each_other(receiver, replica, table, database_urls, held, sent):
    t = table("id int PRIMARY KEY", name=f"lock_{sent}")
    receiver.apply(event(t, "insert", 0x100, row={"id": 1}))
    answers = []
    post = threading.Thread(target=lambda: answers.append(receiver.post(event(t, sent, 0x200, row={"id": 2}))[0]))
    with psycopg.connect(database_urls[1]) as holder:
        # GIVEN a transaction that holds the table's floor as a write (or a truncate) does
        holder.execute(f"SELECT FROM walhook_sync.floors WHERE table_name = %s FOR {held}", [t])
        # WHEN a truncate (or a write) of that table comes, THEN it waits
        post.start()
        deadline = time.monotonic() + 10
        while not answers and not waiting_on_a_lock(replica):
            assert time.monotonic() < deadline, "the request neither waited nor finished"
            time.sleep(0.01)
        assert answers == [], "it did not wait"
    post.join()
    assert answers == [200]
