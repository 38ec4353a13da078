"""The rules of the README, each against the receiver process and a real replica."""

from support import batch, event, read_event, rows, versions

L1, L2, L3, L4, L5, L6 = (0x1_0000_0000 * n + 0x16B3748 for n in range(1, 7))


def test_insert_update_delete(receiver, replica, table):
    t = table("id int PRIMARY KEY, status text, amount numeric")
    # WHEN a row is inserted, updated, then deleted, one request each
    assert receiver.apply(event(t, "insert", L1, row={"id": 1, "status": "new", "amount": 12.5})) == {
        "events": 1,
        "applied": 1,
        "skipped": 0,
    }
    assert rows(replica, t) == [{"id": 1, "status": "new", "amount": 12.5}]
    receiver.apply(event(t, "update", L2, row={"id": 1, "status": "paid", "amount": 12.5}))
    assert rows(replica, t) == [{"id": 1, "status": "paid", "amount": 12.5}]
    receiver.apply(event(t, "delete", L3, old={"id": 1}))
    # THEN the row is gone and a tombstone holds the delete's version
    assert rows(replica, t) == []
    assert versions(replica, t) == {'{"id": 1}': ("3/16B3748", 0, True)}


def test_redelivery_is_a_no_op(receiver, replica, table):
    t = table("id int PRIMARY KEY, status text")
    insert = event(t, "insert", L1, 4, row={"id": 1, "status": "new"})
    update = event(t, "update", L2, row={"id": 1, "status": "paid"})
    receiver.apply(insert)
    receiver.apply(update)
    # WHEN both are delivered again, the insert after the update as a crash replay can
    for again in (update, insert, insert):
        assert receiver.apply(again)["skipped"] == 1
    # THEN nothing moved back
    assert rows(replica, t) == [{"id": 1, "status": "paid"}]
    assert versions(replica, t) == {'{"id": 1}': ("2/16B3748", 0, False)}


def test_an_older_event_after_a_newer_one_is_skipped(receiver, replica, table):
    t = table("id int PRIMARY KEY, status text")
    receiver.apply(event(t, "update", L2, 1, row={"id": 1, "status": "second"}))
    # WHEN an earlier change of the same transaction (lower index) and of an earlier one arrive
    assert receiver.apply(event(t, "update", L2, 0, row={"id": 1, "status": "first"}))["skipped"] == 1
    assert receiver.apply(event(t, "insert", L1, 9, row={"id": 1, "status": "zeroth"}))["skipped"] == 1
    # THEN the newest stays; a later index of the same commit applies
    assert rows(replica, t) == [{"id": 1, "status": "second"}]
    assert receiver.apply(event(t, "update", L2, 2, row={"id": 1, "status": "third"}))["applied"] == 1
    assert rows(replica, t) == [{"id": 1, "status": "third"}]


def test_a_tombstone_prevents_resurrection(receiver, replica, table):
    t = table("id int PRIMARY KEY, status text")
    # GIVEN a delete delivered before the insert and update that preceded it
    receiver.apply(event(t, "delete", L3, old={"id": 1}))
    # WHEN they arrive late
    assert receiver.apply(event(t, "insert", L1, row={"id": 1, "status": "new"}))["skipped"] == 1
    assert receiver.apply(event(t, "update", L2, row={"id": 1, "status": "paid"}))["skipped"] == 1
    # THEN the row stays deleted; an insert after the delete brings it back
    assert rows(replica, t) == []
    receiver.apply(event(t, "insert", L4, row={"id": 1, "status": "again"}))
    assert rows(replica, t) == [{"id": 1, "status": "again"}]


def test_truncate_floor(receiver, replica, table):
    t = table("id int PRIMARY KEY, v text")
    # GIVEN a row written before the truncate and one written after it (delivered first)
    receiver.apply(event(t, "insert", L1, row={"id": 1, "v": "old"}))
    receiver.apply(event(t, "insert", L5, row={"id": 2, "v": "after"}))
    # WHEN the truncate arrives
    assert receiver.apply(event(t, "truncate", L3))["applied"] == 1
    # THEN only the newer row survives, and older events of any key are skipped
    assert rows(replica, t) == [{"id": 2, "v": "after"}]
    assert receiver.apply(event(t, "insert", L2, row={"id": 3, "v": "late"}))["skipped"] == 1
    assert receiver.apply(event(t, "update", L2, row={"id": 1, "v": "late"}))["skipped"] == 1
    assert receiver.apply(event(t, "delete", L2, old={"id": 2}))["skipped"] == 1
    assert receiver.apply(event(t, "insert", L4, row={"id": 4, "v": "newer"}))["applied"] == 1
    # WHEN the truncate is delivered again later, THEN it changes nothing
    receiver.apply(event(t, "insert", L6, row={"id": 5, "v": "newest"}))
    assert receiver.apply(event(t, "truncate", L3))["skipped"] == 1
    assert [r["id"] for r in rows(replica, t)] == [2, 4, 5]
    # and the bookkeeping older than the truncate is gone
    assert sorted(versions(replica, t)) == ['{"id": 2}', '{"id": 4}', '{"id": 5}']


