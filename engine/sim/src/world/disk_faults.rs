//! Disks that lose things: sync points and power losses (under `wal` the disk goes back to its
//! last sync point, and may also have lost an earlier write while keeping a later one: a torn
//! log), wiped disks, backups taken while writes go on and restored later; and which lost
//! writes the durability contract excuses.

use super::{Held, World};
use crate::history::{sim_replica, History};
use meridian::store::{LogEntry, Store};
use meridian::Dot;

impl World {
    /// A sync point of region `i` under `wal`: what a power loss rolls back to.
    pub(super) fn sync_point(&mut self, i: usize) {
        let r = &mut self.regions[i];
        let Some(n) = &r.node else { return };
        if r.durability != meridian::Durability::Wal {
            return;
        }
        let synced = r.dir.with_extension("synced");
        let _ = std::fs::remove_dir_all(&synced);
        let held = Held::of(&n.engine);
        match n.engine.checkpoint(&synced) {
            Ok(()) => r.synced = Some((synced, held)),
            Err(e) => self
                .violations
                .push(format!("checkpoint of region {i}: {e}")),
        }
        self.trace.write(b"sync");
    }

    /// Region `i` loses power: down, on a new boot. Under `wal` its disk is back to its last
    /// sync point (a region that never reached one keeps its disk, as after a crash), and the
    /// log may be torn: an earlier write of its own lost while later ones stay. Under `sync` it
    /// loses nothing it acknowledged, which its next open must show.
    pub(super) fn power_loss(&mut self, i: usize, history: &mut History) {
        if self.regions[i].node.is_none() || self.up().len() < 2 {
            return;
        }
        let before = self.held(i);
        self.crash(i);
        let member = sim_replica(i, self.regions[i].incarnation);
        let torn = self.torn_logs && self.rng.below(2) == 0;
        let r = &mut self.regions[i];
        r.boot += 1;
        let wal = r.durability == meridian::Durability::Wal;
        if !wal {
            // Everything it acknowledged was synced: the next open must reflect it.
            r.expect_after_open = Some(before.clone());
        } else if let Some((synced, held)) = r.synced.take() {
            let _ = std::fs::remove_dir_all(&r.dir);
            if let Err(e) = std::fs::rename(&synced, &r.dir) {
                self.violations
                    .push(format!("power loss of region {i}: {e}"));
            }
            self.held_at_crash.insert(member, held);
            if torn {
                self.tear(i, history);
            }
        }
        if wal {
            // The run that lost power wrote unsynced: whatever the next run's durability, it
            // must not number its writes in the same origin again.
            self.regions[i].lost_tail = true;
        }
        self.trace.write(b"power");
        if std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
            eprintln!(
                "t={} power loss region {i} ({:?})",
                self.now_ms, self.regions[i].durability
            );
        }
        let after = self.held(i);
        history.dropped.extend(
            history
                .keys_of
                .iter()
                .filter(|(d, k)| before.holds(d, Some(k)) && !after.holds(d, Some(k)))
                .map(|(d, _)| *d),
        );
        self.forget_lost(history);
    }

    /// Tears region `i`'s restored log: one of its own writes that is not the last of its
    /// origin, and that no later write changed the key of, goes (its record back to the state
    /// before it, its entry missing or an empty filler), as a power loss that kept a later
    /// commit and lost an earlier one would leave it. The disk is changed as RocksDB holds it.
    fn tear(&mut self, i: usize, history: &History) {
        let dir = self.regions[i].dir.clone();
        let store = match Store::open(&dir) {
            Ok(store) => store,
            Err(e) => {
                self.violations.push(format!("tearing region {i}: {e}"));
                return;
            }
        };
        let candidates: Vec<(Dot, Vec<u8>)> = history
            .written
            .iter()
            .filter(|(_, w)| w.region == i)
            .filter_map(|(dot, w)| {
                let key = history.keys_of.get(dot)?;
                let last = store.last_log_seq(dot.replica).ok()?;
                let logged = store.get_log(dot.replica, dot.counter).ok()??;
                let current = store.get_record(key).ok()?.map(|b| b.to_vec());
                let untouched_since = current.is_some() && current == w.after;
                (dot.counter < last && !logged.is_empty() && untouched_since)
                    .then(|| (*dot, key.clone()))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let (dot, key) = candidates[self.rng.below(candidates.len() as u64) as usize].clone();
        let before = history.written.get(&dot).and_then(|w| w.before.clone());
        let mut wb = store.batch();
        match &before {
            Some(bytes) => wb.put_record(&key, bytes),
            None => {
                wb.delete_record(&key);
                wb.unindex_key(&key);
            }
        }
        if self.rng.below(2) == 0 {
            wb.put_log(dot.replica, dot.counter, &LogEntry::default().encode());
        } else {
            wb.delete_log_range(dot.replica, dot.counter, dot.counter);
        }
        if let Err(e) = wb.commit(true) {
            self.violations.push(format!("tearing region {i}: {e}"));
            return;
        }
        // What the disk holds now: the write is gone from its record and its origin counts
        // only up to the hole.
        let member = sim_replica(i, self.regions[i].incarnation);
        if let Some(held) = self.held_at_crash.get_mut(&member) {
            held.tear(dot, &key, before.as_deref());
        }
        self.torn += 1;
        if std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
            eprintln!(
                "t={} torn region {i}: {dot} on {:?} ({:?})",
                self.now_ms,
                String::from_utf8_lossy(&key),
                history.effects.get(&dot)
            );
        }
        self.trace.write(b"torn");
        self.trace.write_u64(dot.counter);
    }

    /// Region `i`'s disk is wiped (down if it was up); it comes back under the same identity.
    pub(super) fn wipe(&mut self, i: usize, history: &mut History) {
        if self.regions[i].dead {
            return;
        }
        if self.regions[i].node.is_some() {
            if self.up().len() < 2 {
                return;
            }
            self.crash(i);
        }
        let before = self.held(i);
        let member = sim_replica(i, self.regions[i].incarnation);
        let r = &mut self.regions[i];
        let _ = std::fs::remove_dir_all(&r.dir);
        if let Some((synced, _)) = r.synced.take() {
            let _ = std::fs::remove_dir_all(synced);
        }
        self.held_at_crash.insert(member, Held::default());
        r.wiped = true;
        self.trace.write(b"wipe");
        if std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
            eprintln!("t={} wipe region {i}", self.now_ms);
        }
        history.dropped.extend(
            history
                .keys_of
                .iter()
                .filter(|(d, k)| before.holds(d, Some(k)))
                .map(|(d, _)| *d),
        );
        self.forget_lost(history);
    }

    /// An operator backs region `i` up while it runs (`Engine::checkpoint`, writes going on).
    pub(super) fn backup(&mut self, i: usize) {
        let r = &mut self.regions[i];
        let Some(n) = &r.node else { return };
        let dir = r.dir.with_extension("backup");
        let _ = std::fs::remove_dir_all(&dir);
        let held = Held::of(&n.engine);
        match n.engine.checkpoint(&dir) {
            Ok(()) => r.backup = Some((dir, held)),
            Err(e) => self.violations.push(format!("backup of region {i}: {e}")),
        }
        self.trace.write(b"backup");
    }

    /// Region `i` is restored from its backup (`Engine::restore_backup`): down, then back with
    /// less than it shipped since; it must write under a new epoch.
    pub(super) fn restore(&mut self, i: usize, history: &mut History) {
        if self.regions[i].node.is_none() || self.up().len() < 2 {
            return;
        }
        let Some((backup, held)) = self.regions[i].backup.clone() else {
            return;
        };
        let before = self.held(i);
        self.crash(i);
        let member = sim_replica(i, self.regions[i].incarnation);
        let r = &mut self.regions[i];
        let _ = std::fs::remove_dir_all(&r.dir);
        if let Some((synced, _)) = r.synced.take() {
            let _ = std::fs::remove_dir_all(synced);
        }
        if let Err(e) = meridian::Engine::restore_backup(&backup, &r.dir) {
            self.violations.push(format!("restore of region {i}: {e}"));
            return;
        }
        r.lost_tail = true;
        self.held_at_crash.insert(member, held.clone());
        self.restores += 1;
        self.trace.write(b"restore");
        history.dropped.extend(
            history
                .keys_of
                .iter()
                .filter(|(d, k)| before.holds(d, Some(k)) && !held.holds(d, Some(k)))
                .map(|(d, _)| *d),
        );
        self.forget_lost(history);
    }

    /// Damages a stored record (or, one time in four, a log entry) of region `i` while it runs,
    /// as bit rot would: the bytes no longer decode. A record is damaged only where every other
    /// live region holds every write to its key (a copy to repair it from exists): the region
    /// must go on, report it and get the record back, and no write may be lost.
    pub(super) fn corrupt(&mut self, i: usize, history: &History) {
        let Some(n) = &self.regions[i].node else {
            return;
        };
        let store = n.engine.store();
        let log = !self.corrupt_records || self.rng.below(4) == 0;
        let keys: Vec<Vec<u8>> = if log {
            store
                .log_entries()
                .flatten()
                .map(|(k, _)| k.into_vec())
                .collect()
        } else {
            let others: Vec<Held> = (0..self.regions.len())
                .filter(|j| *j != i && !self.regions[*j].dead)
                .map(|j| self.held(j))
                .collect();
            store
                .records_from(b"", None)
                .flatten()
                .map(|(k, _)| k.into_vec())
                .filter(|key| {
                    history
                        .keys_of
                        .iter()
                        .filter(|(_, k)| *k == key)
                        .all(|(d, k)| others.iter().all(|h| h.holds(d, Some(k))))
                })
                .collect()
        };
        if keys.is_empty() {
            return;
        }
        let key = keys[self.rng.below(keys.len() as u64) as usize].clone();
        let garbage: &[u8] = b"\x01not a record";
        let done = if log {
            match meridian::store::keys::parse_log_key(&key) {
                Some((origin, seq)) => store.put_raw_log(origin, seq, garbage),
                None => return,
            }
        } else {
            store.put_raw_record(&key, garbage)
        };
        if let Err(e) = done {
            self.violations.push(format!("damaging region {i}: {e}"));
            return;
        }
        if !log {
            self.corrupted.insert((i, key.clone()));
        }
        self.corruptions += 1;
        self.trace.write(b"corrupt");
        self.trace.write(&key);
    }

    /// What region `i` holds now: its engine's state, or what its disk held when it went down.
    pub(super) fn held(&self, i: usize) -> Held {
        match &self.regions[i].node {
            Some(n) => Held::of(&n.engine),
            None => self
                .held_at_crash
                .get(&sim_replica(i, self.regions[i].incarnation))
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Takes back the acknowledged writes no region holds any more, when a disk fault that may
    /// lose them took them (a power loss under `wal`, a wiped disk, a restored backup): the
    /// checks then accept either outcome for them. A write lost any other way is not excused.
    pub(super) fn forget_lost(&mut self, history: &mut History) {
        let holders: Vec<Held> = (0..self.regions.len())
            .filter(|i| !self.regions[*i].dead)
            .map(|i| self.held(i))
            .collect();
        let lost: Vec<Dot> = history
            .dots
            .iter()
            .filter(|d| !history.lost.contains(d) && history.dropped.contains(d))
            .filter(|d| {
                let key = history.keys_of.get(d);
                !holders.iter().any(|h| h.holds(d, key))
            })
            .copied()
            .collect();
        for dot in lost {
            history.forget(dot);
        }
    }
}
