//! TLS for the data frontends: the certificate chain and key of `[tls]` (PEM files), loaded
//! once at start (ring as the crypto provider, as for the rest of the tree). pgwire answers a
//! client's `SSLRequest` with it (psql `sslmode=require`, `verify-full`; pgjdbc `ssl=true`);
//! Flight SQL serves gRPC over TLS only (`grpc+tls://`).

use std::sync::Arc;

use pgwire::tokio::tokio_rustls::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;
use crate::error::{EngineError, StatusCode};

/// ALPN name of the Postgres protocol (PostgreSQL 17 clients send it).
const POSTGRESQL_ALPN: &[u8] = b"postgresql";

fn config_error(message: String) -> EngineError {
    EngineError::statement(StatusCode::ConfigFileError, message)
}

/// The certificate chain and key of `tls`, checked to belong together.
fn load(
    tls: &TlsConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), EngineError> {
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| config_error(format!("tls.cert_file '{}': {e}", tls.cert_file.display())))?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "tls.cert_file '{}' holds no certificate",
            tls.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| config_error(format!("tls.key_file '{}': {e}", tls.key_file.display())))?;
    Ok((certs, key))
}

/// The rustls configuration pgwire serves TLS with.
pub fn pg_server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, EngineError> {
    let (certs, key) = load(tls)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| config_error(format!("tls: certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![POSTGRESQL_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The PEM text of the certificate chain and key (Flight SQL's TLS takes them as they are).
pub fn pem_pair(tls: &TlsConfig) -> Result<(Vec<u8>, Vec<u8>), EngineError> {
    // Parse first, so a bad file fails here with the same message as for pgwire.
    load(tls)?;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| config_error(format!("'{}': {e}", p.display())))
    };
    Ok((read(&tls.cert_file)?, read(&tls.key_file)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_mismatched_files_are_config_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let tls = TlsConfig {
            cert_file: dir.path().join("none.pem"),
            key_file: dir.path().join("none.key"),
            require: true,
        };
        let e = pg_server_config(&tls).expect_err("missing");
        assert_eq!(e.status(), StatusCode::ConfigFileError);
        assert!(e.to_string().contains("none.pem"), "{e}");
        std::fs::write(&tls.cert_file, "not pem").expect("write");
        let e = pg_server_config(&tls).expect_err("empty");
        assert!(e.to_string().contains("no certificate"), "{e}");
    }
}
