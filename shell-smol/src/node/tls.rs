//! The trust roots a node uses for `https://` and `wss://`: the platform's roots
//! (rustls-native-certs), plus an optional private CA the operator names (`--ca-cert`). Built once
//! per runtime and shared by the WebSocket client (futures-rustls) and the HTTP client (ureq), so
//! both trust exactly the same certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Where a node's trust comes from.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// A PEM file with one or more CA certificates to trust besides (or instead of) the
    /// platform's roots: a gateway behind a private CA.
    pub extra_ca_pem: Option<PathBuf>,
    /// Skip the platform's roots (trust only `extra_ca_pem`): tests and closed networks.
    pub skip_platform_roots: bool,
}

/// Why the trust roots could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the CA file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("the CA file {path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot build the TLS client: {0}")]
    Rustls(String),
}

/// The roots, as both clients need them.
#[derive(Clone)]
pub struct TrustRoots {
    /// DER certificates (for ureq, which takes its own copy).
    pub certs: Arc<Vec<CertificateDer<'static>>>,
    /// The rustls client configuration for `wss://` (ring provider, ALPN none).
    pub client_config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoots")
            .field("certs", &self.certs.len())
            .finish()
    }
}

impl TrustRoots {
    /// Loads the platform's roots (unreadable ones are skipped: a broken system store must not
    /// stop a node that trusts a private CA) and the private CA file.
    pub fn load(options: &TlsOptions) -> Result<TrustRoots, TlsSetupError> {
        let mut certs = Vec::new();
        if !options.skip_platform_roots {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::debug!(%error, "skipping an unreadable platform root");
            }
            certs.extend(native.certs);
        }
        if let Some(path) = &options.extra_ca_pem {
            certs.extend(read_pem_certs(path)?);
        }
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(certs.iter().cloned());
        if ignored > 0 {
            tracing::debug!(added, ignored, "some root certificates could not be parsed");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(TrustRoots {
            certs: Arc::new(certs),
            client_config: Arc::new(client_config),
        })
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|e| TlsSetupError::CaFile {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::CaFile {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("nodelink-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let options = TlsOptions {
            extra_ca_pem: Some(path.clone()),
            skip_platform_roots: true,
        };
        let error = TrustRoots::load(&options).unwrap_err();
        assert!(
            matches!(error, TlsSetupError::NoCertificate { .. }),
            "{error}"
        );
        let missing = TlsOptions {
            extra_ca_pem: Some(dir.join("missing.pem")),
            skip_platform_roots: true,
        };
        let error = TrustRoots::load(&missing).unwrap_err();
        assert!(error.to_string().contains("missing.pem"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_roots_at_all_still_builds_a_client() {
        let roots = TrustRoots::load(&TlsOptions {
            extra_ca_pem: None,
            skip_platform_roots: true,
        })
        .unwrap();
        assert!(roots.certs.is_empty());
    }
}
