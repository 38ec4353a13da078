use std::ops::{Deref, DerefMut};
use std::path::Path;

use tokio::sync::oneshot;

use super::*;
use crate::backfill::Signal;
use crate::delivery::Job;
use crate::model::{Change, Datum, Operation, ReplicaIdentity, RowImage, Table, TableColumn};
use crate::source::{ReplayFilter, SourceEvent};

/// A pipeline fed as the source task feeds it: through its replay filter.
struct Fed {
    pipeline: Pipeline,
    replay: ReplayFilter,
}

impl Fed {
    async fn handle(&mut self, event: SourceEvent) {
        if self.replay.pass(&event) {
            self.pipeline.handle(event).await;
        }
    }
}

impl Deref for Fed {
    type Target = Pipeline;

    fn deref(&self) -> &Pipeline {
        &self.pipeline
    }
}

impl DerefMut for Fed {
    fn deref_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }
}

/// A pipeline with one subscriber for every change of `public.items`, and the receiving end
/// of that subscriber's queue.
fn pipeline(confirmed: Lsn) -> (Fed, mpsc::Receiver<Job>) {
    let config = crate::config::parse(
        r#"
        source.url = "postgres://h/db"
        subscribers.s.url = "http://127.0.0.1:9/s"
        [[events]]
        type = "item.changed"
        table = "public.items"
        subscribers = ["s"]
        "#,
        Path::new("."),
        &|_| None,
    )
    .unwrap();
    let (queue, jobs) = mpsc::channel(8);
    let pipeline = Pipeline {
        mapper: Mapper::new(&config).unwrap(),
        acks: AckTracker::new(confirmed),
        queues: vec![queue],
        open: None,
        last_commit: Lsn(0),
        routed: Vec::new(),
        max_unsettled: 100,
        store: Arc::new(crate::state::SqliteStore::open_in_memory().unwrap()),
        confirmed_tx: watch::channel(confirmed).0,
        checkpoint: PeriodicWrite::new(CHECKPOINT_EVERY),
        slot: "s".into(),
        windows: Windows::default(),
        holds: VecDeque::new(),
        reads: Vec::new(),
    };
    let replay = ReplayFilter::default();
    (Fed { pipeline, replay }, jobs)
}

fn insert(commit_lsn: Lsn, id: i64) -> Change {
    let json = id.to_string();
    let row = RowImage {
        datums: vec![Datum::Value {
            start: 0,
            end: u32::try_from(json.len()).unwrap(),
        }],
        json,
    };
    Change {
        table: Arc::new(Table {
            oid: 1,
            schema: "public".into(),
            name: "items".into(),
            replica_identity: ReplicaIdentity::Default,
            primary_key: vec![0],
            columns: vec![TableColumn {
                name: "id".into(),
                type_oid: 20,
                type_modifier: -1,
                is_key: true,
            }],
        }),
        operation: Operation::Insert,
        row: Some(row),
        old: None,
        unchanged_toast: Vec::new(),
        commit_lsn,
        xid: 7,
        commit_time_micros: 0,
        index: 0,
    }
}

/// Hands the pipeline one transaction of one insert; returns its end LSN.
async fn one_transaction(pipeline: &mut Fed, commit_lsn: Lsn) -> Lsn {
    let end_lsn = Lsn(commit_lsn.0 + 0x30);
    pipeline
        .handle(SourceEvent::Begin { commit_lsn, xid: 7 })
        .await;
    pipeline
        .handle(SourceEvent::Change(insert(commit_lsn, 1)))
        .await;
    pipeline
        .handle(SourceEvent::Commit {
            commit_lsn,
            end_lsn,
        })
        .await;
    end_lsn
}

#[tokio::test]
async fn a_settled_job_moves_the_confirmed_position() {
    // GIVEN a pipeline whose worker takes its jobs
    let (mut pipeline, mut jobs) = pipeline(Lsn(0x100));
    // WHEN a transaction's only job is settled
    let end = one_transaction(&mut pipeline, Lsn(0x200)).await;
    let job = jobs.recv().await.unwrap();
    assert_eq!(pipeline.acks.confirmed(), Lsn(0x100));
    pipeline.settle(&[job.txn]);
    // THEN its end is confirmed
    assert_eq!(pipeline.acks.confirmed(), end);
}

#[tokio::test]
async fn a_job_for_a_stopped_worker_is_never_confirmed() {
    // GIVEN a pipeline whose worker has stopped (its queue is closed) and the pipeline has not
    // yet heard so
    let (mut pipeline, jobs) = pipeline(Lsn(0x100));
    drop(jobs);
    // WHEN a transaction with a job for it arrives, and then the stream is caught up past it
    one_transaction(&mut pipeline, Lsn(0x200)).await;
    pipeline
        .handle(SourceEvent::CaughtUp {
            wal_end: Lsn(0x400),
        })
        .await;
    // THEN nothing past the last settled position is confirmed: the job was not delivered or
    // stored, so the slot must keep its WAL
    assert_eq!(pipeline.acks.confirmed(), Lsn(0x100));
}

