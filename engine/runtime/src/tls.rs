//! Mutual TLS, the accepting side: the server configuration (a client certificate from the
//! cluster CA required) and who a client's certificate says it is. What both ends share (the
//! names certificates carry, the PEM files, the transport, the dialing side) is
//! `meridian_client::tls`, re-exported here at its old paths (compatibility).

pub use meridian_client::tls::*;

use crate::RuntimeError;
use meridian_client::protocols::Protocols;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;

/// Who a client certificate (already verified against the cluster CA) says its holder is:
/// the name and role of its first `<name>.<role>.client.<cluster>` DNS name.
pub fn client_identity(cert: &CertificateDer<'_>, cluster: &str) -> Option<(String, Role)> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    ee.valid_dns_names().find_map(|dns| {
        let labels: Vec<&str> = dns.split('.').collect();
        match labels.as_slice() {
            [name, role, "client", c] if *c == cluster && !name.contains('*') => {
                Some((name.to_string(), role.parse().ok()?))
            }
            _ => None,
        }
    })
}

/// Server side: requires a client certificate from the cluster CA; offers every version of
/// both protocols that `protocols` allows, newest first (the dialer's newest in common wins).
pub fn server_config(
    files: &TlsFiles,
    disable_gso: bool,
    protocols: &Protocols,
) -> Result<quinn::ServerConfig, RuntimeError> {
    let Identity { roots, chain, key } = read_pems(files)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| RuntimeError::Tls(e.to_string()))?;
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| RuntimeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| RuntimeError::Tls(e.to_string()))?;
    crypto.alpn_protocols = protocols.replication_alpns();
    crypto.alpn_protocols.extend(protocols.client_alpns());
    crypto.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(crypto).map_err(|e| RuntimeError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport(disable_gso, None));
    Ok(config)
}