def test_a_truncate_removes_rows_the_receiver_never_wrote(receiver, replica, table):
    t = table("id int PRIMARY KEY")
    replica.execute(f"INSERT INTO {t} VALUES (1), (2)")
    receiver.apply(event(t, "truncate", L1))
    assert rows(replica, t) == []


def test_unchanged_toast_comes_from_the_replica_row(receiver, replica, table):
    t = table("id int PRIMARY KEY, status text, doc text")
    receiver.apply(event(t, "insert", L1, row={"id": 1, "status": "new", "doc": "x" * 10_000}))
    # WHEN an update leaves the large value out
    receiver.apply(event(t, "update", L2, row={"id": 1, "status": "paid"}, toast=["doc"]))
    # THEN the replica keeps it
    assert rows(replica, t) == [{"id": 1, "status": "paid", "doc": "x" * 10_000}]
    # and a key the replica does not have gets NULL until a complete event comes
    receiver.apply(event(t, "update", L2, 1, row={"id": 2, "status": "paid"}, toast=["doc"]))
    assert rows(replica, t)[1] == {"id": 2, "status": "paid", "doc": None}


def test_a_key_change_moves_the_row_with_its_unchanged_toast(receiver, replica, table):
    t = table("id int PRIMARY KEY, email text UNIQUE, doc text")
    receiver.apply(event(t, "insert", L1, row={"id": 1, "email": "a@example.com", "doc": "big"}))
    # WHEN the key changes and the large value is not sent
    update = event(t, "update", L2, row={"id": 2, "email": "a@example.com"}, old={"id": 1}, toast=["doc"])
    assert receiver.apply(update)["applied"] == 1
    # THEN the row moved with its value (and its unique email did not collide with itself)
    assert rows(replica, t) == [{"id": 2, "email": "a@example.com", "doc": "big"}]
    assert versions(replica, t) == {'{"id": 1}': ("2/16B3748", 0, True), '{"id": 2}': ("2/16B3748", 0, False)}
    # and the old key's earlier insert, delivered again, does not bring it back
    assert receiver.apply(event(t, "insert", L1, row={"id": 1, "email": "b@example.com", "doc": "x"}))["skipped"] == 1
    assert [r["id"] for r in rows(replica, t)] == [2]


def test_a_key_change_with_replica_identity_full(receiver, replica, table):
    t = table("id int PRIMARY KEY, status text")
    receiver.apply(event(t, "insert", L1, row={"id": 1, "status": "new"}))
    # GIVEN old images with every column: one update keeps the key, one changes it
    receiver.apply(event(t, "update", L2, row={"id": 1, "status": "paid"}, old={"id": 1, "status": "new"}))
    assert versions(replica, t) == {'{"id": 1}': ("2/16B3748", 0, False)}
    receiver.apply(event(t, "update", L3, row={"id": 5, "status": "paid"}, old={"id": 1, "status": "paid"}))
    assert rows(replica, t) == [{"id": 5, "status": "paid"}]


def test_an_old_key_printed_otherwise_is_the_same_key(receiver, replica, table):
    t = table("at timestamptz PRIMARY KEY, v text")
    receiver.apply(event(t, "insert", L1, row={"at": "2026-11-26T17:51:10+00:00", "v": "new"}))
    # WHEN an update's old image prints the same instant at another offset
    update = event(t, "update", L2, row={"at": "2026-11-26T17:51:10+00:00", "v": "paid"},
                   old={"at": "2026-11-26T23:21:10+05:30", "v": "new"})
    assert receiver.apply(update)["applied"] == 1
    # THEN it is no key change: the row is updated, not deleted
    assert rows(replica, t) == [{"at": "2026-11-26T17:51:10+00:00", "v": "paid"}]


def test_read_events_are_placed_at_their_watermark(receiver, replica, table):
    t = table("id int PRIMARY KEY, status text")
    receiver.apply(event(t, "update", L2, row={"id": 1, "status": "streamed"}))
    # WHEN a backfill read from before that update arrives, THEN it is skipped
    assert receiver.apply(read_event(t, L1, {"id": 1, "status": "read"}))["skipped"] == 1
    assert rows(replica, t) == [{"id": 1, "status": "streamed"}]
    # WHEN one read after it arrives, THEN it applies, and so does a read of a new key
    assert receiver.apply(read_event(t, L3, {"id": 1, "status": "read later"}))["applied"] == 1
    assert receiver.apply(read_event(t, L3, {"id": 2, "status": "read"}, backfill=-3))["applied"] == 1
    assert rows(replica, t) == [{"id": 1, "status": "read later"}, {"id": 2, "status": "read"}]
    assert versions(replica, t)['{"id": 1}'] == ("3/16B3748", 0, False)


