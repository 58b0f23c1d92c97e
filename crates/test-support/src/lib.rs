//! Test support for both services, never a normal dependency of either: databases cloned
//! from a migrated template, the real provider on a random port, a TCP proxy to cut, a
//! stand-in OIDC / ServiceAccount issuer, the charts' settings, and the one place that
//! decides whether PostgreSQL tests run.

use std::path::{Path, PathBuf};
use std::sync::Once;

pub mod chart;
pub mod db;
pub mod issuer;
pub mod pki;
pub mod provider;
pub mod proxy;

mod macros;

pub use chart::chart_config_edges;
pub use db::{Backend, DbUrl, Service, TestDb};
pub use issuer::{Issuer, SigningKey, TlsFront};
pub use provider::{TEST_TOKEN, TestProvider};
pub use proxy::{TcpProxy, server_addr, via};

/// The checkout the running test belongs to: above `CARGO_MANIFEST_DIR` as cargo and
/// nextest set it when they run the test. The compile-time value names whichever checkout
/// built the binary, and one target directory may serve several.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .expect("CARGO_MANIFEST_DIR is set (tests run through cargo or nextest)");
    Path::new(&manifest_dir)
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or_else(|| panic!("no Cargo.lock above {}", Path::new(&manifest_dir).display()))
        .to_owned()
}

/// Logs are silent unless `TEST_LOG` is set.
pub fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                .with_test_writer()
                .try_init();
        }
    });
}