#[tokio::test]
async fn a_replay_hands_out_again_what_came_after_its_position() {
    // GIVEN transactions at 0x200 and 0x300 handed out, settled and confirmed, and one at
    // 0x400 half read (its Begin and change are out, its Commit not yet)
    let (mut pipeline, mut jobs) = pipeline(Lsn(0x100));
    for commit in [Lsn(0x200), Lsn(0x300)] {
        one_transaction(&mut pipeline, commit).await;
        let job = jobs.recv().await.unwrap();
        pipeline.settle(&[job.txn]);
    }
    assert_eq!(pipeline.acks.confirmed(), Lsn(0x330));
    pipeline
        .handle(SourceEvent::Begin {
            commit_lsn: Lsn(0x400),
            xid: 7,
        })
        .await;
    pipeline
        .handle(SourceEvent::Change(insert(Lsn(0x400), 1)))
        .await;
    let half = jobs.recv().await.unwrap();

    // WHEN the source asks for everything after 0x250 to be read again
    pipeline
        .handle(SourceEvent::Replay { from: Lsn(0x250) })
        .await;

    // THEN the confirmed position goes back to 0x250 (it was never reported past the canary)
    assert_eq!(pipeline.acks.confirmed(), Lsn(0x250));
    assert_eq!(*pipeline.confirmed_tx.borrow(), Lsn(0x250));
    // AND the transaction at 0x300, sent again, is handed out again
    let end = one_transaction(&mut pipeline, Lsn(0x300)).await;
    let again = jobs.recv().await.unwrap();
    assert_eq!(again.event.id, "evt_0000000000000300_0");
    // AND the half-read one confirms nothing past 0x250 when its job settles
    pipeline.settle(&[half.txn]);
    assert_eq!(pipeline.acks.confirmed(), Lsn(0x250));
    pipeline.settle(&[again.txn]);
    assert_eq!(pipeline.acks.confirmed(), end);
}

/// A watermark message of backfill 9's chunk 1 at `lsn`.
fn watermark(lsn: Lsn, kind: &str) -> SourceEvent {
    SourceEvent::Message {
        lsn,
        prefix: backfill::WATERMARK_PREFIX.into(),
        content: format!("{kind}:9:1").into_bytes(),
    }
}

#[tokio::test]
async fn a_backfills_changes_are_not_confirmed_until_the_runner_saved_what_it_learned() {
    // GIVEN a backfill's chunk registered at 0x100, read between watermarks at 0x150 and 0x300,
    // with a settled transaction of its table in between
    let (mut pipeline, mut jobs) = pipeline(Lsn(0x100));
    let (rows_tx, rows) = oneshot::channel();
    let (dispatched, _) = oneshot::channel();
    let (settled, mut report) = oneshot::channel();
    pipeline.backfill_signal(Signal::Open(backfill::ChunkOpen {
        backfill: 9,
        chunk: 1,
        table: insert(Lsn(0), 1).table,
        subscribers: vec![0],
        rows,
        dispatched,
        settled,
    }));
    pipeline.handle(watermark(Lsn(0x150), "low")).await;
    let end = one_transaction(&mut pipeline, Lsn(0x200)).await;
    let job = jobs.recv().await.unwrap();
    pipeline.settle(&[job.txn]);
    rows_tx.send(backfill::ChunkRows::default()).unwrap();
    // WHEN the high watermark closes the chunk and its (empty) read settles
    pipeline.handle(watermark(Lsn(0x300), "high")).await;
    let report = report.try_recv().expect("the chunk settled");
    // THEN the transaction, folded into the report, is not confirmed yet: a crash now would
    // lose what the report says unless the stream brings it again
    assert!(end > Lsn(0x100));
    assert_eq!(pipeline.acks.confirmed(), Lsn(0x100));
    // AND once the runner saved, everything up to the high watermark is
    pipeline.backfill_signal(Signal::Saved(report.release.expect("a hold to release")));
    assert_eq!(pipeline.acks.confirmed(), Lsn(0x300));
    // AND later changes wait for the next report, or for the backfill's end
    one_transaction(&mut pipeline, Lsn(0x400)).await;
    let job = jobs.recv().await.unwrap();
    pipeline.settle(&[job.txn]);
    assert_eq!(pipeline.acks.confirmed(), Lsn(0x300));
    pipeline.backfill_signal(Signal::Ended(9));
    assert_eq!(pipeline.acks.confirmed(), Lsn(0x430));
}
