//! HTTPS and WSS on the listener (PROTOCOL.md §7): the certificate chain and private key of
//! `TSUNAGI_TLS_CERT` / `TSUNAGI_TLS_KEY` (PEM files) in a rustls server configuration (ring),
//! and their reload on SIGHUP.
//!
//! The configuration asks a resolver for its certificate at every handshake; a reload swaps the
//! pair the resolver holds. New connections get the new pair, open ones keep the session they
//! negotiated (a reload never touches a connection). A pair that fails to load is never
//! swapped in: the old one stays in service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;
use crate::telemetry::Telemetry;

/// Why a certificate or key could not be loaded. Each names the setting and the file, never
/// the file's content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TSUNAGI_TLS_CERT {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("TSUNAGI_TLS_KEY {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TSUNAGI_TLS_CERT {cert} / TSUNAGI_TLS_KEY {key}: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The listener's TLS: what accepts connections, and the files it reloads from.
pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Tls {
    /// Loads the pair of `files`; fails (naming the setting and the file) if either is unusable.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = load_pair(files, &provider)?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(pair))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair {
                cert: files.cert.clone(),
                key: files.key.clone(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // the server speaks HTTP/1.1 only (WebSocket upgrades included)
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            files: files.clone(),
            provider,
            current,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the pair again from the same files; on success new handshakes use it, on failure
    /// the pair in service stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load_pair(&self.files, &self.provider)?;
        *self.current.0.write() = Arc::new(pair);
        Ok(())
    }

    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }
}

/// The pair every new handshake is given (SNI aside: the listener has one certificate).
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = load_chain(&files.cert)?;
    let key = load_key(&files.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            path: files.key.clone(),
            reason: format!("not a usable private key ({e})"),
        })?;
    let pair = CertifiedKey::new(chain, signing_key);
    pair.keys_match().map_err(|e| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: format!("the key does not belong to the first certificate ({e})"),
    })?;
    Ok(pair)
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::Cert {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(pem_problem(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_problem(e)))?;
    if chain.is_empty() {
        return Err(fail("no PEM CERTIFICATE block found".into()));
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // the error says what is wrong with the file, never what is in it
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PEM PRIVATE KEY block (PKCS#8, RSA or EC) found".into()
            }
            other => pem_problem(other),
        },
    })
}

/// A PEM error in words, without the bytes some variants carry.
fn pem_problem(e: rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM block found".into(),
        Error::MissingSectionEnd { .. } => "a PEM block has no END line".into(),
        Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        Error::Base64Decode(_) => "a PEM block is not valid base64".into(),
        _ => "not a valid PEM file".into(),
    }
}

/// Reloads on every SIGHUP until `stop`; a failure is logged (naming the file) and the pair in
/// service stays. The handler is installed before this returns, so a SIGHUP right after start
/// is a reload, never the default (terminate).
pub fn reload_on_sighup(
    tls: Arc<Tls>,
    telemetry: Telemetry,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                got = hangups.recv() => if got.is_none() { break },
            }
            let result = tls.reload();
            let outcome = if result.is_ok() { "ok" } else { "failed" };
            telemetry.record(|| {
                metrics::counter!("tsunagi_tls_reloads_total", "result" => outcome).increment(1)
            });
            match result {
                Ok(()) => tracing::info!(
                    cert = %tls.files.cert.display(),
                    key = %tls.files.key.display(),
                    "SIGHUP: TLS certificate and key reloaded; new connections use them"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS reload failed; still serving the previous certificate"
                ),
            }
        }
    });
    Ok(())
}
