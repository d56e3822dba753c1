//! `meridian certs init`: a cluster CA and certificates for replicas and clients (rcgen), for
//! development and tests. Production brings its own PEM files.

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
    /// A client certificate to make (repeat).
    #[arg(long = "client", value_name = "NAME")]
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

fn issue(args: &InitArgs, issuer: &Issuer<'_, KeyPair>) -> anyhow::Result<()> {
    for spec in &args.replicas {
        let (name, region) = spec
            .split_once(':')
            .with_context(|| format!("--replica {spec:?}: expected NAME:REGION"))?;
        anyhow::ensure!(
            is_label(name) && is_label(region),
            "--replica {spec:?}: names must be DNS labels"
        );
        let dns = meridian::runtime::tls::replica_dns_name(&args.cluster, name, region);
        let (cert, key) = leaf(&dns, issuer)?;
        write(&args.dir.join(format!("{name}.pem")), &cert, false)?;
        write(&args.dir.join(format!("{name}.key")), &key, true)?;
    }
    for name in &args.clients {
        anyhow::ensure!(is_label(name), "--client {name:?} must be a DNS label");
        let (cert, key) = leaf(&format!("client-{name}.{}", args.cluster), issuer)?;
        write(&args.dir.join(format!("client-{name}.pem")), &cert, false)?;
        write(&args.dir.join(format!("client-{name}.key")), &key, true)?;
    }
    Ok(())
}

/// Writes `ca.pem`, `ca.key`, `<replica>.pem/.key` and `client-<name>.pem/.key`.
pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        is_label(&args.cluster),
        "cluster {:?} must be a DNS label (a-z, 0-9, -)",
        args.cluster
    );
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let ca = CertifiedIssuer::self_signed(ca_params(&args.cluster)?, KeyPair::generate()?)?;
    write(&args.dir.join("ca.pem"), &ca.pem(), false)?;
    write(&args.dir.join("ca.key"), &ca.key().serialize_pem(), true)?;
    issue(args, &ca)
}

/// Issues more certificates with the CA `init` left in the directory (a replica added later).
pub fn add(args: &InitArgs) -> anyhow::Result<()> {
    let key_path = args.dir.join("ca.key");
    let pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let key = KeyPair::from_pem(&pem).with_context(|| format!("parsing {}", key_path.display()))?;
    issue(args, &Issuer::new(ca_params(&args.cluster)?, key))
}
