//! `meridian certs init|add`: development certificates (see `meridian_config::dev_certs` for
//! the layout). Production brings its own PEM files.

use meridian_config::dev_certs::{self, CertsRequest};
use std::path::PathBuf;

/// Options of `certs init` and `certs add`.
#[derive(clap::Args, Debug)]
pub struct CertsArgs {
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

impl CertsArgs {
    fn request(self) -> CertsRequest {
        CertsRequest {
            dir: self.dir,
            cluster: self.cluster,
            replicas: self.replicas,
            clients: self.clients,
        }
    }
}

/// A new cluster CA and the certificates asked for.
pub fn init(args: CertsArgs) -> anyhow::Result<()> {
    Ok(dev_certs::init(&args.request())?)
}

/// More certificates from the CA in `--dir`.
pub fn add(args: CertsArgs) -> anyhow::Result<()> {
    Ok(dev_certs::add(&args.request())?)
}
