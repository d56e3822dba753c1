//! One real `meridian node` process: its configuration (written before each start), the child
//! process, and how to start it (waiting for its ready line, retried while a port is taken),
//! stop it cleanly (SIGTERM), kill it (SIGKILL) and read its endpoints. Killed when dropped.

use crate::ports::{free_tcp, free_udp};
use crate::scrape;
use meridian_config::node_config::NodeConfig;
use meridian_runtime::client::Client;
use meridian_runtime::client_proto::NodeStatus;
use meridian_runtime::tls::replica_dns_name;
use meridian_runtime::TlsFiles;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Longest wait for a starting node's ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts at starting a node: its ports were picked free and are bound a moment later by the
/// node, and another socket's ephemeral port can land on one in between.
pub(crate) const START_ATTEMPTS: usize = 5;

/// Pause between attempts at restarting a node on its own ports (a port it held a moment ago
/// may still be held by something that took it meanwhile).
const RESTART_PAUSE: Duration = Duration::from_millis(500);

/// The `meridian` executable in the directory of this process's executable, where cargo builds
/// it beside `meridian-lab`: what [`crate::Cluster::prepare`] runs until
/// [`crate::Cluster::run_with`] names another. Not checked: see [`daemon`].
pub fn daemon_path() -> std::io::Result<PathBuf> {
    let name = format!("meridian{}", std::env::consts::EXE_SUFFIX);
    Ok(std::env::current_exe()?.with_file_name(name))
}

/// [`daemon_path`], or an error saying how to build it when it is not there.
pub fn daemon() -> anyhow::Result<PathBuf> {
    let path = daemon_path()?;
    anyhow::ensure!(
        path.is_file(),
        "no `meridian` executable beside this one (looked for {}): build it with \
         `cargo build --release -p meridian-node`",
        path.display()
    );
    Ok(path)
}

/// A `meridian node` process and its configuration.
pub struct NodeProcess {
    /// What the node runs with; written to `path` at each start.
    pub config: NodeConfig,
    /// Its configuration file.
    pub path: PathBuf,
    /// `RUST_LOG` of the process (its stderr is this process's).
    pub log_filter: String,
    pub(crate) bin: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// A node that `bin` (the `meridian` executable) will run with `config`, written to `path`.
    pub fn new(bin: &Path, config: NodeConfig, path: PathBuf) -> NodeProcess {
        NodeProcess {
            config,
            path,
            log_filter: "warn".into(),
            bin: bin.to_owned(),
            child: None,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Picks free loopback ports for its QUIC and metrics endpoints.
    pub fn pick_ports(&mut self) -> anyhow::Result<()> {
        self.config.listen = free_udp()?;
        self.config.metrics_listen = Some(free_tcp()?);
        Ok(())
    }

    /// Writes the configuration, starts the process and waits for its ready line, which it
    /// returns; on anything else (it exited, printed something else, said nothing in 30 s) the
    /// process is stopped and the error says what came instead.
    pub fn try_start(&mut self) -> anyhow::Result<String> {
        self.kill();
        self.config.write(&self.path)?;
        let mut child = Command::new(&self.bin)
            .args(["node", "--config"])
            .arg(&self.path)
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("{}: cannot run {}: {e}", self.name(), self.bin.display())
            })?;
        let Some(stdout) = child.stdout.take() else {
            anyhow::bail!("{}: no stdout", self.name());
        };
        // Read on, so that the node never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.contains("listening on") => {
                self.child = Some(child);
                Ok(line)
            }
            other => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("{} did not start: {other:?}", self.name())
            }
        }
    }

    /// Starts it on its ports (again, after a stop), retried while another socket holds one.
    pub fn start(&mut self) -> anyhow::Result<String> {
        let mut last = self.try_start();
        for _ in 1..START_ATTEMPTS {
            if last.is_ok() {
                break;
            }
            std::thread::sleep(RESTART_PAUSE);
            last = self.try_start();
        }
        last
    }

    /// Starts it on free ports, picked again while one turns out taken (a new node, whose
    /// peers do not know its address yet).
    pub fn start_on_fresh_ports(&mut self) -> anyhow::Result<String> {
        let mut last = Err(anyhow::anyhow!("never started"));
        for _ in 0..START_ATTEMPTS {
            self.pick_ports()?;
            last = self.try_start();
            if last.is_ok() {
                break;
            }
        }
        last
    }

    /// Whether its process runs (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM (drain, flush, exit) and the exit status; `None` when it was not running.
    pub fn terminate(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !sent.success() {
            let _ = child.kill();
        }
        Ok(Some(child.wait()?))
    }

    /// SIGSTOP: the process freezes with its sockets open (a hung region: requests are sent
    /// and never answered).
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")?;
        // SIGSTOP takes effect when each thread next enters the kernel: on a busy machine a
        // thread on a CPU could still answer a request sent right after `kill` returned.
        // Returns once every thread is seen stopped (or after 2 s).
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline && !all_threads_stopped(pid) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, which: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.name()))?;
        let sent = Command::new("kill")
            .args([which, &pid.to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill {which} {pid} failed");
        Ok(())
    }

    /// SIGKILL (a crash: nothing flushed beyond what is durable).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The name its certificate carries, which a client verifies.
    pub fn server_name(&self) -> String {
        replica_dns_name(&self.config.cluster, &self.config.name, &self.config.region)
    }

    /// A client connection to it, with the client certificate `tls`.
    pub async fn connect(&self, tls: &TlsFiles) -> anyhow::Result<Client> {
        Ok(Client::connect(self.config.listen, &self.server_name(), tls).await?)
    }

    fn metrics_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        self.config
            .metrics_listen
            .ok_or_else(|| anyhow::anyhow!("{} has no metrics endpoint", self.name()))
    }

    /// Its Prometheus text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        scrape::metrics(self.metrics_addr()?)
    }

    /// Its status, from `/health`.
    pub fn health(&self) -> anyhow::Result<NodeStatus> {
        scrape::health(self.metrics_addr()?)
    }

    /// Its peak resident memory (VmHWM, Linux) in MiB.
    pub fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.name()))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))?;
        Ok(kib / 1024.0)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether every thread of process `pid` is stopped (`T` in `/proc/PID/task/*/stat`); true
/// where `/proc` cannot say.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state == "T" || state == "t")
        })
    })
}
