//! A few regions of real engines whose replicators are linked in memory, for the integration
//! tests: time is an argument, frames arrive at once and in order, links can be cut.

#![allow(dead_code, clippy::unwrap_used)]

use meridian::replication::{LinkId, Output, ReplicationConfig, Replicator};
use meridian::{Config, Engine, ReplicaId};
use std::collections::BTreeSet;
use std::path::PathBuf;

pub const TICK_MS: u64 = 50;

pub struct Region {
    pub dir: PathBuf,
    pub member: ReplicaId,
    pub node: Option<(Engine, Replicator)>,
}

/// Regions whose replicators are linked in memory: every frame arrives at once, in order.
pub struct Net {
    pub _scratch: tempfile::TempDir,
    pub regions: Vec<Region>,
    pub members: Vec<ReplicaId>,
    /// Links cut (both ways).
    pub cut: BTreeSet<(usize, usize)>,
    pub now_ms: u64,
    pub sessions: u64,
    /// Links closed, with the reason, by (closing region, peer region).
    pub closed: Vec<(usize, usize, String)>,
}

impl Net {
    pub fn new(n: usize) -> Net {
        let scratch = tempfile::tempdir().unwrap();
        let regions = (0..n)
            .map(|i| Region {
                dir: scratch.path().join(format!("r{i}")),
                member: ReplicaId(i as u64 + 1),
                node: None,
            })
            .collect();
        let mut net = Net {
            _scratch: scratch,
            regions,
            members: (0..n).map(|i| ReplicaId(i as u64 + 1)).collect(),
            cut: BTreeSet::new(),
            now_ms: 1,
            sessions: 0,
            closed: Vec::new(),
        };
        for i in 0..n {
            net.start(i);
        }
        net
    }

    pub fn engine(&self, i: usize) -> &Engine {
        &self.regions[i].node.as_ref().unwrap().0
    }

    /// Opens region `i` on its directory and links it to every running region.
    pub fn start(&mut self, i: usize) {
        self.start_as(i, self.regions[i].member);
    }

    /// `start`, with the replicator announcing `announced` as its member id.
    pub fn start_as(&mut self, i: usize, announced: ReplicaId) {
        let config = Config {
            replica_id: Some(self.regions[i].member),
            ..Config::default()
        };
        let engine = Engine::open(&self.regions[i].dir, config).unwrap();
        engine.attach_replication().unwrap();
        self.sessions += 1;
        let repl_config = ReplicationConfig {
            members: self.members.clone(),
            session: self.sessions,
            ..ReplicationConfig::default()
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
                                let _ = r.handle(LinkId(i as u32), &frame, e, now);
                            }
                        }
                        Output::Close { link: peer, reason } => {
                            self.closed.push((i, peer.0 as usize, reason));
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
            for r in self.regions.iter_mut() {
                if let Some((e, repl)) = r.node.as_mut() {
                    let _ = repl.tick(e, now);
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