def test_rule_suffixes_are_one_change(receiver, replica, table):
    t = table("id int PRIMARY KEY, status text")
    change = {"id": 1, "status": "new"}
    assert receiver.apply(event(t, "insert", L1, 2, row=change, id="evt_00000001016B3748_2_0"))["applied"] == 1
    assert receiver.apply(event(t, "insert", L1, 2, row=change, id="evt_00000001016B3748_2_1"))["skipped"] == 1


def test_a_batch_is_applied_in_order_in_one_transaction(receiver, replica, table):
    t = table("id int PRIMARY KEY, status text")
    # WHEN a batch inserts, updates and deletes
    answer = receiver.apply(
        event(t, "insert", L1, 0, row={"id": 1, "status": "new"}),
        event(t, "insert", L1, 1, row={"id": 2, "status": "new"}),
        event(t, "update", L1, 2, row={"id": 1, "status": "paid"}),
        event(t, "delete", L1, 3, old={"id": 2}),
        event(t, "insert", L1, 0, row={"id": 1, "status": "duplicate"}),
    )
    # THEN the result is that of the events in order
    assert answer == {"events": 5, "applied": 4, "skipped": 1}
    assert rows(replica, t) == [{"id": 1, "status": "paid"}]


def test_a_batch_with_a_bad_event_applies_nothing(receiver, replica, table):
    t = table("id int PRIMARY KEY, status text")
    good = event(t, "insert", L1, 0, row={"id": 1, "status": "new"})
    # WHEN the last event lacks its key, names a table the replica lacks, or a value it cannot take
    no_key = event(t, "insert", L1, 1, row={"status": "no key"})
    status, answer = receiver.post(batch(good, no_key))
    assert (status, answer) == (400, "evt_00000001016B3748_1: row lacks key column(s) id of " + t)
    status, answer = receiver.post(batch(good, event("app.missing", "insert", L1, 1, row={"id": 1})))
    assert status == 503 and "no table app.missing" in answer
    status, answer = receiver.post(batch(good, event(t, "insert", L1, 1, row={"id": "two"})))
    assert status == 503 and "invalid input syntax for type integer" in answer
    # THEN nothing of the batch was kept, bookkeeping included, and the good event applies alone
    assert rows(replica, t) == []
    assert versions(replica, t) == {}
    assert receiver.apply(good)["applied"] == 1


def test_a_bad_signature_is_refused(receiver, replica, table):
    t = table("id int PRIMARY KEY")
    body = event(t, "insert", L1, row={"id": 1})
    other = "whsec_" + "b3RoZXIgc2VjcmV0IG9mIGFub3RoZXIgc3Vic2NyaWJlcg=="
    assert receiver.post(body, secret=other)[0] == 401
    assert receiver.post(body, headers={"webhook-signature": "v1,garbage"})[0] == 401
    assert receiver.post(body, headers={"webhook-signature": "not even a signature"})[0] == 401
    assert receiver.post(body, headers={"webhook-timestamp": "1700000000"})[0] == 401
    assert receiver.post(body, headers={"webhook-id": "evt_other"})[0] == 401
    assert rows(replica, t) == []


def test_a_body_that_is_not_walhooks_is_refused(receiver, table):
    t = table("id int PRIMARY KEY")
    cases = {
        "not json": "the body is not JSON",
        "[]": "a batch holds at least one event",
        '{"events": []}': "a batch holds at least one event",
        '{"events": {}}': "a batch's events must be a JSON array",
        '{"id": "evt_1"}': "an event is a JSON object with an id and a data object",
        event(t, "insert", L1, row={"id": 1}, id="msg_1"): "'msg_1' is not an event id of walhook",
        event(t, "upsert", L1, row={"id": 1}): "unknown operation 'upsert'",
        event(t, "insert", L1): "an insert needs a row object",
        event(t, "delete", L1): "a delete needs the old key in data.old",
        event("orders", "insert", L1, row={"id": 1}): "data.table must be schema.name",
        event(t, "insert", L1, row='{"id": NaN}'): "NaN is not a JSON value walhook sends",
    }
    for body, message in cases.items():
        status, answer = receiver.post(body)
        assert status == 400 and message in answer, (body, answer)



def test_a_column_the_replica_lacks_is_retried_until_it_has_it(receiver, replica, table):
    t = table("id int PRIMARY KEY")
    insert = event(t, "insert", L1, row={"id": 1, "added": "on the source"})
    # WHEN the source has a column the replica lacks, THEN the event is refused for a retry
    status, answer = receiver.post(insert)
    assert (status, answer) == (503, f"replica: the replica table {t} lacks column(s) added")
    # and once the app adds it, the retry applies
    replica.execute(f"ALTER TABLE {t} ADD COLUMN added text")
    receiver.apply(insert)
    assert rows(replica, t) == [{"id": 1, "added": "on the source"}]


def test_a_batch_may_also_be_a_bare_array(receiver, replica, table):
    t = table("id int PRIMARY KEY")
    body = "[" + ",".join(event(t, "insert", L1, i, row={"id": i}) for i in range(3)) + "]"
    assert receiver.post(body) == (200, {"events": 3, "applied": 3, "skipped": 0})
    assert len(rows(replica, t)) == 3
