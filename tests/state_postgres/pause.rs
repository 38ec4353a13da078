//! A frozen leader (SIGSTOP) keeps its sessions open, its lock and walsender with them: the
//! standby takes over once the lease ran out, ending those sessions itself; the old leader,
//! resumed, steps down and stands by, and no row's events go out of order. On the way:
//! `/ready`, `walhook_leader`, `walhook status` and `walhook check` say who leads.

use std::process::Command;
use std::time::{Duration, Instant};

use super::leadership::{Cluster, Writer, LEASE, TAKEOVER_BOUND};
use crate::e2e_more::walhook_cli;

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The value of the gauge `walhook_leader` in a metrics text.
fn leader_gauge(metrics: &str) -> Option<&str> {
    metrics
        .lines()
        .find(|l| l.starts_with("walhook_leader "))
        .and_then(|l| l.split(' ').nth(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_steps_down_when_it_resumes() {
    // GIVEN two walhooks with one config and the state in Postgres
    let mut cluster = Cluster::new().await;
    cluster.start();
    cluster.start();
    let (leader, epoch) = cluster.wait_leader(0, None, Duration::from_secs(60)).await;
    let standby = 1 - leader;
    let leader_pid = cluster.walhooks[leader].pid();

    // THEN `/ready` and `walhook_leader` say which is which
    cluster.wait_ready(leader, 200, "leader, ready\n").await;
    cluster.wait_ready(standby, 200, "standby\n").await;
    let (_, metrics) = cluster.get(leader, "/metrics").await;
    assert_eq!(leader_gauge(&metrics), Some("1"), "{metrics}");
    let (_, metrics) = cluster.get(standby, "/metrics").await;
    assert_eq!(leader_gauge(&metrics), Some("0"), "{metrics}");
    // AND `walhook status` and `walhook check` name the leader
    let report: serde_json::Value =
        serde_json::from_str(&walhook_cli(&cluster.config, &["status", "--json"]).await).unwrap();
    let holder = report["state"]["leader"]["holder"].as_str().unwrap();
    assert!(
        holder.ends_with(&format!(" pid {leader_pid}")),
        "{report:#}"
    );
    assert_eq!(report["state"]["leader"]["epoch"], epoch);
    assert_eq!(report["state"]["leader"]["expired"], false);
    let checked = walhook_cli(&cluster.config, &["check"]).await;
    assert!(
        checked.contains("✓ state database reachable; schema `walhook_state` is there"),
        "{checked}"
    );
    assert!(
        checked.contains(&format!(
            "✓ leadership: {holder} leads (term {epoch}, since "
        )),
        "{checked}"
    );

    // WHEN a writer commits, `failing` is down (events are held), and the leader is frozen
    // for longer than the lease
    let writer = Writer::start(&cluster.db, 11);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(cluster.held("failing").await > 0, "nothing was held");
    signal(leader_pid, "STOP");
    let frozen = Instant::now();

    // THEN the standby takes over within the bound, ending the frozen leader's lock session
    // and walsender itself
    let (next, next_epoch) = cluster
        .wait_leader(epoch, Some(leader_pid), TAKEOVER_BOUND)
        .await;
    let took = frozen.elapsed();
    assert_eq!(next, standby);
    assert!(
        took >= LEASE / 2,
        "took over after {took:?}, before the lease could run out"
    );
    let output = cluster.walhooks[standby].output();
    assert!(
        output.contains("the lease ran out with the leader's session still open (paused or cut off): ended that session"),
        "{output}"
    );
    assert!(
        output.contains("ended the former leader's walsender"),
        "{output}"
    );
    cluster.wait_ready(standby, 200, "leader, ready\n").await;

    // WHEN the old leader resumes, while the new one delivers
    tokio::time::sleep(Duration::from_millis(1000)).await;
    signal(leader_pid, "CONT");

    // THEN it says it lost leadership and stands by, and the new leader keeps leading
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.walhooks[leader]
        .output()
        .contains("leadership lost")
    {
        cluster.walhooks[leader].assert_running("it stepped down");
        assert!(
            Instant::now() < deadline,
            "{}",
            cluster.walhooks[leader].output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.wait_ready(leader, 200, "standby\n").await;
    let (_, metrics) = cluster.get(leader, "/metrics").await;
    assert_eq!(leader_gauge(&metrics), Some("0"), "{metrics}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (still, _, _, expired) = cluster.lease().await.unwrap();
    assert_eq!(still, next_epoch, "leadership changed again");
    assert!(!expired);
    cluster.walhooks[leader].assert_running("the end");

    // AND once `failing` is back, every committed change arrived at both subscribers with
    // its id, each row's changes first delivered in commit order
    cluster.finish(writer).await;
}
