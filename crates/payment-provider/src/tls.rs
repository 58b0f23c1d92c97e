//! The API over TLS (rustls): certificate chain and key from PEM files (`TLS_CERT_FILE`,
//! `TLS_KEY_FILE`), read again while serving. A Kubernetes Secret volume is updated by
//! swapping a symlink, and cert-manager renews well before expiry, so the files' *contents*
//! are compared every few seconds (no inotify on a path that is replaced, not written); a
//! changed pair that holds a usable certificate and its key is served to new connections.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Where the certificate and key are, and how often they are read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub reload_every: Duration,
}

impl TlsSettings {
    /// A renewed Secret reaches the pod within about a minute; a few seconds more is nothing.
    pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(5);

    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        TlsSettings {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            reload_every: Self::DEFAULT_RELOAD_EVERY,
        }
    }

    /// Reads and checks both files once: what start-up refuses with exit code 2.
    pub fn check(&self) -> Result<(), TlsError> {
        let (cert_pem, key_pem) = self.read()?;
        certified_key(&cert_pem, &key_pem, &crypto_provider()).map(drop)
    }

    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |var: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| TlsError {
                var,
                reason: format!("cannot read {}: {e}", path.display()),
            })
        };
        Ok((
            read("TLS_CERT_FILE", &self.cert_file)?,
            read("TLS_KEY_FILE", &self.key_file)?,
        ))
    }
}

/// Why the files cannot be served, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct TlsError {
    pub var: &'static str,
    pub reason: String,
}

/// The same crypto as reqwest's rustls in this workspace: one implementation, not two.
fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The chain (leaf first) and the key that belongs to its leaf.
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError {
        var: "TLS_CERT_FILE",
        reason,
    };
    let key_err = |reason: String| TlsError {
        var: "TLS_KEY_FILE",
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("holds no PEM certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| key_err(format!("not a PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            key_err("does not belong to the certificate in TLS_CERT_FILE".into())
        }
        // The certificate was not the one that failed to parse: the key was.
        e => key_err(format!("unusable key: {e}")),
    })
}

/// Hands rustls the certificate the files hold now.
pub struct ReloadingCert {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    current: RwLock<Served>,
}

struct Served {
    key: Arc<CertifiedKey>,
    /// The files' contents it came from: a change is a difference in these.
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.settings.cert_file)
            .field("key_file", &self.settings.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Some(served.key.clone())
    }
}

impl ReloadingCert {
    pub fn load(settings: TlsSettings) -> Result<Self, TlsError> {
        let provider = crypto_provider();
        let (cert_pem, key_pem) = settings.read()?;
        let key = Arc::new(certified_key(&cert_pem, &key_pem, &provider)?);
        Ok(ReloadingCert {
            settings,
            provider,
            current: RwLock::new(Served {
                key,
                cert_pem,
                key_pem,
            }),
        })
    }

    /// Reads the files again; a changed pair that can be served replaces the current one
    /// (`Ok(true)`). A broken pair (half-renewed, or simply wrong) leaves it in place.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = self.settings.read()?;
        {
            let served = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if served.cert_pem == cert_pem && served.key_pem == key_pem {
                return Ok(false);
            }
        }
        let key = Arc::new(certified_key(&cert_pem, &key_pem, &self.provider)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Served {
            key,
            cert_pem,
            key_pem,
        };
        Ok(true)
    }
}

/// The rustls configuration of the API listener, and a task that reads the files again every
/// `reload_every` for as long as the server holds the configuration. Needs a Tokio runtime.
pub fn server_config(settings: &TlsSettings) -> anyhow::Result<rustls::ServerConfig> {
    let resolver = Arc::new(ReloadingCert::load(settings.clone())?);
    let config = rustls::ServerConfig::builder_with_provider(resolver.provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    watch(Arc::downgrade(&resolver), settings.reload_every);
    Ok(config)
}

fn watch(resolver: Weak<ReloadingCert>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            // The server is gone once nothing else holds the resolver.
            let Some(resolver) = resolver.upgrade() else {
                return;
            };
            let reloaded = tokio::task::spawn_blocking(move || {
                let result = resolver.reload();
                (result, resolver)
            })
            .await;
            match reloaded {
                Ok((Ok(true), resolver)) => tracing::info!(
                    cert_file = %resolver.settings.cert_file.display(),
                    "serving the renewed TLS certificate"
                ),
                Ok((Ok(false), _)) => {}
                Ok((Err(e), _)) => tracing::warn!(
                    error = %e,
                    "the TLS certificate files changed but cannot be served; keeping the previous certificate"
                ),
                Err(e) => tracing::warn!(error = %e, "reading the TLS certificate files failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn files(cert: &str, key: &str) -> (tempdir::Dir, TlsSettings) {
        let dir = tempdir::Dir::new();
        std::fs::write(dir.0.join("tls.crt"), cert).expect("write");
        std::fs::write(dir.0.join("tls.key"), key).expect("write");
        let settings = TlsSettings::new(dir.0.join("tls.crt"), dir.0.join("tls.key"));
        (dir, settings)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let path =
                    std::env::temp_dir().join(format!("pp-tls-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&path).expect("temp dir");
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                std::fs::remove_dir_all(&self.0).ok();
            }
        }
    }

    #[test]
    fn each_broken_file_is_named() {
        let (cert, key) = pair("a.example");
        let (_, other_key) = pair("b.example");
        for (cert, key, var) in [
            ("not pem", key.as_str(), "TLS_CERT_FILE"),
            (key.as_str(), key.as_str(), "TLS_CERT_FILE"),
            (cert.as_str(), "not pem", "TLS_KEY_FILE"),
            (cert.as_str(), cert.as_str(), "TLS_KEY_FILE"),
            (cert.as_str(), other_key.as_str(), "TLS_KEY_FILE"),
        ] {
            let (_dir, settings) = files(cert, key);
            let e = settings.check().expect_err(var);
            assert_eq!(e.var, var, "{e}");
        }
        let (_dir, settings) = files(&cert, &key);
        settings.check().expect("a certificate and its key");
        let missing = TlsSettings::new("/nonexistent/tls.crt", "/nonexistent/tls.key");
        assert_eq!(missing.check().expect_err("missing").var, "TLS_CERT_FILE");
    }

    #[test]
    fn a_changed_pair_replaces_the_served_one_and_a_broken_one_does_not() {
        let (cert, key) = pair("a.example");
        let (dir, settings) = files(&cert, &key);
        let resolver = ReloadingCert::load(settings).expect("loads");
        let served = || {
            let current = resolver.current.read().expect("lock");
            current
                .key
                .end_entity_cert()
                .expect("leaf")
                .clone()
                .into_owned()
        };
        let first = served();
        assert!(!resolver.reload().expect("unchanged"));

        let (cert2, key2) = pair("b.example");
        // Half-renewed: the new certificate, the old key. Keep serving the old pair.
        std::fs::write(dir.0.join("tls.crt"), &cert2).expect("write");
        assert_eq!(resolver.reload().expect_err("mismatch").var, "TLS_KEY_FILE");
        assert_eq!(served(), first);

        std::fs::write(dir.0.join("tls.key"), &key2).expect("write");
        assert!(resolver.reload().expect("renewed"));
        assert_ne!(served(), first);
    }
}
