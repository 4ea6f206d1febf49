//! End-to-end control benchmark (ignored by default; run with
//! `scripts/bench.sh control [trace] [--smoke]`): how well a controller
//! keeps message age under the objective, and at what cost, when real
//! messages flow through a real queue and real replicas are written to a
//! real Deployment (kube-apiserver).
//!
//! The queue is a Redis list in the reliable-queue pattern by default
//! (`QSCALE_BENCH_QUEUE=redis`: a worker moves a message to a processing
//! list, holds it, removes it; qscale's `redis` source reads both lengths),
//! or an SQS queue in moto (`QSCALE_BENCH_QUEUE=sqs`). moto's SQS costs
//! grow with the backlog (every send and receive walks the queue: about
//! 0.5 s per call at 1 000 waiting messages here), so a flash crowd's
//! backlog makes any compressed run through it untrustworthy; Redis keeps
//! every operation O(1). Neither queue measures the oldest message's age,
//! so qscale estimates it in both.
//!
//! The simulator (`qscale simulate`) answers the same question in virtual
//! time with a model of the queue; this benchmark exists to check that the
//! daemon, its SQS source, its Kubernetes target and the timing between
//! them deliver what the model promises. Everything runs on a clock
//! compressed `QSCALE_BENCH_SCALE` times (10 by default): the harness's own
//! [`Clock`], and `qscale run --time-scale` for the daemon, so a 30-minute
//! trace takes 3 minutes.
//!
//! The harness plays every part except the controller:
//! - a producer that sends the trace's messages on schedule (each body
//!   carries its id and virtual send time);
//! - an emulated kubelet that polls `spec.replicas`: each new replica
//!   becomes a worker after a start-up delay, scale-down removes
//!   not-yet-started pods first, and it writes the Deployment's status as
//!   the missing controller-manager would;
//! - workers that receive one message at a time, hold it for the service
//!   time, then delete it.
//!
//! The controller is either `qscale run` (a child process) or a model of
//! KEDA's SQS scaler feeding the HPA (`qscale::simulate::hpa`, written from
//! the published algorithm, not on qscale's policy) that writes
//! `spec.replicas` itself. The benchmark prints figures and checks its own
//! fidelity (producer lag, drain rate of saturated workers); it fails only
//! on errors or a run that moved nothing (no scale-up, under 90 % of the
//! messages received), never on a figure.

#[path = "support/kube.rs"]
mod kube_support;
#[path = "support/moto.rs"]
mod moto;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use qscale::clock::{Clock, TimeScale};
use qscale::simulate::hpa::{Hpa, HpaParams};
use qscale::world::model::Observation;
use redis::AsyncCommands;
use serde_json::json;
use tokio::time::Instant;

/// Seconds a worker holds a message (virtual).
const SERVICE_SECONDS: f64 = 2.0;
/// Seconds from a new replica to a worker taking messages (virtual).
const STARTUP_SECONDS: f64 = 30.0;
/// The age objective (`max_message_age = "2m"`), seconds.
const AGE_OBJECTIVE: f64 = 120.0;
const MESSAGES_PER_REPLICA: u32 = 10;
const MIN_REPLICAS: u32 = 1;
const MAX_REPLICAS: u32 = 100;
/// A gap in arrivals this long makes the next message an onset, whose
/// reaction (first replica increase after it) is measured.
const IDLE_BEFORE_ONSET: f64 = 60.0;
/// Trace seconds a `--smoke` run replays.
const SMOKE_SECONDS: f64 = 300.0;
/// A producer this far behind the trace (virtual seconds) aborts the run:
/// its figures would describe an overloaded moto, not the controller, and
/// the run would take many times its planned length.
/// Fewer replica-capacity messages than this in saturated seconds are too
/// little evidence to judge the drain rate by.
const MIN_SATURATED_CAPACITY: f64 = 50.0;
const ABORT_LAG_SECONDS: f64 = 60.0;

/// What the benchmark was asked to do (from the environment that
/// scripts/bench.sh sets).
struct Settings {
    trace: PathBuf,
    queue: QueueKind,
    smoke: bool,
    scale: TimeScale,
    controllers: Vec<Controller>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum QueueKind {
    Redis,
    Sqs,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Controller {
    Qscale,
    KedaHpa,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Qscale => "qscale run",
            Controller::KedaHpa => "KEDA+HPA model",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Controller::Qscale => "qscale",
            Controller::KedaHpa => "keda",
        }
    }
}

