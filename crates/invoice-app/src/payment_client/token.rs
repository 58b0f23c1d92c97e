//! The bearer token shown to payment-provider. From `PAYMENT_PROVIDER_TOKEN_FILE` it is
//! read again whenever the file changes, because the kubelet rotates a projected
//! ServiceAccount token in place (a new file swapped in) well before the old one expires.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

#[derive(Clone)]
pub enum ProviderToken {
    Fixed(SecretString),
    File(Arc<TokenFile>),
}

impl From<SecretString> for ProviderToken {
    fn from(token: SecretString) -> Self {
        ProviderToken::Fixed(token)
    }
}

impl ProviderToken {
    /// A token kept in `path`, starting from `initial` (read at start-up).
    pub fn file(path: PathBuf, initial: SecretString) -> Self {
        let stamp = stamp(&path);
        ProviderToken::File(Arc::new(TokenFile {
            path,
            current: Mutex::new((initial, stamp)),
        }))
    }

    /// The token to send now.
    pub fn current(&self) -> SecretString {
        match self {
            ProviderToken::Fixed(token) => token.clone(),
            ProviderToken::File(file) => file.current(),
        }
    }
}

pub struct TokenFile {
    path: PathBuf,
    current: Mutex<(SecretString, Option<Stamp>)>,
}

/// What changes when the file is rewritten or swapped: modified time, size, inode.
pub(super) type Stamp = (SystemTime, u64, u64);

pub(super) fn stamp(path: &std::path::Path) -> Option<Stamp> {
    // Follows the kubelet's `..data` symlink to the file really in use. A stat per charge
    // call is a few microseconds next to the call itself.
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

impl TokenFile {
    fn current(&self) -> SecretString {
        let mut current = match self.current.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = stamp(&self.path);
        if now.is_some() && now != current.1 {
            match std::fs::read_to_string(&self.path) {
                Ok(text) if !text.trim().is_empty() => {
                    *current = (SecretString::from(text.trim().to_owned()), now);
                    tracing::info!(path = %self.path.display(), "read the rotated payment-provider token");
                }
                // Half-written or unreadable: keep the token we have, try again next call.
                _ => tracing::warn!(
                    path = %self.path.display(),
                    "PAYMENT_PROVIDER_TOKEN_FILE changed but holds no token; keeping the previous one"
                ),
            }
        }
        let token = current.0.expose_secret().to_owned();
        SecretString::from(token)
    }
}
