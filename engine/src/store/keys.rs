//! Byte layout of keys in the log and metadata column families.

use crate::model::OriginId;

/// Column family holding one record per user key.
pub const CF_RECORDS: &str = "records";
/// Column family holding the replication log, keyed by (origin, sequence).
pub const CF_LOG: &str = "log";
/// Column family holding replica identity and counters.
pub const CF_META: &str = "meta";
/// Column family indexing record keys by their hash (`key_hash` ‖ key), for anti-entropy.
pub const CF_KEYHASH: &str = "keyhash";

/// Metadata key of the anti-entropy summary kept by a clean shutdown (removed at open).
pub const META_SUMMARY: &[u8] = b"summary";
/// Metadata key present once the keys-by-hash index covers every record.
pub const META_KEYHASH_INDEX: &[u8] = b"keyhash_index";

/// The keys-by-hash index entry of `key`.
pub fn keyhash_key(key: &[u8]) -> Vec<u8> {
    let mut k = crate::model::digest::key_hash(key).to_be_bytes().to_vec();
    k.extend_from_slice(key);
    k
}

/// Metadata key of this replica's id.
pub const META_REPLICA_ID: &[u8] = b"replica_id";
/// Metadata key of this replica's committed contiguous sequence prefix (a checkpoint).
pub const META_OWN_CONTIGUOUS: &[u8] = b"own_contiguous";
/// Metadata key of the current epoch: its number (4 bytes) and its origin (8 bytes).
pub const META_EPOCH: &[u8] = b"epoch";
/// Metadata key present once the directory has replicated: peers may hold its writes.
pub const META_REPLICATED: &[u8] = b"replicated";
/// Metadata key of the current run: whether it ended cleanly (1 byte), then the boot it ran in.
pub const META_RUN: &[u8] = b"run";
/// Metadata key of the current run's durability (0: `Wal`, 1: `Sync`): whether an unclean end
/// of it can have lost acknowledged writes is decided by it, not by the next run's setting.
pub const META_RUN_DURABILITY: &[u8] = b"run_durability";
/// Metadata key present in a directory restored from a backup until its first open takes a
/// new epoch (the copy may have a live twin, and lacks what was written after it was taken).
pub const META_RESTORED: &[u8] = b"restored";
/// Metadata key present in a directory restored from a backup until a peer's state transfer
/// has reconciled it (`ReplicaStore::reconciling`): its records may hold dots whose removal
/// its peers collected while it was away, which it must not ship meanwhile.
pub const META_RECONCILING: &[u8] = b"reconciling";
/// Metadata key of the oldest on-disk layout a build must have to open the directory: every
/// build refuses a directory whose byte is above its own layout (up to layout 1, the layout the
/// directory was written in; since migrations, `engine/migrations.rs`, its compatibility floor).
pub const META_LAYOUT: &[u8] = b"layout";
/// Metadata key of the layout the directory has been migrated to (absent: `META_LAYOUT`'s).
pub const META_LAYOUT_MIGRATED: &[u8] = b"layout_migrated";

/// Prefix of the metadata keys holding, per origin, the highest sequence applied in order.
pub const META_APPLIED_PREFIX: &[u8] = b"applied/";
/// Prefix of settings kept with the data by the layers above (`Engine::set_setting`).
pub const META_SETTING_PREFIX: &[u8] = b"setting/";