impl Settings {
    fn from_env() -> Settings {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let trace = std::env::var("QSCALE_BENCH_TRACE")
            .ok()
            .filter(|t| !t.is_empty())
            .map(|t| {
                let p = PathBuf::from(&t);
                if p.exists() {
                    p
                } else {
                    root.join("traces").join(format!("{t}.csv"))
                }
            })
            .unwrap_or_else(|| root.join("traces/flash-crowd.csv"));
        let scale = std::env::var("QSCALE_BENCH_SCALE")
            .unwrap_or_else(|_| "10".into())
            .parse::<TimeScale>()
            .unwrap_or_else(|e| panic!("QSCALE_BENCH_SCALE: {e}"));
        let controllers = match std::env::var("QSCALE_BENCH_CONTROLLERS").as_deref() {
            Ok("qscale") => vec![Controller::Qscale],
            Ok("keda") => vec![Controller::KedaHpa],
            _ => vec![Controller::Qscale, Controller::KedaHpa],
        };
        let queue = match std::env::var("QSCALE_BENCH_QUEUE").as_deref() {
            Ok("sqs") => QueueKind::Sqs,
            Ok("redis") | Ok("") | Err(_) => QueueKind::Redis,
            Ok(other) => panic!("QSCALE_BENCH_QUEUE: {other:?} is neither redis nor sqs"),
        };
        Settings {
            trace,
            queue,
            smoke: std::env::var("QSCALE_BENCH_SMOKE").is_ok_and(|v| v == "1"),
            scale,
            controllers,
        }
    }
}

/// `t_seconds,arrivals` rows as virtual send times, each bin's messages
/// spread evenly over it (as the simulator does).
fn load_trace(path: &Path, limit: Option<f64>) -> (Vec<f64>, f64) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read trace {}: {e}", path.display()));
    let mut rows: Vec<(f64, u64)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("t_seconds") {
            continue;
        }
        let (t, a) = line
            .split_once(',')
            .unwrap_or_else(|| panic!("{}:{}: expected t_seconds,arrivals", path.display(), n + 1));
        let t: f64 = t.trim().parse().expect("t_seconds is a number");
        let a: u64 = a.trim().parse().expect("arrivals is a whole number");
        rows.push((t, a));
    }
    assert!(!rows.is_empty(), "trace {} has no rows", path.display());
    let width = if rows.len() > 1 {
        rows[1].0 - rows[0].0
    } else {
        1.0
    };
    let mut end = rows.last().map(|r| r.0 + width).unwrap_or(0.0);
    if let Some(l) = limit {
        end = end.min(l);
    }
    let mut times = Vec::new();
    for (i, &(t, a)) in rows.iter().enumerate() {
        let next = rows.get(i + 1).map(|r| r.0).unwrap_or(t + width);
        for k in 0..a {
            let at = t + (k as f64 + 0.5) * (next - t) / a as f64;
            if at < end {
                times.push(at);
            }
        }
    }
    (times, end)
}

/// Everything the parts of one run share.
struct Run {
    clock: Clock,
    v0: Instant,
    queue: Queue,
    /// Sent, not yet received: id -> virtual send time.
    waiting: Mutex<BTreeMap<u64, f64>>,
    ages: Mutex<Vec<f64>>,
    completed: AtomicU64,
    busy_seconds: Mutex<f64>,
    /// Producer: how far behind schedule each batch was sent (virtual s).
    lags: Mutex<Vec<f64>>,
    /// Replica counts the kubelet saw change: (virtual time, from, to).
    changes: Mutex<Vec<(f64, u32, u32)>>,
    pods: Mutex<Vec<Pod>>,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
    /// Set when the producer gave up (see [`ABORT_LAG_SECONDS`]).
    aborted_at: Mutex<Option<f64>>,
}

struct Pod {
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
}

/// The real queue the messages flow through (see the module doc).
enum Queue {
    Sqs {
        client: aws_sdk_sqs::Client,
        url: String,
        endpoint: String,
    },
    Redis {
        conn: redis::aio::MultiplexedConnection,
        url: String,
        key: String,
    },
}

/// A received message: its body and what deletes it.
struct Received {
    body: String,
    handle: String,
}

