//! Mutual TLS for QUIC: a cluster CA signs every replica's and client's certificate; rustls
//! with the ring provider, TLS 1.3 only, no 0-RTT. A replica's certificate names it with the DNS
//! name `<replica>.<region>.<cluster>`.
//!
//! What both ends use: the names certificates carry, the PEM files of an identity, the QUIC
//! transport settings, the dialing side's configuration (a client's, and a replica's dialing
//! its peers). The accepting side's (`server_config`) is in `meridian-runtime`.

use crate::congestion::CubicAfterContactFactory;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// ALPN of replica-to-replica links at the newest version (`protocols` lists every version).
pub const ALPN_REPLICATION: &[u8] = crate::protocols::REPLICATION_ALPNS[0].1;
/// ALPN of client connections at the newest version (`protocols` lists every version).
pub const ALPN_CLIENT: &[u8] = crate::protocols::CLIENT_ALPNS[0].1;

/// Certificates or keys that could not be loaded or used (the message names the file).
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(pub String);

/// The PEM files of one identity.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This identity's certificate chain.
    pub cert: PathBuf,
    /// This identity's private key.
    pub key: PathBuf,
}

/// The DNS name a replica's certificate carries.
pub fn replica_dns_name(cluster: &str, replica: &str, region: &str) -> String {
    format!("{replica}.{region}.{cluster}")
}

/// What a client may do; each role includes the ones before it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    /// Reads, scans, status.
    Read,
    /// Writes too.
    Write,
    /// Operations on the node itself too.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!("role {other:?} is not one of read, write, admin")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

/// The DNS name a client's certificate carries: its name and its role.
pub fn client_dns_name(cluster: &str, client: &str, role: Role) -> String {
    format!("{client}.{role}.client.{cluster}")
}

/// The crypto provider of both ends (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An identity's PEM files, loaded.
pub struct Identity {
    /// The cluster CA, the one root trusted.
    pub roots: RootCertStore,
    /// This identity's certificate chain (at least one certificate).
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
}

