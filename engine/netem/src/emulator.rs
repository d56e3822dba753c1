//! The emulator: named nodes, a relay for every ordered pair (where the first reaches the
//! second), and one [`Link`] per direction whose shape both relays of the pair obey.

use crate::link::{Link, LinkStats};
use crate::relay::Relay;
use crate::shape::{Shape, ShapeChange, ShapeError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A node as the emulator knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddr {
    /// The node's name (its replica name).
    pub name: String,
    /// Where it really listens.
    pub address: SocketAddr,
}

/// Where `from` reaches `to` through the emulator: the address `from`'s configuration gives
/// for peer `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The node that dials.
    pub from: String,
    /// The node it reaches.
    pub to: String,
    /// The relay's address (ephemeral loopback port when absent in a configuration).
    pub listen: Option<SocketAddr>,
}

/// One directed link, reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    /// Sending node.
    pub from: String,
    /// Receiving node.
    pub to: String,
    /// Its shape now.
    pub shape: Shape,
    /// What it did.
    pub stats: LinkStats,
}

/// Why the emulator refused something.
#[derive(Debug, thiserror::Error)]
pub enum NetemError {
    /// A name that is not one of the emulator's nodes.
    #[error("no node {0:?} (known: {1})")]
    UnknownNode(String, String),
    /// The same node named twice.
    #[error("node {0:?} is named twice")]
    DuplicateNode(String),
    /// A link from a node to itself.
    #[error("a link needs two different nodes, not {0:?} twice")]
    SelfLink(String),
    /// A shape that is not valid.
    #[error("bad shape: {0}")]
    Shape(#[from] ShapeError),
    /// A relay could not bind its address.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// A running emulator; dropping it stops every relay.
pub struct Netem {
    nodes: Vec<NodeAddr>,
    links: BTreeMap<(String, String), Arc<Link>>,
    relays: BTreeMap<(String, String), Relay>,
}

impl Netem {
    /// Relays for `routes` between `nodes`, every link perfect; `seed` drives the random
    /// impairments (one seed replays the same drops).
    pub async fn start(
        nodes: Vec<NodeAddr>,
        routes: &[Route],
        seed: u64,
    ) -> Result<Netem, NetemError> {
        for (i, node) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|n| n.name == node.name) {
                return Err(NetemError::DuplicateNode(node.name.clone()));
            }
        }
        let mut links = BTreeMap::new();
        for a in &nodes {
            for b in &nodes {
                if a.name != b.name {
                    links.insert((a.name.clone(), b.name.clone()), Arc::new(Link::default()));
                }
            }
        }
        let mut netem = Netem {
            nodes,
            links,
            relays: BTreeMap::new(),
        };
        for (i, route) in routes.iter().enumerate() {
            let to = netem.node(&route.to)?.address;
            netem.node(&route.from)?;
            if route.from == route.to {
                return Err(NetemError::SelfLink(route.from.clone()));
            }
            let forward = netem.link(&route.from, &route.to)?;
            let back = netem.link(&route.to, &route.from)?;
            let front = route
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            let seed = seed.wrapping_add((i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let relay = Relay::start_on(front, to, forward, back, seed)
                .await
                .map_err(|e| NetemError::Bind(front, e))?;
            netem
                .relays
                .insert((route.from.clone(), route.to.clone()), relay);
        }
        Ok(netem)
    }

    /// Relays for every ordered pair of `nodes`, on ephemeral loopback ports.
    pub async fn full_mesh(nodes: Vec<NodeAddr>, seed: u64) -> Result<Netem, NetemError> {
        let routes: Vec<Route> = nodes
            .iter()
            .flat_map(|a| {
                nodes.iter().filter(|b| b.name != a.name).map(|b| Route {
                    from: a.name.clone(),
                    to: b.name.clone(),
                    listen: None,
                })
            })
            .collect();
        Netem::start(nodes, &routes, seed).await
    }

    fn node(&self, name: &str) -> Result<&NodeAddr, NetemError> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            NetemError::UnknownNode(name.into(), known.join(", "))
        })
    }

    fn link(&self, from: &str, to: &str) -> Result<Arc<Link>, NetemError> {
        self.node(from)?;
        self.node(to)?;
        self.links
            .get(&(from.to_string(), to.to_string()))
            .cloned()
            .ok_or_else(|| NetemError::SelfLink(from.into()))
    }

    /// The address `from` must use for peer `to` (its relay), if the pair has one.
    pub fn route(&self, from: &str, to: &str) -> Option<SocketAddr> {
        self.relays
            .get(&(from.to_string(), to.to_string()))
            .map(Relay::front)
    }

    /// Every relay: (from, to, the address `from` uses for `to`).
    pub fn routes(&self) -> Vec<(String, String, SocketAddr)> {
        self.relays
            .iter()
            .map(|((a, b), r)| (a.clone(), b.clone(), r.front()))
            .collect()
    }

    /// The node names.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Applies `change` to the links from `from` to `to`, where `*` stands for every node
    /// (a link from a node to itself is skipped); with `both`, to the opposite direction too.
    /// Returns the links changed. Nothing changes if any name is unknown or the change is
    /// invalid.
    pub fn change(
        &self,
        from: &str,
        to: &str,
        both: bool,
        change: &ShapeChange,
    ) -> Result<Vec<LinkReport>, NetemError> {
        let mut selected = self.select(from, to)?;
        if both {
            let back: Vec<_> = self.select(to, from)?;
            for pair in back {
                if !selected.contains(&pair) {
                    selected.push(pair);
                }
            }
        }
        let mut shapes = Vec::new();
        for (a, b) in &selected {
            let link = self.link(a, b)?;
            shapes.push((link.clone(), change.apply(link.shape())?));
        }
        for (link, shape) in shapes {
            link.set_shape(shape);
        }
        Ok(selected
            .iter()
            .filter_map(|(a, b)| self.report(a, b))
            .collect())
    }

    /// Sets the shape of the link from `from` to `to`.
    pub fn set(&self, from: &str, to: &str, shape: Shape) -> Result<(), NetemError> {
        shape.validate()?;
        self.link(from, to)?.set_shape(shape);
        Ok(())
    }

    /// The shape of the link from `from` to `to`.
    pub fn shape(&self, from: &str, to: &str) -> Result<Shape, NetemError> {
        Ok(self.link(from, to)?.shape())
    }

    /// Cuts (`true`) or restores (`false`) every link to and from `node`: a full partition of
    /// that node, every other setting kept.
    pub fn isolate(&self, node: &str, cut: bool) -> Result<(), NetemError> {
        self.change(node, "*", true, &ShapeChange::down(cut))
            .map(|_| ())
    }

    /// Restores every link (each keeps its latency and other settings).
    pub fn heal_all(&self) {
        for link in self.links.values() {
            let mut shape = link.shape();
            shape.down = false;
            link.set_shape(shape);
        }
    }

    /// Every directed link with its shape and counters.
    pub fn report_all(&self) -> Vec<LinkReport> {
        self.links
            .keys()
            .filter_map(|(a, b)| self.report(a, b))
            .collect()
    }

    /// Bytes delivered over every link so far.
    pub fn delivered_bytes(&self) -> u64 {
        self.links.values().map(|l| l.stats().delivered_bytes).sum()
    }

    fn report(&self, from: &str, to: &str) -> Option<LinkReport> {
        let link = self.links.get(&(from.to_string(), to.to_string()))?;
        Some(LinkReport {
            from: from.into(),
            to: to.into(),
            shape: link.shape(),
            stats: link.stats(),
        })
    }

    /// The ordered pairs `from` → `to` names, `*` standing for every node.
    fn select(&self, from: &str, to: &str) -> Result<Vec<(String, String)>, NetemError> {
        let expand = |name: &str| -> Result<Vec<String>, NetemError> {
            if name == "*" {
                Ok(self.node_names())
            } else {
                self.node(name).map(|n| vec![n.name.clone()])
            }
        };
        let (froms, tos) = (expand(from)?, expand(to)?);
        if froms.len() == 1 && froms == tos {
            return Err(NetemError::SelfLink(from.into()));
        }
        Ok(froms
            .iter()
            .flat_map(|a| {
                tos.iter()
                    .filter(move |b| *b != a)
                    .map(move |b| (a.clone(), b.clone()))
            })
            .collect())
    }
}
