//! Leader election and sharding against a real kube-apiserver
//! (scripts/kube-env.sh; scripts/test.sh starts it and exports
//! QSCALE_TEST_KUBECONFIG). Durations are shortened so takeovers happen in
//! seconds; the logic is the same as with the 15 s / 10 s / 2 s defaults.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qscale::config::LeaderElectionConfig;
use qscale::leader::Elector;
use qscale::leader::Leadership;
use qscale::metrics::Metrics;

async fn client() -> kube::Client {
    let path = std::env::var("QSCALE_TEST_KUBECONFIG")
        .unwrap_or_else(|_| "/tmp/qscale-kube/kubeconfig".into());
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}); start the test apiserver with scripts/kube-env.sh start")
    });
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    let c = kube::Client::try_from(cfg).expect("client");
    c.apiserver_version().await.unwrap_or_else(|e| {
        panic!("the test kube-apiserver does not answer ({e}); run scripts/kube-env.sh start")
    });
    c
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

fn config(lease: &str, shards: u32) -> LeaderElectionConfig {
    LeaderElectionConfig {
        enabled: true,
        lease_name: lease.to_string(),
        namespace: Some("default".into()),
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
        shards,
    }
}

struct Replica {
    elector: Elector,
    leadership: Leadership,
}

async fn replica(c: &kube::Client, lease: &str, shards: u32, id: &str) -> Replica {
    let leadership = Leadership::shards(shards);
    let elector = Elector::new(
        c.clone(),
        "default",
        config(lease, shards),
        id.to_string(),
        leadership.clone(),
        Arc::new(Metrics::new()),
    );
    Replica {
        elector,
        leadership,
    }
}

fn held(r: &Replica) -> Vec<usize> {
    (0..r.leadership.shard_count())
        .filter(|i| r.leadership.holds(*i))
        .collect()
}

/// Run rounds on every replica until `done` holds or `limit` passes.
async fn rounds_until(
    rs: &mut [&mut Replica],
    limit: Duration,
    done: impl Fn(&[&mut Replica]) -> bool,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        for r in rs.iter_mut() {
            let _ = r.elector.round().await;
        }
        if done(rs) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("condition not reached within {limit:?}");
}

#[tokio::test]
async fn exactly_one_replica_leads_and_the_other_takes_over_after_a_crash() {
    let c = client().await;
    let lease = unique("le");
    let mut a = replica(&c, &lease, 1, "a").await;
    let mut b = replica(&c, &lease, 1, "b").await;
    rounds_until(&mut [&mut a, &mut b], Duration::from_secs(10), |rs| {
        rs.iter().filter(|r| r.leadership.holds(0)).count() == 1
    })
    .await;
    // Several more rounds: leadership stays with one replica.
    for _ in 0..5 {
        let _ = a.elector.round().await;
        let _ = b.elector.round().await;
        assert_eq!(held(&a).len() + held(&b).len(), 1);
    }
    // The leader crashes (it stops renewing and never releases).
    let (mut survivor, leader) = if a.leadership.holds(0) {
        (b, a)
    } else {
        (a, b)
    };
    let crashed_at = Instant::now();
    drop(leader.elector);
    // The crashed process's own view lapses at its renew deadline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !leader.leadership.holds(0),
        "a leader that cannot renew stops actuating at its deadline"
    );
    rounds_until(&mut [&mut survivor], Duration::from_secs(10), |rs| {
        rs[0].leadership.holds(0)
    })
    .await;
    let took = crashed_at.elapsed();
    assert!(
        took <= Duration::from_secs(3) + Duration::from_secs(2),
        "takeover took {took:?}"
    );
}

#[tokio::test]
async fn a_released_lease_is_taken_over_at_once() {
    let c = client().await;
    let lease = unique("rel");
    let mut a = replica(&c, &lease, 1, "a").await;
    let mut b = replica(&c, &lease, 1, "b").await;
    a.elector.round().await.expect("round");
    assert!(a.leadership.holds(0));
    b.elector.round().await.expect("round");
    assert!(!b.leadership.holds(0));
    a.elector.release_all().await;
    assert!(!a.leadership.holds(0));
    // b saw the record change (holder gone): it acquires on its next round.
    b.elector.round().await.expect("round");
    assert!(b.leadership.holds(0), "released lease not taken over");
}

#[tokio::test]
async fn concurrent_claims_on_one_lease_have_exactly_one_winner() {
    let c = client().await;
    let lease = unique("race");
    let mut reps = Vec::new();
    for i in 0..4 {
        reps.push(replica(&c, &lease, 1, &format!("r{i}")).await);
    }
    let mut handles = Vec::new();
    for mut r in reps {
        handles.push(tokio::spawn(async move {
            let _ = r.elector.round().await;
            r
        }));
    }
    let mut winners = 0;
    for h in handles {
        let r = h.await.expect("task");
        winners += usize::from(r.leadership.holds(0));
    }
    assert_eq!(winners, 1, "optimistic concurrency must leave one holder");
}

#[tokio::test]
async fn shards_spread_over_replicas_and_move_when_one_dies() {
    let c = client().await;
    let lease = unique("sh");
    let mut a = replica(&c, &lease, 6, "a").await;
    let mut b = replica(&c, &lease, 6, "b").await;
    let mut r3 = replica(&c, &lease, 6, "c").await;
    // a starts alone and takes everything.
    rounds_until(&mut [&mut a], Duration::from_secs(10), |rs| {
        held(rs[0]).len() == 6
    })
    .await;
    // b and c join: a gives back shards until each holds its fair share.
    rounds_until(
        &mut [&mut a, &mut b, &mut r3],
        Duration::from_secs(20),
        |rs| rs.iter().all(|r| held(r).len() == 2),
    )
    .await;
    let mut all: Vec<usize> = held(&a)
        .into_iter()
        .chain(held(&b))
        .chain(held(&r3))
        .collect();
    all.sort();
    assert_eq!(
        all,
        vec![0, 1, 2, 3, 4, 5],
        "every shard held by exactly one replica"
    );
    // c dies: its two shards move to a and b within a lease duration or so.
    drop(r3.elector);
    let moved = rounds_until(&mut [&mut a, &mut b], Duration::from_secs(15), |rs| {
        rs.iter().all(|r| held(r).len() == 3)
    })
    .await;
    assert!(
        moved <= Duration::from_secs(8),
        "shards moved after {moved:?}"
    );
    let mut all: Vec<usize> = held(&a).into_iter().chain(held(&b)).collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
}