impl Queue {
    fn kind(&self) -> &'static str {
        match self {
            Queue::Sqs { .. } => "SQS (moto)",
            Queue::Redis { .. } => "Redis list",
        }
    }

    fn processing_key(key: &str) -> String {
        format!("{key}:processing")
    }

    async fn send(&self, bodies: Vec<String>) -> Result<(), String> {
        match self {
            Queue::Sqs { client, url, .. } => {
                let entries: Vec<SendMessageBatchRequestEntry> = bodies
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(format!("m{i}"))
                            .message_body(b)
                            .build()
                            .expect("entry")
                    })
                    .collect();
                client
                    .send_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("send: {}", DisplayErrorContext(&e)))
            }
            Queue::Redis { conn, key, .. } => {
                let mut c = conn.clone();
                c.rpush::<_, _, ()>(key, bodies)
                    .await
                    .map_err(|e| format!("send: {e}"))
            }
        }
    }

    /// One message, or `None` when none is waiting (after a short wait).
    async fn receive(&self) -> Result<Option<Received>, String> {
        match self {
            Queue::Sqs { client, url, .. } => {
                let got = client
                    .receive_message()
                    .queue_url(url)
                    .max_number_of_messages(1)
                    // Long polling in real seconds: an idle worker asks once
                    // a second instead of hammering moto.
                    .wait_time_seconds(1)
                    .visibility_timeout(600)
                    .send()
                    .await
                    .map_err(|e| format!("receive: {}", DisplayErrorContext(&e)))?;
                Ok(got
                    .messages
                    .unwrap_or_default()
                    .into_iter()
                    .next()
                    .map(|m| Received {
                        body: m.body().unwrap_or_default().to_string(),
                        handle: m.receipt_handle().unwrap_or_default().to_string(),
                    }))
            }
            Queue::Redis { conn, key, .. } => {
                let mut c = conn.clone();
                let got: Option<String> = redis::cmd("LMOVE")
                    .arg(key)
                    .arg(Self::processing_key(key))
                    .arg("LEFT")
                    .arg("RIGHT")
                    .query_async(&mut c)
                    .await
                    .map_err(|e| format!("receive: {e}"))?;
                if got.is_none() {
                    // Real time: 50 ms between asks of an idle worker.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(got.map(|body| Received {
                    handle: body.clone(),
                    body,
                }))
            }
        }
    }

    async fn delete(&self, handle: String) -> Result<(), String> {
        match self {
            Queue::Sqs { client, url, .. } => client
                .delete_message()
                .queue_url(url)
                .receipt_handle(handle)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("delete: {}", DisplayErrorContext(&e))),
            Queue::Redis { conn, key, .. } => {
                let mut c = conn.clone();
                c.lrem::<_, _, ()>(Self::processing_key(key), 1, handle)
                    .await
                    .map_err(|e| format!("delete: {e}"))
            }
        }
    }

    /// (waiting, in flight), as KEDA's scalers read them.
    async fn depth(&self) -> Result<(u64, u64), String> {
        match self {
            Queue::Sqs { client, url, .. } => {
                use aws_sdk_sqs::types::QueueAttributeName as A;
                let got = client
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(A::ApproximateNumberOfMessages)
                    .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                    .send()
                    .await
                    .map_err(|e| format!("queue depth: {}", DisplayErrorContext(&e)))?;
                let attrs = got.attributes.unwrap_or_default();
                let n = |a: A| {
                    attrs
                        .get(&a)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                Ok((
                    n(A::ApproximateNumberOfMessages),
                    n(A::ApproximateNumberOfMessagesNotVisible),
                ))
            }
            Queue::Redis { conn, key, .. } => {
                let mut c = conn.clone();
                let waiting: u64 = c.llen(key).await.map_err(|e| format!("depth: {e}"))?;
                let flight: u64 = c
                    .llen(Self::processing_key(key))
                    .await
                    .map_err(|e| format!("depth: {e}"))?;
                Ok((waiting, flight))
            }
        }
    }

    /// The `[scaler.source]` table qscale reads this queue with.
    fn source_toml(&self) -> String {
        match self {
            Queue::Sqs { url, endpoint, .. } => format!(
                "kind = \"sqs\"\nqueue_url = \"{url}\"\nendpoint_url = \"{endpoint}\"\nregion = \"us-east-1\"\ncloudwatch = false\n"
            ),
            Queue::Redis { url, key, .. } => format!(
                "kind = \"redis\"\nurl = \"{url}\"\nkey = \"{key}\"\nin_flight_list = \"{}\"\n",
                Self::processing_key(key)
            ),
        }
    }
}

impl Run {
    fn vnow(&self) -> f64 {
        self.clock
            .now()
            .saturating_duration_since(self.v0)
            .as_secs_f64()
    }

    async fn sleep_until_v(&self, t: f64) {
        let at = self.v0 + Duration::from_secs_f64(t.max(0.0));
        self.clock.sleep_until(at).await
    }