/// The meta key of setting `name`.
pub fn setting_key(name: &str) -> Vec<u8> {
    let mut k = META_SETTING_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Metadata key of `origin`'s applied sequence number.
pub fn applied_key(origin: OriginId) -> Vec<u8> {
    let mut k = META_APPLIED_PREFIX.to_vec();
    k.extend_from_slice(&origin.0.to_be_bytes());
    k
}

/// Prefix of the metadata keys naming, per client request tag, the write that answered it
/// (`request_key`): its dot and when it was made.
pub const META_REQUEST_PREFIX: &[u8] = b"request/";
/// Prefix of the metadata keys ordering request tags by when their write was made
/// (`request_age_key`), for pruning the oldest.
pub const META_REQUEST_AGE_PREFIX: &[u8] = b"request_age/";

/// The client's identity (length first) and the request id: what both request keys end with.
fn request_suffix(tag: &crate::model::RequestTag, out: &mut Vec<u8>) {
    // A sane tag's client is at most 128 bytes.
    out.push(u8::try_from(tag.client.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(tag.client.as_bytes());
    out.extend_from_slice(&tag.id);
}

/// Metadata key of the write that answered request `tag`.
pub fn request_key(tag: &crate::model::RequestTag) -> Vec<u8> {
    let mut k = META_REQUEST_PREFIX.to_vec();
    request_suffix(tag, &mut k);
    k
}

/// Metadata key ordering request `tag`, made at `ms`, among the others by age.
pub fn request_age_key(ms: u64, tag: &crate::model::RequestTag) -> Vec<u8> {
    let mut k = META_REQUEST_AGE_PREFIX.to_vec();
    k.extend_from_slice(&ms.to_be_bytes());
    request_suffix(tag, &mut k);
    k
}

/// The request key an age key (`request_age_key`) orders, and when its write was made.
pub fn request_key_of_age_key(age_key: &[u8]) -> Option<(u64, Vec<u8>)> {
    let rest = age_key.strip_prefix(META_REQUEST_AGE_PREFIX)?;
    let (ms, suffix) = rest.split_first_chunk::<8>()?;
    let mut k = META_REQUEST_PREFIX.to_vec();
    k.extend_from_slice(suffix);
    Some((u64::from_be_bytes(*ms), k))
}

/// Prefix of the metadata keys holding, per origin, the log floor: entries at or below it are
/// no longer in this replica's log (reclaimed, or skipped by a state transfer).
pub const META_FLOOR_PREFIX: &[u8] = b"floor/";

/// Metadata key of `origin`'s log floor.
pub fn floor_key(origin: OriginId) -> Vec<u8> {
    let mut k = META_FLOOR_PREFIX.to_vec();
    k.extend_from_slice(&origin.0.to_be_bytes());
    k
}

/// Prefix of the metadata keys naming writes declared lost (origin, then sequence number).
pub const META_LOST_PREFIX: &[u8] = b"exc_lost/";
/// Prefix of the metadata keys naming keys, by hash, whose states were left out on their way
/// here (declared lost).
pub const META_UNCERTAIN_PREFIX: &[u8] = b"exc_key/";

/// Metadata key of the write `(origin, seq)` declared lost.
pub fn lost_key(origin: OriginId, seq: u64) -> Vec<u8> {
    let mut k = META_LOST_PREFIX.to_vec();
    k.extend_from_slice(&origin.0.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Metadata key of the key hash `hash` whose state was left out.
pub fn uncertain_key(hash: u64) -> Vec<u8> {
    let mut k = META_UNCERTAIN_PREFIX.to_vec();
    k.extend_from_slice(&hash.to_be_bytes());
    k
}

/// Prefix of the metadata keys naming tombstones not yet reclaimable.
pub const META_TOMBSTONE_PREFIX: &[u8] = b"tomb/";

/// Metadata key marking `key` as a pending tombstone.
pub fn tombstone_key(key: &[u8]) -> Vec<u8> {
    let mut k = META_TOMBSTONE_PREFIX.to_vec();
    k.extend_from_slice(key);
    k
}

/// Metadata key prefix of the members last seen on a release that does not read expiries
/// (`expiry_gate.rs`): while one is listed, writes that set an expiry are refused.
pub const META_OLDER_MEMBER_PREFIX: &[u8] = b"older_member/";

/// Metadata key listing `member` as last seen on a release that does not read expiries.
pub fn older_member_key(member: crate::model::MemberId) -> Vec<u8> {
    let mut k = META_OLDER_MEMBER_PREFIX.to_vec();
    k.extend_from_slice(&member.0.to_be_bytes());
    k
}

/// Metadata key prefix marking keys whose record has (or had) expiries, for the sweep that
/// reclaims expired values (`expiry_sweep.rs`).
pub const META_EXPIRING_PREFIX: &[u8] = b"expiring/";

/// Metadata key marking `key` as holding expiries.
pub fn expiring_key(key: &[u8]) -> Vec<u8> {
    let mut k = META_EXPIRING_PREFIX.to_vec();
    k.extend_from_slice(key);
    k
}

/// Metadata key prefix of the named change feeds' acknowledged positions.
pub const META_FEED_PREFIX: &[u8] = b"feed/";

/// Metadata key of named feed `name`'s acknowledged position.
pub fn feed_key(name: &[u8]) -> Vec<u8> {
    let mut k = META_FEED_PREFIX.to_vec();
    k.extend_from_slice(name);
    k
}

/// Log key: origin replica then sequence, both big-endian so that keys sort by (origin, seq).
pub fn log_key(origin: OriginId, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&origin.0.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Splits a log key; `None` if it is not 16 bytes.
pub fn parse_log_key(k: &[u8]) -> Option<(OriginId, u64)> {
    let origin = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(k.get(8..16)?.try_into().ok()?);
    (k.len() == 16).then_some((OriginId(origin), seq))
}

/// The smallest key greater than every key starting with `prefix` (`None`: no upper bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_origin_then_sequence() {
        let a = log_key(OriginId(1), 300);
        let b = log_key(OriginId(2), 1);
        let c = log_key(OriginId(1), 301);
        assert!(a < c && c < b);
        assert_eq!(parse_log_key(&a), Some((OriginId(1), 300)));
        assert_eq!(parse_log_key(&a[..15]), None);
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
