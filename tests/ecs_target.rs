//! The ECS target against moto's ECS through the real AWS SDK: cluster,
//! task definition and service are created with the SDK, then the target
//! reads with DescribeServices and writes with UpdateService.
//!
//! Needs moto's server at `QSCALE_TEST_MOTO_URL` (default
//! `http://127.0.0.1:5000`; start one with `moto_server -H 127.0.0.1 -p
//! 5000`). Tests share it and run in parallel, so every test uses names of
//! its own and never resets moto.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_ecs::types::{ContainerDefinition, LaunchType};
use qscale::clients::aws::{AwsEndpoint, load};
use qscale::contract::{Replicas, ScaleTarget, TargetError};
use qscale::targets::ecs::{EcsServiceState, EcsTarget, EcsTargetConfig};

const TIMEOUT: Duration = Duration::from_secs(10);
const REGION: &str = "us-east-1";

fn moto_url() -> String {
    std::env::var("QSCALE_TEST_MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// An SDK config for moto with fixed test credentials, so the tests do not
/// depend on (or change) the process environment.
async fn sdk() -> aws_config::SdkConfig {
    let url = moto_url();
    let endpoint = AwsEndpoint {
        region: Some(REGION.into()),
        endpoint_url: Some(url.clone()),
    };
    let base = load(&endpoint, TIMEOUT).await;
    let creds = Credentials::new("testing", "testing", None, None, "qscale-tests");
    let sdk = base
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(creds))
        .build();
    let probe = aws_sdk_ecs::Client::new(&sdk).list_clusters().send().await;
    if let Err(e) = probe {
        panic!(
            "moto is not answering at {url} ({e:?}). Start it with `moto_server -H 127.0.0.1 \
             -p 5000` or set QSCALE_TEST_MOTO_URL"
        );
    }
    sdk
}

fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{t}", std::process::id())
}

/// Create a cluster with one service running `desired` tasks.
async fn service(sdk: &aws_config::SdkConfig, desired: i32) -> (String, String) {
    let ecs = aws_sdk_ecs::Client::new(sdk);
    let cluster = unique("qs-cluster");
    let service = unique("qs-worker");
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("create cluster");
    let family = unique("qs-task");
    ecs.register_task_definition()
        .family(&family)
        .container_definitions(
            ContainerDefinition::builder()
                .name("worker")
                .image("busybox")
                .memory(128)
                .build(),
        )
        .send()
        .await
        .expect("register task definition");
    ecs.create_service()
        .cluster(&cluster)
        .service_name(&service)
        .task_definition(&family)
        .desired_count(desired)
        .launch_type(LaunchType::Fargate)
        .send()
        .await
        .expect("create service");
    (cluster, service)
}

fn config(cluster: &str, service: &str) -> EcsTargetConfig {
    EcsTargetConfig {
        cluster: cluster.into(),
        service: service.into(),
        region: Some(REGION.into()),
        endpoint_url: Some(moto_url()),
        dry_run: false,
    }
}

async fn desired_in_moto(sdk: &aws_config::SdkConfig, cluster: &str, service: &str) -> i32 {
    aws_sdk_ecs::Client::new(sdk)
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .expect("describe")
        .services()
        .first()
        .expect("service")
        .desired_count()
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, TargetError>) -> TargetError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            // Shown with --nocapture: the messages users will read.
            eprintln!("{}: {e}", e.metric_label());
            e
        }
    }
}

#[tokio::test]
async fn update_service_sets_desired_count_and_describe_services_reads_it_back() {
    let sdk = sdk().await;
    let (cluster, svc) = service(&sdk, 2).await;
    let t = EcsTarget::new(&config(&cluster, &svc), &sdk, TIMEOUT).unwrap();
    assert_eq!(t.kind(), "ecs");
    let before = t.state().await.unwrap();
    assert_eq!(before.desired, 2);

    t.set_replicas(7).await.unwrap();
    assert_eq!(desired_in_moto(&sdk, &cluster, &svc).await, 7);
    let after: Replicas = t.current().await.unwrap();
    assert_eq!(after.desired, 7);
    assert!(after.ready.is_some(), "runningCount is reported as ready");

    t.set_replicas(0).await.unwrap();
    assert_eq!(t.state().await.unwrap().desired, 0);
}