    fn error(&self, what: String) {
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
            e.push(what);
        }
    }

    fn pod_counts(&self) -> (u32, u32) {
        let pods = self.pods.lock().unwrap();
        let ready = pods
            .iter()
            .filter(|p| p.ready.load(Ordering::Relaxed))
            .count();
        (pods.len() as u32, ready as u32)
    }
}

/// Batches the producer keeps in flight at once, so a slow round trip to
/// moto delays the schedule less.
const SENDS_IN_FLIGHT: usize = 8;

/// Send the trace on schedule in batches of up to 10 (SendMessageBatch),
/// all messages due by now in one go, several batches at a time.
async fn producer(run: Arc<Run>, times: Vec<f64>) {
    let mut i = 0;
    let mut sends = tokio::task::JoinSet::new();
    while i < times.len() && !run.stop.load(Ordering::Relaxed) {
        if run.aborted_at.lock().unwrap().is_some() {
            break;
        }
        while sends.len() >= SENDS_IN_FLIGHT {
            let _ = sends.join_next().await;
        }
        run.sleep_until_v(times[i]).await;
        let now = run.vnow();
        let mut due = Vec::new();
        while i < times.len() && times[i] <= now && due.len() < 10 {
            due.push((i as u64, times[i]));
            i += 1;
        }
        let sent_at = run.vnow();
        let bodies: Vec<String> = due
            .iter()
            .map(|&(id, _)| format!("{id} {sent_at}"))
            .collect();
        {
            let mut w = run.waiting.lock().unwrap();
            for &(id, _) in &due {
                w.insert(id, sent_at);
            }
        }
        let run = run.clone();
        sends.spawn(async move {
            if let Err(e) = run.queue.send(bodies).await {
                run.error(e);
            }
            let lag = run.vnow() - due[0].1;
            run.lags.lock().unwrap().push(lag);
            if lag > ABORT_LAG_SECONDS {
                run.aborted_at.lock().unwrap().get_or_insert(due[0].1);
            }
        });
    }
    while sends.join_next().await.is_some() {}
}

