//! TLS for MQTT: client configs that verify the broker against a CA file (or the system roots) and
//! the server config of the embedded broker's TLS listener, all on rustls with the ring provider.
//! It must never fall back to plain TCP: a broken TLS setup fails the connection, loudly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { what: String },
    #[error("{what}: {reason}")]
    BadPem { what: String, reason: String },
    #[error(
        "{path}: no PEM private key in it (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)"
    )]
    NoKey { path: PathBuf },
    #[error("no ca_file given and no system root certificates found: set ca_file to the PEM of the CA that signed the broker's certificate")]
    NoSystemRoots,
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read a PEM file (CA, certificate or key) whole.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM text; `what` names it in errors.
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            what: what.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what: what.into() });
    }
    Ok(certs)
}

/// A client config that trusts the CA(s) in `ca_pem`, or the system roots when `None`; the
/// broker's certificate must name the host the client dials.
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in certificates(pem, "ca_file")? {
                roots.add(cert).map_err(|e| TlsError::BadPem {
                    what: "ca_file".into(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("system root certificates: {e}");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The rumqttc transport for `mqtts://`. Call [`client_config`] first to report a bad setup;
/// if it fails here anyway, the transport trusts nothing, so every connection is refused (and
/// logged by the event loop) rather than sent in the clear.
pub fn client_transport(ca_pem: Option<&[u8]>) -> Transport {
    let config = client_config(ca_pem).unwrap_or_else(|e| {
        tracing::error!("MQTT over TLS cannot verify the broker: {e}");
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                .map(|b| {
                    b.with_root_certificates(RootCertStore::empty())
                        .with_no_client_auth()
                })
                .unwrap_or_else(|_| unreachable!("ring supports the default TLS versions")),
        )
    });
    Transport::tls_with_config(TlsConfiguration::Rustls(config))
}

/// The server side of the embedded broker's TLS listener: certificate chain and private key
/// from PEM files, no client certificates (sites log in with username and password).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&read_pem_file(cert)?, &cert.display().to_string())?;
    let key_pem = read_pem_file(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key.to_path_buf(),
        },
        e => TlsError::BadPem {
            what: key.display().to_string(),
            reason: e.to_string(),
        },
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_name() {
        let e = client_config(Some(b"not a certificate\n")).unwrap_err();
        assert!(
            e.to_string().starts_with("ca_file: no PEM certificate"),
            "{e}"
        );
    }

    #[test]
    fn missing_server_files_name_their_path() {
        let e = server_config(Path::new("/nonexistent/b.crt"), Path::new("/x.key")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/b.crt"), "{e}");
    }
}
