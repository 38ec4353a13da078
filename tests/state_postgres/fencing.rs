//! The lease and the fence against a real server, step by step: a lease that has not run out
//! cannot be taken; once it has, the lock holder's session can be ended and the lease taken
//! with the next term, and from then on the old term's writes are refused while commands
//! (which write without a fence) and the new term write on.

use std::time::{Duration, Instant};

use walhook::model::Lsn;
use walhook::state::{StateError, Store};

use super::Schema;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ran_out_is_taken_over_and_the_old_terms_writes_are_refused() {
    // GIVEN walhook A leading with a one-second lease, its writes fenced by its term
    let schema = Schema::new().await;
    let (store_a, store_b, command) = (
        schema.open().await,
        schema.open().await,
        schema.open().await,
    );
    let mut a = store_a.lease_session().await.unwrap();
    assert!(a.try_lock().await.unwrap());
    let first = a
        .take_over(None, "host-a pid 1", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(first, Some(1));
    store_a.fence_writes(1);
    assert_eq!(store_a.save_confirmed(Lsn(10)).await.unwrap(), Lsn(10));
    assert!(a
        .renew(1, Duration::from_secs(1), Some(4242))
        .await
        .unwrap());

    // WHEN B tries while the lease holds
    let mut b = store_b.lease_session().await.unwrap();
    assert!(!b.try_lock().await.unwrap(), "B took the lock A holds");
    let lease = b.lease().await.unwrap().unwrap();
    assert_eq!((lease.epoch, lease.holder.as_str()), (1, "host-a pid 1"));
    assert_eq!(
        (lease.lock_pid, lease.walsender_pid),
        (a.backend_pid(), Some(4242))
    );
    assert!(!lease.expired);
    // THEN it cannot take it
    assert_eq!(
        b.take_over(Some(1), "host-b pid 2", Duration::from_secs(10))
            .await
            .unwrap(),
        None
    );

    // WHEN the lease runs out with A's session still open (A frozen), and B ends A's lock
    // session and takes over
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let lease = b.lease().await.unwrap().unwrap();
    assert!(lease.expired);
    assert!(b.end_lock_holder(lease.lock_pid).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.try_lock().await.unwrap() {
        assert!(Instant::now() < deadline, "the lock was never free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = b
        .take_over(Some(1), "host-b pid 2", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(second, Some(2));

    // THEN A's writes are refused, saying why, and change nothing
    let refused = store_a.save_confirmed(Lsn(20)).await.unwrap_err();
    assert!(
        matches!(refused, StateError::PostgresNotLeader { .. }),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .starts_with("this walhook no longer leads"),
        "{refused}"
    );
    assert_eq!(store_b.confirmed().await.unwrap(), Some(Lsn(10)));
    // AND A cannot renew (its session was ended) or take the lease back
    assert!(a.renew(1, Duration::from_secs(1), None).await.is_err() || a.is_closed());
    // AND B's term writes, and so does a command's store, which has no fence
    store_b.fence_writes(2);
    assert_eq!(store_b.save_confirmed(Lsn(30)).await.unwrap(), Lsn(30));
    assert_eq!(command.save_confirmed(Lsn(40)).await.unwrap(), Lsn(40));

    // WHEN B releases its lease (a leader stepping down)
    b.release(2).await.unwrap();
    // THEN it ran out at once, and B's term can no longer write either
    assert!(b.lease().await.unwrap().unwrap().expired);
    let refused = store_b.save_confirmed(Lsn(50)).await.unwrap_err();
    assert!(
        matches!(refused, StateError::PostgresNotLeader { .. }),
        "{refused:?}"
    );
}