/// One worker: starts after the start-up delay, then receives one message
/// at a time, holds it for the service time, deletes it.
async fn worker(run: Arc<Run>, ready_at: f64, stop: Arc<AtomicBool>, ready: Arc<AtomicBool>) {
    while run.vnow() < ready_at {
        if stop.load(Ordering::Relaxed) || run.stop.load(Ordering::Relaxed) {
            return;
        }
        run.clock.sleep(Duration::from_secs(1)).await;
    }
    ready.store(true, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) && !run.stop.load(Ordering::Relaxed) {
        let m = match run.queue.receive().await {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                run.error(e);
                run.clock.sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let now = run.vnow();
        let id: Option<u64> = m.body.split(' ').next().and_then(|s| s.parse().ok());
        if let Some(id) = id
            && let Some(sent) = run.waiting.lock().unwrap().remove(&id)
        {
            run.ages.lock().unwrap().push(now - sent);
        }
        run.clock
            .sleep(Duration::from_secs_f64(SERVICE_SECONDS))
            .await;
        *run.busy_seconds.lock().unwrap() += SERVICE_SECONDS;
        if let Err(e) = run.queue.delete(m.handle).await {
            run.error(e);
        }
        run.completed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The emulated kubelet and controller-manager: follow `spec.replicas`,
/// start and stop workers, write the Deployment's status.
async fn kubelet(run: Arc<Run>, api: Api<Deployment>, name: String) {
    let mut last_spec: Option<u32> = None;
    let mut last_status = (u32::MAX, u32::MAX);
    while !run.stop.load(Ordering::Relaxed) {
        match api.get_scale(&name).await {
            Ok(s) => {
                let want = s.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32;
                if let Some(prev) = last_spec
                    && prev != want
                {
                    run.changes.lock().unwrap().push((run.vnow(), prev, want));
                }
                last_spec = Some(want);
                let mut pods = run.pods.lock().unwrap();
                while (pods.len() as u32) < want {
                    let stop = Arc::new(AtomicBool::new(false));
                    let ready = Arc::new(AtomicBool::new(false));
                    let ready_at = run.vnow() + STARTUP_SECONDS;
                    tokio::spawn(worker(run.clone(), ready_at, stop.clone(), ready.clone()));
                    pods.push(Pod { stop, ready });
                }
                while (pods.len() as u32) > want {
                    // Not-yet-started pods go first, the newest of them first.
                    let idx = pods
                        .iter()
                        .rposition(|p| !p.ready.load(Ordering::Relaxed))
                        .unwrap_or(pods.len() - 1);
                    let p = pods.remove(idx);
                    p.stop.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => run.error(format!("kubelet get scale: {e}")),
        }
        let counts = run.pod_counts();
        if counts != last_status {
            let (n, ready) = counts;
            let status = json!({"status": {
                "replicas": n, "updatedReplicas": n,
                "readyReplicas": ready, "availableReplicas": ready,
            }});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => last_status = counts,
                Err(e) => run.error(format!("kubelet status: {e}")),
            }
        }
        run.clock.sleep(Duration::from_secs(1)).await;
    }
}

/// The KEDA aws-sqs-queue scaler (queueLength 10, pollingInterval 30 s)
/// feeding the HPA (sync 15 s, tolerance 0.1, default behavior), stepped
/// every virtual second, writing `spec.replicas` through /scale.
async fn keda_hpa(run: Arc<Run>, api: Api<Deployment>, name: String) {
    let params =
        HpaParams::keda_defaults(f64::from(MESSAGES_PER_REPLICA), MIN_REPLICAS, MAX_REPLICAS);
    let polling = params.polling_interval;
    let sync = params.sync_period.max(1);
    let mut keda_log = std::env::var_os("QSCALE_BENCH_KEDA_LOG")
        .map(|p| std::fs::File::create(p).expect("QSCALE_BENCH_KEDA_LOG"));
    let mut hpa = Hpa::new(params);
    let mut desired = MIN_REPLICAS;
    let (mut visible, mut in_flight) = (0u64, 0u64);
    let mut t: u64 = 0;
    while !run.stop.load(Ordering::Relaxed) {
        run.sleep_until_v(t as f64).await;
        if t.is_multiple_of(polling) {
            // KEDA's SQS scaler: ApproximateNumberOfMessages plus
            // ApproximateNumberOfMessagesNotVisible.
            match queue_depth(&run).await {
                Ok((v, f)) => (visible, in_flight) = (v, f),
                Err(e) => run.error(e),
            }
        }
        let (pods, ready) = run.pod_counts();
        let o = Observation {
            now: t,
            visible,
            in_flight,
            oldest_age: 0.0,
            desired,
            pods,
            ready,
            billed: pods,
        };
        let r = hpa.tick(t, &o);
        // QSCALE_BENCH_KEDA_LOG=<file>: what the model saw and did at each
        // HPA sync, to set beside the simulator's when calibrating it (the
        // replica changes alone do not show why a proposal differed).
        if let Some(log) = &mut keda_log
            && t.is_multiple_of(sync)
        {
            use std::io::Write as _;
            let line = format!(
                "t={t} v={:.2} metric={} vis={visible} fl={in_flight} pods={pods} ready={ready} desired={desired} -> {r:?} done={}\n",
                run.vnow(),
                visible + in_flight,
                run.completed.load(Ordering::Relaxed)
            );
            if let Err(e) = log.write_all(line.as_bytes()) {
                run.error(format!("QSCALE_BENCH_KEDA_LOG: {e}"));
            }
        }
        if let Some(n) = r {
            let patch = json!({"spec": {"replicas": n}});
            match api
                .patch_scale(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => desired = n,
                Err(e) => run.error(format!("KEDA+HPA write: {e}")),
            }
        }
        t += 1;
    }
}

async fn queue_depth(run: &Run) -> Result<(u64, u64), String> {
    run.queue.depth().await
}

/// What the sampler integrates, once a virtual second.
#[derive(Default)]
struct Tally {
    seconds: f64,
    over_objective: f64,
    replica_seconds: f64,
    /// Seconds in which every pod was ready and had a message waiting:
    /// the capacity they should have delivered and what they did.
    saturated_capacity: f64,
    saturated_done: f64,
}

async fn sampler(run: Arc<Run>, until: f64) -> Tally {
    let mut tally = Tally::default();
    let mut t = 1.0;
    let mut prev_done = run.completed.load(Ordering::Relaxed);
    let mut prev_saturated = false;
    while t <= until {
        run.sleep_until_v(t).await;
        let now = run.vnow();
        let (pods, ready) = run.pod_counts();
        let (waiting, oldest) = {
            let w = run.waiting.lock().unwrap();
            (w.len() as u32, w.values().next().copied())
        };
        tally.seconds += 1.0;
        tally.replica_seconds += f64::from(pods);
        if oldest.is_some_and(|s| now - s > AGE_OBJECTIVE) {
            tally.over_objective += 1.0;
        }
        let done = run.completed.load(Ordering::Relaxed);
        let saturated = ready > 0 && ready == pods && waiting >= ready;
        if saturated && prev_saturated {
            tally.saturated_capacity += f64::from(ready) / SERVICE_SECONDS;
            tally.saturated_done += (done - prev_done) as f64;
        }
        prev_saturated = saturated;
        prev_done = done;
        // The trace is over and everything is drained: stop early.
        if run.stop.load(Ordering::Relaxed) {
            break;
        }
        t += 1.0;
    }
    tally
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Virtual seconds from each onset (first message after a quiet minute) to
/// the first replica increase after it.
fn reactions(times: &[f64], changes: &[(f64, u32, u32)]) -> Vec<f64> {
    let mut onsets = Vec::new();
    let mut prev: Option<f64> = None;
    for &t in times {
        if prev.is_none_or(|p| t - p >= IDLE_BEFORE_ONSET)
            && (prev.is_some() || t >= IDLE_BEFORE_ONSET)
        {
            onsets.push(t);
        }
        prev = Some(t);
    }
    onsets
        .iter()
        .filter_map(|&o| {
            changes
                .iter()
                .find(|&&(at, from, to)| at >= o && to > from)
                .map(|&(at, _, _)| at - o)
        })
        .collect()
}

/// `QSCALE_BENCH_SNIPPET=<file>`: a `qscale tune` snippet (`[[scaler]]`
/// with the keys to set) merged into the benchmark's scaler, key by key as
/// the tune report tells a user to, so a tuned policy is measured end to
/// end (scripts/tune-vs-e2e.sh). Its scaler name is ignored.
fn with_snippet(config: String) -> String {
    let Some(path) = std::env::var("QSCALE_BENCH_SNIPPET")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        return config;
    };
    fn deep(into: &mut toml::Table, from: &toml::Table) {
        for (k, v) in from {
            match (into.get_mut(k), v) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => deep(a, b),
                _ => {
                    into.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("QSCALE_BENCH_SNIPPET {path}: {e}"));
    let snippet: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("QSCALE_BENCH_SNIPPET {path}: {e}"));
    let mut patch = snippet
        .get("scaler")
        .and_then(|s| s.as_array())
        .and_then(|a| a.first())
        .and_then(|t| t.as_table())
        .unwrap_or_else(|| panic!("QSCALE_BENCH_SNIPPET {path}: no [[scaler]] table"))
        .clone();
    patch.remove("name");
    let mut doc: toml::Table = config.parse().expect("the benchmark's config is TOML");
    let scaler = doc
        .get_mut("scaler")
        .and_then(|s| s.as_array_mut())
        .and_then(|a| a.first_mut())
        .and_then(|t| t.as_table_mut())
        .expect("the benchmark's [[scaler]]");
    deep(scaler, &patch);
    toml::to_string(&doc).expect("serialize the merged config")
}

fn qscale_config(port: u16, queue: &Queue, ns: &str, name: &str) -> String {
    with_snippet(qscale_config_text(port, queue, ns, name))
}

fn qscale_config_text(port: u16, queue: &Queue, ns: &str, name: &str) -> String {
    let source = queue.source_toml();
    // Extra `[scaler.policy]` lines, to measure other settings (e.g. the
    // old defaults) on the same harness.
    let extra = std::env::var("QSCALE_BENCH_POLICY_EXTRA").unwrap_or_default();
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[[scaler]]
name = "bench"

[scaler.source]
{source}
[scaler.target]
kind = "kubernetes"
namespace = "{ns}"
name = "{name}"

[scaler.policy]
min_replicas = {MIN_REPLICAS}
max_replicas = {MAX_REPLICAS}
messages_per_replica = {MESSAGES_PER_REPLICA}
max_message_age = "2m"
{extra}
"#
    )
}

/// Stops `qscale run` however the run ends.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn one_run(s: &Settings, controller: Controller) {
    let limit = s.smoke.then_some(SMOKE_SECONDS);
    let (times, end) = load_trace(&s.trace, limit);
    let queue = match s.queue {
        QueueKind::Sqs => {
            let endpoint = moto::require().await;
            let client = moto::sqs(&endpoint).await;
            let url = moto::create_queue(&client, &moto::unique("control")).await;
            Queue::Sqs {
                client,
                url,
                endpoint,
            }
        }
        QueueKind::Redis => {
            let url = std::env::var("QSCALE_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let conn = redis::Client::open(url.as_str())
                .expect("redis url")
                .get_multiplexed_async_connection()
                .await
                .unwrap_or_else(|e| panic!("redis at {url} (is it running?): {e}"));
            let key = moto::unique("control");
            Queue::Redis { conn, url, key }
        }
    };
    let k = kube_support::Kube::admin().await;
    let ns = k.namespace("control").await;
    let name = "workers".to_string();
    k.create_deployment(&ns, &name, MIN_REPLICAS as i32).await;
    let api: Api<Deployment> = Api::namespaced(k.client.clone(), &ns);

    let dir = tempfile::tempdir().expect("tempdir");
    let _daemon = if controller == Controller::Qscale {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let cfg = dir.path().join("qscale.toml");
        std::fs::write(&cfg, qscale_config(port, &queue, &ns, &name)).expect("config");
        let log = std::env::var_os("QSCALE_BENCH_DAEMON_LOG")
            .map(|p| std::fs::File::create(p).expect("QSCALE_BENCH_DAEMON_LOG"));
        let child = Command::new(env!("CARGO_BIN_EXE_qscale"))
            .args(["run", "--time-scale", &s.scale.to_string(), "--config"])
            .arg(&cfg)
            .env("KUBECONFIG", kube_support::admin_kubeconfig_path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // QSCALE_BENCH_DAEMON_LOG=<file> keeps the daemon's decisions
            // (RUST_LOG=debug: every poll with its reasons) for diagnosis.
            .env(
                "RUST_LOG",
                if log.is_some() {
                    "qscale=debug"
                } else {
                    "error"
                },
            )
            .stdout(match &log {
                Some(f) => Stdio::from(f.try_clone().expect("log file")),
                None => Stdio::null(),
            })
            .stderr(match log {
                Some(f) => Stdio::from(f),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("qscale run");
        Some(Kill(child))
    } else {
        None
    };

    let clock = Clock::scaled(s.scale);
    let run = Arc::new(Run {
        clock,
        v0: clock.now(),
        queue,
        waiting: Mutex::new(BTreeMap::new()),
        ages: Mutex::new(Vec::new()),
        completed: AtomicU64::new(0),
        busy_seconds: Mutex::new(0.0),
        lags: Mutex::new(Vec::new()),
        changes: Mutex::new(Vec::new()),
        pods: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        aborted_at: Mutex::new(None),
    });
    let kubelet_task = tokio::spawn(kubelet(run.clone(), api.clone(), name.clone()));
    let keda_task = (controller == Controller::KedaHpa)
        .then(|| tokio::spawn(keda_hpa(run.clone(), api.clone(), name.clone())));
    // Drain for at most 5 virtual minutes after the trace (3 in a smoke).
    let drain = if s.smoke { 180.0 } else { 300.0 };
    let sampler_task = tokio::spawn(sampler(run.clone(), end + drain));
    producer(run.clone(), times.clone()).await;
    let aborted = run.aborted_at.lock().unwrap().is_some();
    if !aborted {
        run.sleep_until_v(end).await;
    }
    while !aborted && run.vnow() < end + drain && !run.waiting.lock().unwrap().is_empty() {
        run.clock.sleep(Duration::from_secs(1)).await;
    }
    // Let the messages in flight finish.
    run.clock
        .sleep(Duration::from_secs_f64(SERVICE_SECONDS + 1.0))
        .await;
    let ran = run.vnow();
    run.stop.store(true, Ordering::Relaxed);
    let tally = sampler_task.await.expect("sampler");
    let _ = kubelet_task.await;
    if let Some(t) = keda_task {
        let _ = t.await;
    }
    report(s, controller, &run, &times, end, ran, &tally);
    // The figures are never judged, but a run that moved nothing is broken:
    // the controller must have scaled up and the workers drained the queue.
    let received = run.ages.lock().unwrap().len();
    let scaled_up = run.changes.lock().unwrap().iter().any(|&(_, f, t)| t > f);
    let aborted = run.aborted_at.lock().unwrap().is_some();
    if !aborted {
        assert!(
            scaled_up,
            "{}: the replica count never rose",
            controller.name()
        );
        assert!(
            received * 10 >= times.len() * 9,
            "{}: only {received} of {} messages were received",
            controller.name(),
            times.len()
        );
    }
}

fn report(s: &Settings, c: Controller, run: &Run, times: &[f64], end: f64, ran: f64, t: &Tally) {
    let mut ages = run.ages.lock().unwrap().clone();
    ages.sort_by(|a, b| a.total_cmp(b));
    let left = run.waiting.lock().unwrap().len();
    let busy = *run.busy_seconds.lock().unwrap();
    let changes = run.changes.lock().unwrap().clone();
    // QSCALE_BENCH_CHANGES=<prefix> keeps each run's replica changes
    // (`<prefix>-<controller>.csv`: virtual second, from, to), to set
    // beside the simulator's when calibrating it.
    if let Ok(prefix) = std::env::var("QSCALE_BENCH_CHANGES") {
        let rows: String = changes
            .iter()
            .map(|(t, from, to)| format!("{t:.1},{from},{to}\n"))
            .collect();
        let path = format!("{prefix}-{}.csv", c.label());
        std::fs::write(&path, format!("t_seconds,from,to\n{rows}"))
            .unwrap_or_else(|e| panic!("QSCALE_BENCH_CHANGES {path}: {e}"));
    }
    let react = reactions(times, &changes);
    let mut lags = run.lags.lock().unwrap().clone();
    lags.sort_by(|a, b| a.total_cmp(b));
    let errors = run.errors.lock().unwrap().clone();
    let trace = s
        .trace
        .file_name()
        .map(|f| f.to_string_lossy())
        .unwrap_or_default();
    println!(
        "\n== {} on {trace}{} through a {} at x{}: {} messages over {end:.0} s (virtual), ran {ran:.0} s",
        c.name(),
        if s.smoke { " (smoke slice)" } else { "" },
        run.queue.kind(),
        s.scale,
        times.len()
    );
    println!(
        "  seconds over the age objective (2m): {:.0} s",
        t.over_objective
    );
    println!(
        "  message age at receive: p50 {:.1} s, p95 {:.1} s, max {:.1} s ({} received, {left} never received)",
        percentile(&ages, 0.5),
        percentile(&ages, 0.95),
        ages.last().copied().unwrap_or(f64::NAN),
        ages.len()
    );
    let idle = t.replica_seconds - busy;
    println!(
        "  replica-seconds {:.0}, busy seconds {busy:.0}, idle replica-seconds {idle:.0}, utilization {:.1} %",
        t.replica_seconds,
        100.0 * busy / t.replica_seconds.max(1.0)
    );
    println!(
        "  scale actions {} (max replicas {})",
        changes.len(),
        changes.iter().map(|c| c.2).max().unwrap_or(MIN_REPLICAS)
    );
    if react.is_empty() {
        println!("  reaction: no onset after a quiet minute in this trace");
    } else {
        let r: Vec<String> = react.iter().map(|r| format!("{r:.1} s")).collect();
        println!(
            "  reaction (first message after idle -> first replica increase): {}",
            r.join(", ")
        );
    }
    let lag_p99 = percentile(&lags, 0.99);
    let lag_max = lags.last().copied().unwrap_or(0.0);
    // Judged only on enough evidence: a run whose pool was saturated for a
    // few seconds (qscale on a batch drop: new pods still starting while
    // the ready ones drain) completes a message or two more or less than
    // the whole-second tally expects, which reads as 50 % or 150 %.
    let efficiency = if t.saturated_capacity >= MIN_SATURATED_CAPACITY {
        Some(t.saturated_done / t.saturated_capacity)
    } else {
        None
    };
    println!(
        "  fidelity: producer lag p99 {lag_p99:.2} s, max {lag_max:.2} s; saturated drain {} of replicas / service time over {:.0} replica-capacity messages",
        efficiency
            .map(|e| format!("{:.0} %", e * 100.0))
            .unwrap_or("not judged".into()),
        t.saturated_capacity
    );
    let mut distrust = Vec::new();
    if lag_p99 > 2.0 || lag_max > 10.0 {
        distrust.push(format!(
            "the producer fell behind the trace (p99 {lag_p99:.1} s, max {lag_max:.1} s virtual)"
        ));
    }
    if let Some(e) = efficiency
        && !(0.85..=1.15).contains(&e)
    {
        distrust.push(format!(
            "saturated workers drained at {:.0} % of replicas / service time (moto or this machine is overloaded; try a lower QSCALE_BENCH_SCALE)",
            e * 100.0
        ));
    }
    if let Some(at) = *run.aborted_at.lock().unwrap() {
        distrust.push(format!(
            "aborted: the producer was more than {ABORT_LAG_SECONDS:.0} s behind the trace at trace second {at:.0}"
        ));
    }
    if !errors.is_empty() {
        distrust.push(format!(
            "{} peer errors, first: {}",
            errors.len(),
            errors[0]
        ));
    }
    for d in &distrust {
        println!("  DO NOT TRUST THIS RUN: {d}");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench.sh control"]
async fn control_benchmark() {
    let s = Settings::from_env();
    for &c in &s.controllers {
        one_run(&s, c).await;
    }
}
