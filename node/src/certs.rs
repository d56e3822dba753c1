//! `meridian certs init`: a cluster CA and certificates for replicas and clients (rcgen), for
//! development and tests. Production brings its own PEM files.
//!
//! Layout under `--dir D`: `D/ca/` holds the CA's certificate and key (keep the key offline:
//! it is in no directory a node or client reads); `D/<replica>/` holds what that node needs
//! (`ca.pem`, `<replica>.pem`, `<replica>.key`); `D/client-<name>/` what that client needs
//! (`ca.pem`, `client-<name>.pem`, `client-<name>.key`). A replica's certificate names it
//! `<replica>.<region>.<cluster>`; a client's names it and its role,
//! `<name>.<role>.client.<cluster>` (see `meridian_runtime::tls::client_dns_name`).

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Options of `certs init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Directory to write into (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Cluster id.
    #[arg(long)]
    pub cluster: String,
    /// A replica as NAME:REGION (repeat).
    #[arg(long = "replica", value_name = "NAME:REGION")]
    pub replicas: Vec<String>,
    /// A client certificate to make, as NAME:ROLE with ROLE `read`, `write` (reads too) or
    /// `admin` (everything); NAME alone is `write` (repeat).
    #[arg(long = "client", value_name = "NAME[:ROLE]")]
    pub clients: Vec<String>,
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

fn write(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn leaf(dns: &str, issuer: &Issuer<'_, KeyPair>) -> anyhow::Result<(String, String)> {
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
fn ca_params(cluster: &str) -> anyhow::Result<CertificateParams> {
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
    args: &InitArgs,
    name: &str,
    ca_pem: &str,
    cert: &str,
    key: &str,
) -> anyhow::Result<()> {
    let dir = args.dir.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write(&dir.join("ca.pem"), ca_pem, false)?;
    write(&dir.join(format!("{name}.pem")), cert, false)?;
    write(&dir.join(format!("{name}.key")), key, true)
}

fn issue(args: &InitArgs, issuer: &Issuer<'_, KeyPair>, ca_pem: &str) -> anyhow::Result<()> {
    for spec in &args.replicas {
        let (name, region) = spec
            .split_once(':')
            .with_context(|| format!("--replica {spec:?}: expected NAME:REGION"))?;
        anyhow::ensure!(
            is_label(name) && is_label(region),
            "--replica {spec:?}: names must be DNS labels"
        );
        anyhow::ensure!(
            name != "ca",
            "--replica {spec:?}: `ca` names the CA's directory"
        );
        let dns = meridian_runtime::tls::replica_dns_name(&args.cluster, name, region);
        let (cert, key) = leaf(&dns, issuer)?;
        identity_dir(args, name, ca_pem, &cert, &key)?;
    }
    for spec in &args.clients {
        let (name, role) = spec.split_once(':').unwrap_or((spec, "write"));
        anyhow::ensure!(
            is_label(name),
            "--client {spec:?}: {name:?} must be a DNS label"
        );
        let role: meridian_runtime::tls::Role = role
            .parse()
            .map_err(|e| anyhow::anyhow!("--client {spec:?}: {e}"))?;
        let dns = meridian_runtime::tls::client_dns_name(&args.cluster, name, role);
        let (cert, key) = leaf(&dns, issuer)?;
        identity_dir(args, &format!("client-{name}"), ca_pem, &cert, &key)?;
    }
    Ok(())
}

/// Writes the CA to `<dir>/ca/` and each identity to its own directory (see the module
/// documentation).
pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        is_label(&args.cluster),
        "cluster {:?} must be a DNS label (a-z, 0-9, -)",
        args.cluster
    );
    let ca_dir = args.dir.join("ca");
    std::fs::create_dir_all(&ca_dir).with_context(|| format!("creating {}", ca_dir.display()))?;
    let ca = CertifiedIssuer::self_signed(ca_params(&args.cluster)?, KeyPair::generate()?)?;
    write(&ca_dir.join("ca.pem"), &ca.pem(), false)?;
    write(&ca_dir.join("ca.key"), &ca.key().serialize_pem(), true)?;
    issue(args, &ca, &ca.pem())
}

/// Issues more certificates with the CA `init` left in `<dir>/ca/` (a replica added later).
pub fn add(args: &InitArgs) -> anyhow::Result<()> {
    let ca_dir = args.dir.join("ca");
    let key_path = ca_dir.join("ca.key");
    let pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let key = KeyPair::from_pem(&pem).with_context(|| format!("parsing {}", key_path.display()))?;
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem"))
        .with_context(|| format!("reading {}", ca_dir.join("ca.pem").display()))?;
    issue(args, &Issuer::new(ca_params(&args.cluster)?, key), &ca_pem)
}
