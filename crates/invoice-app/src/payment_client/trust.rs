//! The HTTP client of the charge calls, and whom it trusts for an https:// provider: the CAs
//! of `PAYMENT_PROVIDER_CA_FILE` alone when set (the system's roots otherwise). The file is
//! read again when it changes, as the token file is (a CA bundle ConfigMap updated in place,
//! a CA rotated by cert-manager/trust-manager), and the client is rebuilt with it: a new CA
//! is trusted without a restart. A file that no longer parses keeps the previous client.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::token::{Stamp, stamp};

/// The PEM certificates of a CA bundle file; at least one.
pub fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// How every client of the charge calls is built, whatever it trusts.
#[derive(Clone, Copy)]
pub struct HttpSettings {
    pub timeout: Duration,
    pub max_connections: usize,
    /// The provider's URL is https://: never send a request in clear, redirects included.
    pub https_only: bool,
}

impl HttpSettings {
    fn build(&self, roots: Option<&[reqwest::Certificate]>) -> reqwest::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(2)))
            .pool_max_idle_per_host(self.max_connections)
            .https_only(self.https_only);
        if let Some(roots) = roots {
            builder = builder.tls_built_in_root_certs(false);
            for cert in roots {
                builder = builder.add_root_certificate(cert.clone());
            }
        }
        builder.build()
    }
}

#[derive(Clone)]
pub enum ProviderHttp {
    /// The system's roots.
    Fixed(reqwest::Client),
    /// `PAYMENT_PROVIDER_CA_FILE`'s CAs, as the file holds them now.
    CaFile(Arc<CaFileClient>),
}

impl ProviderHttp {
    pub fn system_roots(settings: HttpSettings) -> anyhow::Result<Self> {
        Ok(ProviderHttp::Fixed(settings.build(None)?))
    }

    pub fn ca_file(settings: HttpSettings, path: PathBuf) -> anyhow::Result<Self> {
        let stamp = stamp(&path);
        let roots = read_ca_bundle(&path).map_err(anyhow::Error::msg)?;
        let client = settings.build(Some(&roots))?;
        Ok(ProviderHttp::CaFile(Arc::new(CaFileClient {
            path,
            settings,
            current: Mutex::new((client, stamp)),
        })))
    }

    /// The client for the next call.
    pub fn client(&self) -> reqwest::Client {
        match self {
            ProviderHttp::Fixed(client) => client.clone(),
            ProviderHttp::CaFile(file) => file.client(),
        }
    }
}

pub struct CaFileClient {
    path: PathBuf,
    settings: HttpSettings,
    current: Mutex<(reqwest::Client, Option<Stamp>)>,
}

impl CaFileClient {
    fn client(&self) -> reqwest::Client {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let now = stamp(&self.path);
        if now.is_some() && now != current.1 {
            let rebuilt = read_ca_bundle(&self.path)
                .and_then(|roots| self.settings.build(Some(&roots)).map_err(|e| e.to_string()));
            match rebuilt {
                Ok(client) => {
                    tracing::info!(path = %self.path.display(), "trusting the changed PAYMENT_PROVIDER_CA_FILE");
                    *current = (client, now);
                }
                // Half-written or wrong: keep trusting what we did; warn once per change.
                Err(e) => {
                    tracing::warn!(error = %e, "PAYMENT_PROVIDER_CA_FILE changed but cannot be used; keeping the previous CAs");
                    current.1 = now;
                }
            }
        }
        current.0.clone()
    }
}
