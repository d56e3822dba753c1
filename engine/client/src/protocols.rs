//! Which protocol versions a node or client speaks, and how a connection settles on one: each
//! version has its ALPN name; a dialer offers every version it speaks, the accepting node
//! picks the newest it speaks too (TLS's own negotiation, before the first frame), and both
//! ends then encode every frame for that version. A dialer and a node with no version in
//! common fail the TLS handshake (`no_application_protocol`), which the dialer reports as such.
//!
//! Pinning a lower version (`Protocols::pinned`) makes a node or client speak as an older
//! release does: during a rolling upgrade, keeping every upgraded node pinned until the last
//! one is upgraded keeps a rollback to the previous release possible (frames only it reads
//! are never sent).

use meridian_core::replication::PROTOCOL_VERSIONS;

/// Replication protocol versions, newest first, with their ALPN names. Version 4's name is
/// the one its release used (`meridian-replication/1`); later names carry their version.
pub const REPLICATION_ALPNS: &[(u8, &[u8])] = &[
    (9, b"meridian-replication/9"),
    (8, b"meridian-replication/8"),
    (7, b"meridian-replication/7"),
    (6, b"meridian-replication/6"),
    (5, b"meridian-replication/5"),
    (4, b"meridian-replication/1"),
];

/// Client protocol versions, newest first, with their ALPN names. Version 5's name is the
/// one its release used (`meridian-client/1`).
pub const CLIENT_ALPNS: &[(u8, &[u8])] = &[
    (8, b"meridian-client/8"),
    (7, b"meridian-client/7"),
    (6, b"meridian-client/6"),
    (5, b"meridian-client/1"),
];

/// The newest versions a node or client speaks (each at least its protocol's oldest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocols {
    /// Newest replication protocol version spoken.
    pub replication_max: u8,
    /// Newest client protocol version spoken.
    pub client_max: u8,
}

impl Default for Protocols {
    fn default() -> Protocols {
        Protocols {
            replication_max: REPLICATION_ALPNS[0].0,
            client_max: CLIENT_ALPNS[0].0,
        }
    }
}

/// The oldest version in a table.
fn oldest(table: &[(u8, &[u8])]) -> u8 {
    table.iter().map(|(v, _)| *v).min().unwrap_or(0)
}

impl Protocols {
    /// Speaking at most `replication_max` and `client_max`, or why not (a version this build
    /// does not speak).
    pub fn pinned(replication_max: u8, client_max: u8) -> Result<Protocols, String> {
        let check = |what: &str, v: u8, table: &[(u8, &[u8])]| {
            if (oldest(table)..=table[0].0).contains(&v) {
                Ok(v)
            } else {
                Err(format!(
                    "{what} protocol {v} is not one this build speaks ({} to {})",
                    oldest(table),
                    table[0].0
                ))
            }
        };
        Ok(Protocols {
            replication_max: check("replication", replication_max, REPLICATION_ALPNS)?,
            client_max: check("client", client_max, CLIENT_ALPNS)?,
        })
    }

    /// The replication ALPN names offered, newest first.
    pub fn replication_alpns(&self) -> Vec<Vec<u8>> {
        offered(REPLICATION_ALPNS, self.replication_max)
    }

    /// The client ALPN names offered, newest first.
    pub fn client_alpns(&self) -> Vec<Vec<u8>> {
        offered(CLIENT_ALPNS, self.client_max)
    }

    /// The range of replication versions spoken, for people.
    pub fn replication_range(&self) -> String {
        format!("{} to {}", oldest(REPLICATION_ALPNS), self.replication_max)
    }

    /// The range of client versions spoken, for people.
    pub fn client_range(&self) -> String {
        format!("{} to {}", oldest(CLIENT_ALPNS), self.client_max)
    }
}

fn offered(table: &[(u8, &[u8])], max: u8) -> Vec<Vec<u8>> {
    table
        .iter()
        .filter(|(v, _)| *v <= max)
        .map(|(_, name)| name.to_vec())
        .collect()
}

/// The replication version an ALPN name negotiates, if it is one.
pub fn replication_version(alpn: &[u8]) -> Option<u8> {
    REPLICATION_ALPNS
        .iter()
        .find(|(_, name)| *name == alpn)
        .map(|(v, _)| *v)
}

/// The client version an ALPN name negotiates, if it is one.
pub fn client_version(alpn: &[u8]) -> Option<u8> {
    CLIENT_ALPNS
        .iter()
        .find(|(_, name)| *name == alpn)
        .map(|(v, _)| *v)
}

/// Whether a connection error is the TLS handshake finding no protocol version in common.
pub fn is_no_common_version(error: &str) -> bool {
    // rustls's alert, as quinn reports it: "the cryptographic handshake failed: error 120"
    // (no_application_protocol is alert 120), or its own description on the refusing side.
    error.contains("error 120") || error.contains("NoApplicationProtocol")
}

/// Every replication version the core speaks has an ALPN name, and no other.
pub fn replication_table_matches_core() -> bool {
    let named: Vec<u8> = REPLICATION_ALPNS.iter().map(|(v, _)| *v).collect();
    PROTOCOL_VERSIONS.rev().collect::<Vec<u8>>() == named
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_version_has_a_name_and_pins_are_checked() {
        assert!(replication_table_matches_core());
        assert_eq!(
            CLIENT_ALPNS.iter().map(|(v, _)| *v).max(),
            Some(crate::client_proto::CLIENT_PROTOCOL)
        );
        let all = Protocols::default();
        assert_eq!(all.replication_alpns().len(), REPLICATION_ALPNS.len());
        let old = Protocols::pinned(4, 5).expect("4 and 5 are spoken");
        assert_eq!(
            old.replication_alpns(),
            vec![b"meridian-replication/1".to_vec()]
        );
        assert_eq!(old.client_alpns(), vec![b"meridian-client/1".to_vec()]);
        assert_eq!(replication_version(b"meridian-replication/1"), Some(4));
        assert_eq!(client_version(b"meridian-client/6"), Some(6));
        assert!(Protocols::pinned(3, 5).is_err());
        assert!(Protocols::pinned(4, 9).is_err());
    }
}