/// Loads an identity's PEM files (the error names the file).
pub fn read_pems(files: &TlsFiles) -> Result<Identity, TlsError> {
    let tls = |path: &Path, e: String| TlsError(format!("{}: {e}", path.display()));
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.ca).map_err(|e| tls(&files.ca, e.to_string()))? {
        roots
            .add(ca.map_err(|e| tls(&files.ca, e.to_string()))?)
            .map_err(|e| tls(&files.ca, e.to_string()))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| tls(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(tls(&files.cert, "no certificate".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls(&files.key, e.to_string()))?;
    Ok(Identity { roots, chain, key })
}

/// How long a client's connection to a node lives without hearing from it, by default: a
/// node that stops answering (dead, frozen, cut off) is left after this long. The client pings
/// four times as often, and the shorter of both sides' idle timeouts holds, so only client
/// connections are affected (replication links keep 10 s).
pub const CLIENT_LIVENESS: Duration = Duration::from_secs(1);

/// How long a replication link lives without hearing from its peer: long enough to ride out a
/// stall of the peer's process or network (a link that drops is rebuilt from a `Hello`, which
/// costs a handshake and a resend), short enough that routing learns of a dead region.
pub const REPLICATION_LIVENESS: Duration = Duration::from_secs(10);

/// A replication link pings this often: five times per liveness period, so a lost ping or two
/// does not end it.
pub const REPLICATION_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// A connection with a liveness given pings this many times per period.
pub const PINGS_PER_LIVENESS: u32 = 4;

/// The shortest ping interval and liveness accepted (a setting below is raised to these): a
/// round trip across regions takes up to about 300 ms, and pings must not crowd the link.
pub const KEEP_ALIVE_MIN: Duration = Duration::from_millis(25);
/// See `KEEP_ALIVE_MIN`.
pub const LIVENESS_MIN: Duration = Duration::from_millis(100);

/// The round trip a connection assumes before it has measured one.
pub const INITIAL_RTT: Duration = Duration::from_millis(100);

/// The transport of both ends: `liveness` is the idle timeout (pinged `PINGS_PER_LIVENESS`
/// times as often), `REPLICATION_LIVENESS` by default.
pub fn transport(disable_gso: bool, liveness: Option<Duration>) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    let (keep_alive, idle) = match liveness {
        Some(l) => (
            (l / PINGS_PER_LIVENESS).max(KEEP_ALIVE_MIN),
            l.max(LIVENESS_MIN),
        ),
        None => (REPLICATION_KEEP_ALIVE, REPLICATION_LIVENESS),
    };
    t.keep_alive_interval(Some(keep_alive));
    // The first packets of a handshake are sent again after three times this, doubling: at
    // quinn's default (333 ms) a dial into a link that just healed could wait a second or
    // more for its next try; cross-region round trips stay under 300 ms.
    t.initial_rtt(INITIAL_RTT);
    if let Ok(idle) = quinn::IdleTimeout::try_from(idle) {
        t.max_idle_timeout(Some(idle));
    }
    t.enable_segmentation_offload(!disable_gso);
    // A replication link is one stream each way: quinn's default stream window (1.25 MB)
    // would cap a link at 1.25 MB per round trip whatever the replicator's in-flight window
    // allows (25 MB/s over 50 ms). Room for the largest window twice over; the reader drains
    // the stream into its own bounded budget. The whole connection may hold twice that unread
    // (quinn's default is unbounded: a client opening its 100 streams could make this
    // endpoint buffer 100 stream windows).
    let stream_window = 2 * meridian_core::replication::INFLIGHT_BYTES_CAP as u64;
    let window = |bytes: u64| quinn::VarInt::from_u64(bytes).unwrap_or(quinn::VarInt::MAX);
    t.stream_receive_window(window(stream_window));
    t.receive_window(window(2 * stream_window));
    t.send_window(stream_window);
    // MTU discovery searches up to the peer's advertised largest UDP payload, quinn's default
    // of 1472 bytes (Ethernet's MTU; a larger one would grow every endpoint's receive buffers,
    // sized for GRO batches of it), instead of its own default bound of 1452.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(u16::MAX);
    t.mtu_discovery_config(Some(mtu));
    t.congestion_controller_factory(Arc::new(CubicAfterContactFactory::default()));
    Arc::new(t)
}

/// Client side (dialing a replica, as a replica or as a client), presenting our certificate;
/// a client's connection (`ALPN_CLIENT`) lives `CLIENT_LIVENESS` without hearing the node.
pub fn client_config(
    files: &TlsFiles,
    alpn: &[u8],
    disable_gso: bool,
) -> Result<quinn::ClientConfig, TlsError> {
    let liveness = (alpn == ALPN_CLIENT).then_some(CLIENT_LIVENESS);
    client_config_with(files, alpn, disable_gso, liveness)
}

/// `client_config` with the connection's liveness given (`None`: 10 s, as replication links).
pub fn client_config_with(
    files: &TlsFiles,
    alpn: &[u8],
    disable_gso: bool,
    liveness: Option<Duration>,
) -> Result<quinn::ClientConfig, TlsError> {
    client_config_offering(files, vec![alpn.to_vec()], disable_gso, liveness)
}

/// `client_config_with`, offering the ALPN names `alpns` (one per protocol version, newest
/// first: the node picks the newest it speaks).
pub fn client_config_offering(
    files: &TlsFiles,
    alpns: Vec<Vec<u8>>,
    disable_gso: bool,
    liveness: Option<Duration>,
) -> Result<quinn::ClientConfig, TlsError> {
    let Identity { roots, chain, key } = read_pems(files)?;
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError(e.to_string()))?;
    crypto.alpn_protocols = alpns;
    crypto.enable_early_data = false;
    let quic = QuicClientConfig::try_from(crypto).map_err(|e| TlsError(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport(disable_gso, liveness));
    Ok(config)
}

/// The peer's leaf certificate, once the handshake is done.
pub fn peer_leaf(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    certs.first().cloned()
}

/// Whether `cert` (already verified against the cluster CA) is valid for DNS name `name`.
pub fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee.verify_is_valid_for_subject_name(&server_name).is_ok(),
        Err(_) => false,
    }
}

/// The ALPN the connection negotiated.
pub fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}
