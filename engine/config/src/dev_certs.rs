//! Development certificates (`meridian certs init`, the test kit): a cluster CA and
//! certificates for replicas and clients (rcgen). Production brings its own PEM files.
//!
//! Layout under a directory `D`: `D/ca/` holds the CA's certificate and key (keep the key
//! offline: it is in no directory a node or client reads); `D/<replica>/` holds what that node
//! needs (`ca.pem`, `<replica>.pem`, `<replica>.key`); `D/client-<name>/` what that client
//! needs (`ca.pem`, `client-<name>.pem`, `client-<name>.key`). A replica's certificate names it
//! `<replica>.<region>.<cluster>`; a client's names it and its role,
//! `<name>.<role>.client.<cluster>` (see [`meridian_client::tls::client_dns_name`]).

use meridian_client::tls::{client_dns_name, replica_dns_name, Role};
use meridian_client::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// The certificates to make.
#[derive(Clone, Debug, Default)]
pub struct CertsRequest {
    /// Directory to write into (created if missing).
    pub dir: PathBuf,
    /// Cluster id (a DNS label).
    pub cluster: String,
    /// Replicas, as `NAME:REGION`.
    pub replicas: Vec<String>,
    /// Clients, as `NAME[:ROLE]` with ROLE `read`, `write` (the default) or `admin`.
    pub clients: Vec<String>,
}

/// Certificates that could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    /// A name, role or cluster id is refused (the message says which).
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Key generation, signing or parsing failed.
    #[error("certificate: {0}")]
    Crypto(#[from] rcgen::Error),
}

/// Whether `s` is a valid DNS label (names and regions become certificate DNS names).
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The files replica `name` reads, in a directory `init` wrote.
pub fn replica_files(dir: &Path, name: &str) -> TlsFiles {
    identity_files(dir, name)
}

/// The files client `name` reads, in a directory `init` wrote.
pub fn client_files(dir: &Path, name: &str) -> TlsFiles {
    identity_files(dir, &format!("client-{name}"))
}

fn identity_files(dir: &Path, identity: &str) -> TlsFiles {
    let sub = dir.join(identity);
    TlsFiles {
        ca: sub.join("ca.pem"),
        cert: sub.join(format!("{identity}.pem")),
        key: sub.join(format!("{identity}.key")),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), CertsError> {
    std::fs::write(path, contents).map_err(io(path))?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}

fn leaf(dns: &str, issuer: &Issuer<'_, KeyPair>) -> Result<(String, String), CertsError> {
    let mut params = CertificateParams::new(vec![dns.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, dns);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The CA's parameters: the same for a cluster every time, so that `add` can sign with the key
/// `init` wrote.
fn ca_params(cluster: &str) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("meridian {cluster} cluster CA"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A directory of one identity: the CA certificate, its certificate and its key.
fn identity_dir(
    request: &CertsRequest,
    identity: &str,
    ca_pem: &str,
    cert: &str,
    key: &str,
) -> Result<(), CertsError> {
    let files = identity_files(&request.dir, identity);
    let dir = request.dir.join(identity);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    write(&files.ca, ca_pem, false)?;
    write(&files.cert, cert, false)?;
    write(&files.key, key, true)
}

/// Refuses with the message when `cond` does not hold.
fn check(cond: bool, message: impl FnOnce() -> String) -> Result<(), CertsError> {
    if cond {
        Ok(())
    } else {
        Err(CertsError::Invalid(message()))
    }
}

fn issue(
    request: &CertsRequest,
    issuer: &Issuer<'_, KeyPair>,
    ca_pem: &str,
) -> Result<(), CertsError> {
    for spec in &request.replicas {
        let (name, region) = spec.split_once(':').ok_or_else(|| {
            CertsError::Invalid(format!("--replica {spec:?}: expected NAME:REGION"))
        })?;
        check(is_label(name) && is_label(region), || {
            format!("--replica {spec:?}: names must be DNS labels")
        })?;
        check(name != "ca", || {
            format!("--replica {spec:?}: `ca` names the CA's directory")
        })?;
        let (cert, key) = leaf(&replica_dns_name(&request.cluster, name, region), issuer)?;
        identity_dir(request, name, ca_pem, &cert, &key)?;
    }
    for spec in &request.clients {
        let (name, role) = spec.split_once(':').unwrap_or((spec, "write"));
        check(is_label(name), || {
            format!("--client {spec:?}: {name:?} must be a DNS label")
        })?;
        let role: Role = role
            .parse()
            .map_err(|e| CertsError::Invalid(format!("--client {spec:?}: {e}")))?;
        let (cert, key) = leaf(&client_dns_name(&request.cluster, name, role), issuer)?;
        identity_dir(request, &format!("client-{name}"), ca_pem, &cert, &key)?;
    }
    Ok(())
}

/// Writes a new CA to `<dir>/ca/` and each identity to its own directory (see the module
/// documentation).
pub fn init(request: &CertsRequest) -> Result<(), CertsError> {
    check(is_label(&request.cluster), || {
        format!(
            "cluster {:?} must be a DNS label (a-z, 0-9, -)",
            request.cluster
        )
    })?;
    let ca_dir = request.dir.join("ca");
    std::fs::create_dir_all(&ca_dir).map_err(io(&ca_dir))?;
    let ca = CertifiedIssuer::self_signed(ca_params(&request.cluster)?, KeyPair::generate()?)?;
    write(&ca_dir.join("ca.pem"), &ca.pem(), false)?;
    write(&ca_dir.join("ca.key"), &ca.key().serialize_pem(), true)?;
    issue(request, &ca, &ca.pem())
}

/// Issues more certificates with the CA `init` left in `<dir>/ca/` (a replica added later).
pub fn add(request: &CertsRequest) -> Result<(), CertsError> {
    let ca_dir = request.dir.join("ca");
    let key_path = ca_dir.join("ca.key");
    let pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
    let key = KeyPair::from_pem(&pem)?;
    let ca_path = ca_dir.join("ca.pem");
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(io(&ca_path))?;
    issue(
        request,
        &Issuer::new(ca_params(&request.cluster)?, key),
        &ca_pem,
    )
}
