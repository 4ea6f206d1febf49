//! How fast the simulator replays a day: a 24 h trace at 1 s resolution
//! (86 400 steps, ~1.3 M messages) through qscale's policy and through the
//! HPA baseline. The target is under 1 s of wall time per scaler in
//! a release build: `cargo bench --bench simulate`.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use qscale::config::Config;
use qscale::simulate::hpa::{Hpa, HpaParams};
use qscale::simulate::{QscalePolicy, Scenario, run};
use qscale::world::model::WorkerParams;
use qscale::world::trace::{Pattern, Trace};

fn day() -> Scenario {
    let pattern = Pattern::parse("diurnal:min=1,max=30,period=24h,noise=poisson,seed=3")
        .expect("valid pattern");
    Scenario {
        trace: Trace::from_pattern(&pattern, 86_400),
        seconds: 86_400,
        workers: WorkerParams {
            seconds_per_message: 1.0,
            startup_delay: 30.0,
            max_replicas: 60,
            ..WorkerParams::default()
        },
        initial_replicas: 1,
        objective: 60.0,
    }
}

fn bench(c: &mut Criterion) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/simulate-example.toml");
    let cfg = Config::load(&path).expect("example config");
    let scaler = cfg.scalers[0].clone();
    let scenario = day();
    let mut g = c.benchmark_group("simulate_24h_1s");
    g.sample_size(10);
    g.bench_function("qscale_policy", |b| {
        b.iter(|| {
            let mut q = QscalePolicy::new(&scaler, Duration::from_secs(15));
            run(&scenario, &mut q, "qscale")
        })
    });
    g.bench_function("hpa_baseline", |b| {
        b.iter(|| {
            let mut h = Hpa::new(HpaParams::keda_defaults(20.0, 1, 60));
            run(&scenario, &mut h, "hpa")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
