//! A few regions of real engines whose replicators are linked in memory, for the integration
//! tests: time is an argument, frames arrive at once and in order, links can be cut.

#![allow(dead_code, clippy::unwrap_used)]

use meridian::{Config, Engine, MemberId, Replication};
use meridian_core::replication::{LinkId, Output, ReplicationConfig, ReplicationError, Replicator};
use std::collections::BTreeSet;
use std::path::PathBuf;

pub const TICK_MS: u64 = 50;

pub struct Region {
    pub dir: PathBuf,
    pub member: MemberId,
    pub node: Option<(Replication, Replicator)>,
}

/// Regions whose replicators are linked in memory: every frame arrives at once, in order.
pub struct Net {
    pub _scratch: tempfile::TempDir,
    pub regions: Vec<Region>,
    pub members: Vec<MemberId>,
    /// Links cut (both ways).
    pub cut: BTreeSet<(usize, usize)>,
    pub now_ms: u64,
    pub sessions: u64,
    /// Links closed, with the reason, by (closing region, peer region).
    pub closed: Vec<(usize, usize, String)>,
    /// Frames refused, with the reason, by (refusing region, sending region).
    pub refused: Vec<(usize, usize, String)>,
    /// The replication settings every region starts with.
    pub replication: ReplicationConfig,
    /// The boot every region's engine believes it runs in.
    pub boot: String,
}

impl Net {
    pub fn new(n: usize) -> Net {
        Net::tuned(n, |_, _| {})
    }

    /// `new`, each region's engine configuration changed by `tune(region, config)` first.
    pub fn tuned(n: usize, tune: impl Fn(usize, &mut Config)) -> Net {
        let scratch = tempfile::tempdir().unwrap();
        let regions = (0..n)
            .map(|i| Region {
                dir: scratch.path().join(format!("r{i}")),
                member: MemberId(i as u64 + 1),
                node: None,
            })
            .collect();
        let mut net = Net {
            _scratch: scratch,
            regions,
            members: (0..n).map(|i| MemberId(i as u64 + 1)).collect(),
            cut: BTreeSet::new(),
            now_ms: 1,
            sessions: 0,
            closed: Vec::new(),
            refused: Vec::new(),
            replication: ReplicationConfig::default(),
            boot: "boot-1".into(),
        };
        for i in 0..n {
            net.start_tuned(i, |c| tune(i, c));
        }
        net
    }

    pub fn engine(&self, i: usize) -> &Replication {
        &self.regions[i].node.as_ref().unwrap().0
    }

    /// Opens region `i` on its directory and links it to every running region.
    pub fn start(&mut self, i: usize) {
        self.start_as(i, self.regions[i].member);
    }

    /// `start`, with the replicator announcing `announced` as its member id.
    pub fn start_as(&mut self, i: usize, announced: MemberId) {
        self.start_with(i, announced, |_| {});
    }

    /// `start`, with the engine's configuration changed by `tune` first.
    pub fn start_tuned(&mut self, i: usize, tune: impl FnOnce(&mut Config)) {
        self.start_with(i, self.regions[i].member, tune);
    }

    fn start_with(&mut self, i: usize, announced: MemberId, tune: impl FnOnce(&mut Config)) {
        let mut config = Config {
            member_id: Some(self.regions[i].member),
            boot_id: Some(self.boot.clone()),
            ..Config::default()
        };
        tune(&mut config);
        let engine = Engine::open(&self.regions[i].dir, config)
            .unwrap()
            .replication();
        engine.attach().unwrap();
        self.sessions += 1;
        let repl_config = ReplicationConfig {
            members: self.members.clone(),
            session: self.sessions,
            ..self.replication.clone()
        };
        let repl = Replicator::new(announced, repl_config);
        self.regions[i].node = Some((engine, repl));
        for j in 0..self.regions.len() {
            if j != i && self.regions[j].node.is_some() {
                self.link(i, j);
            }
        }
    }

    pub fn link(&mut self, i: usize, j: usize) {
        let now = self.now_ms;
        let (mi, mj) = (self.regions[i].member, self.regions[j].member);
        if let Some((e, r)) = self.regions[i].node.as_mut() {
            r.connected(LinkId(j as u32), mj, e, now);
        }
        if let Some((e, r)) = self.regions[j].node.as_mut() {
            r.connected(LinkId(i as u32), mi, e, now);
        }
    }

    /// Stops region `i` (its engine closes; its peers see the links go down).
    pub fn stop(&mut self, i: usize) {
        self.regions[i].node = None;
        self.unlink_all(i);
    }

    /// Stops region `i` as a process crash would (its run does not end cleanly).
    pub fn crash(&mut self, i: usize) {
        if let Some((engine, _)) = self.regions[i].node.take() {
            engine.into_engine().close_as_crashed();
        }
        self.unlink_all(i);
    }

    fn unlink_all(&mut self, i: usize) {
        for r in self.regions.iter_mut() {
            if let Some((_, repl)) = r.node.as_mut() {
                repl.disconnected(LinkId(i as u32));
            }
        }
    }

    /// Delivers frames until every replicator is quiet.
    pub fn deliver(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.regions.len() {
                let outs: Vec<Output> = match self.regions[i].node.as_mut() {
                    Some((_, r)) => std::iter::from_fn(|| r.poll_output()).collect(),
                    None => continue,
                };
                for o in outs {
                    match o {
                        Output::Send { link: peer, frame } => {
                            let j = peer.0 as usize;
                            if self.cut.contains(&(i.min(j), i.max(j))) {
                                continue;
                            }
                            let now = self.now_ms;
                            if let Some((e, r)) = self.regions[j].node.as_mut() {
                                moved = true;
                                match r.handle(LinkId(i as u32), &frame, e, now) {
                                    Ok(()) => {}
                                    Err(ReplicationError::Peer { error, .. }) => {
                                        self.refused.push((j, i, error.to_string()))
                                    }
                                    Err(e) => panic!("region {j}: {e}"),
                                }
                            }
                        }
                        Output::Close { link: peer, reason } => {
                            self.closed.push((i, peer.0 as usize, reason));
                        }
                        Output::Fenced { reason } => {
                            self.closed.push((i, i, format!("fenced: {reason}")));
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the replicators never went quiet");
    }

    /// Lets `ms` of time pass: ticks (heartbeats, relays, resends) and deliveries.
    pub fn run(&mut self, ms: u64) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms += TICK_MS;
            let now = self.now_ms;
            for (i, r) in self.regions.iter_mut().enumerate() {
                if let Some((e, repl)) = r.node.as_mut() {
                    match repl.tick(e, now) {
                        Ok(()) | Err(ReplicationError::Peer { .. }) => {}
                        Err(e) => panic!("region {i}: {e}"),
                    }
                }
            }
            self.deliver();
        }
    }

    /// Every running region holds `key` with exactly `value`.
    pub fn assert_everywhere(&self, key: &str, value: &str) {
        for (i, r) in self.regions.iter().enumerate() {
            if let Some((e, _)) = &r.node {
                let got = e.get(key.as_bytes()).unwrap().map(|s| s.values);
                assert_eq!(
                    got,
                    Some(vec![value.as_bytes().to_vec()]),
                    "region {i}, key {key}"
                );
            }
        }
    }
}