#[tokio::test]
async fn the_state_reports_desired_running_and_pending_counts() {
    let sdk = sdk().await;
    let (cluster, svc) = service(&sdk, 3).await;
    let t = EcsTarget::new(&config(&cluster, &svc), &sdk, TIMEOUT).unwrap();
    let EcsServiceState {
        desired,
        running,
        pending,
    } = t.state().await.unwrap();
    assert_eq!(desired, 3);
    // moto does not run tasks; the counts are whatever it reports, but never
    // more than were asked for.
    assert!(
        running + pending <= 3,
        "running {running} pending {pending}"
    );
}

#[tokio::test]
async fn a_missing_service_is_not_found_and_nothing_is_written() {
    let sdk = sdk().await;
    let (cluster, _svc) = service(&sdk, 1).await;
    let t = EcsTarget::new(&config(&cluster, "no-such-service"), &sdk, TIMEOUT).unwrap();
    let err = expect_err(t.current().await);
    assert_eq!(err.metric_label(), "not_found", "{err}");
    assert!(err.to_string().contains("no-such-service"), "{err}");
    let err = expect_err(t.set_replicas(3).await);
    assert_eq!(err.metric_label(), "not_found", "{err}");
}

#[tokio::test]
async fn a_service_in_another_cluster_is_not_found_and_stays_unchanged() {
    let sdk = sdk().await;
    let (cluster_a, svc_a) = service(&sdk, 2).await;
    let (cluster_b, _svc_b) = service(&sdk, 1).await;
    // The config names cluster B but the service lives in cluster A.
    let t = EcsTarget::new(&config(&cluster_b, &svc_a), &sdk, TIMEOUT).unwrap();
    let err = expect_err(t.current().await);
    assert_eq!(err.metric_label(), "not_found", "{err}");
    assert!(err.to_string().contains("cluster"), "{err}");
    let err = expect_err(t.set_replicas(5).await);
    assert_eq!(err.metric_label(), "not_found", "{err}");
    assert_eq!(desired_in_moto(&sdk, &cluster_a, &svc_a).await, 2);
}

#[tokio::test]
async fn a_missing_cluster_is_not_found() {
    let sdk = sdk().await;
    let t = EcsTarget::new(&config(&unique("no-cluster"), "worker"), &sdk, TIMEOUT).unwrap();
    let err = expect_err(t.current().await);
    assert_eq!(err.metric_label(), "not_found", "{err}");
}

#[tokio::test]
async fn tasks_beyond_int32_are_invalid_and_nothing_is_written() {
    let sdk = sdk().await;
    let (cluster, svc) = service(&sdk, 2).await;
    let t = EcsTarget::new(&config(&cluster, &svc), &sdk, TIMEOUT).unwrap();
    let err = expect_err(t.set_replicas(u32::MAX).await);
    assert_eq!(err.metric_label(), "invalid", "{err}");
    assert_eq!(desired_in_moto(&sdk, &cluster, &svc).await, 2);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_or_timeout_within_the_timeout() {
    let timeout = Duration::from_secs(3);
    let endpoint = AwsEndpoint {
        region: Some(REGION.into()),
        // Nothing listens on port 9 (discard) on the test machines.
        endpoint_url: Some("http://127.0.0.1:9".into()),
    };
    let base = load(&endpoint, timeout).await;
    let sdk = base
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "qscale-tests",
        )))
        .build();
    let mut cfg = config("c", "s");
    cfg.endpoint_url = Some("http://127.0.0.1:9".into());
    let t = EcsTarget::new(&cfg, &sdk, timeout).unwrap();
    let started = std::time::Instant::now();
    let err = expect_err(t.current().await);
    assert!(
        matches!(err.metric_label(), "unavailable" | "timeout"),
        "{err}"
    );
    assert!(started.elapsed() <= timeout + Duration::from_millis(500));
}
