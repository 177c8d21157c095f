//! TLS for wss:// and https:// (feature `tls`): rustls with the `ring` provider, trusting either
//! the Mozilla roots compiled in by `webpki-roots` or only the CAs of a private PEM file.
//!
//! webpki-roots rather than rustls-native-certs: ureq's rustls support links webpki-roots
//! anyway, so it costs the binary nothing more, and a minimal host often has no CA bundle at all.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::Error;

/// The trust both clients (WebSocket and HTTP) share.
#[derive(Clone)]
pub(crate) struct Tls {
    /// The private CA's certificates, when one was given.
    private_ca: Option<Vec<CertificateDer<'static>>>,
    config: Arc<ClientConfig>,
}

impl Tls {
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<Tls, Error> {
        let private_ca = match ca_file {
            Some(path) => Some(read_pem(path)?),
            None => None,
        };
        let mut roots = RootCertStore::empty();
        match &private_ca {
            Some(certs) => {
                for cert in certs {
                    roots.add(cert.clone()).map_err(|e| {
                        Error::Tls(format!("{}: unusable CA certificate: {e}", show(ca_file)))
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            private_ca,
            config: Arc::new(config),
        })
    }

    /// A client session for `host` (a DNS name or an IP address).
    pub(crate) fn connect(&self, host: &str) -> Result<ClientConnection, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("`{host}` is not a valid TLS server name: {e}"))?;
        ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())
    }

    /// The same trust for ureq.
    pub(crate) fn ureq_config(&self) -> ureq::tls::TlsConfig {
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let roots = match &self.private_ca {
            Some(certs) => RootCerts::new_with_certs(
                &certs
                    .iter()
                    .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                    .collect::<Vec<_>>(),
            ),
            None => RootCerts::WebPki,
        };
        TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(roots)
            .build()
    }
}

fn show(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let what = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Tls(format!("{what}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{what}: no CERTIFICATE in the PEM file"
        )));
    }
    Ok(certs)
}
