//! The `qscale` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = qscale::cli::Cli::parse();
    match qscale::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("qscale: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// glibc's malloc gives threads that allocate at the same time arenas of
/// their own, up to 8 per core, and memory freed in one arena is reused only
/// by allocations in it. The daemon parses its config on the main thread and
/// runs its scalers on the tokio workers, so the config's parse tree, freed
/// at once, stays resident beside the workers' arenas, and each worker's
/// arena keeps its own holes: at 10 000 demo scalers that was about a
/// quarter of the RSS (scripts/footprint.sh 10000 60: 251 MiB with the
/// default, 195 MiB with 2 arenas; docs/performance.md). Two arenas keep
/// two workers from queueing on one lock. `MALLOC_ARENA_MAX` set in the
/// environment wins. The release image is a static musl build, whose malloc
/// has no arenas; this is for glibc builds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets a tunable of the C allocator; it is called
        // first thing in main, before any other thread exists, and an
        // unknown or refused setting only makes it return 0.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
