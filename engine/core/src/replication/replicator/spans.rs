//! Spans (protocol 8): consecutive entries of a frame that leave nothing out, are not lost and
//! name no request go as one entry that stands for them all (`EntryOut::span`), carrying each
//! key's state once. The entries of a catch-up carry current states, so a run of writes to the
//! same few keys repeats the same states: a span sends them once instead of once per write.
//!
//! A receiver takes every write a span stands for as an entry naming all of the span's keys
//! with its states (it relays each with those keys, so a third region that needs only the
//! later writes still gets the states). It lists each, so a frame's spans are bounded
//! (`Spans`, `FRAME_STATES_BYTES_MAX`) and a sender counts them as the receiver will. A span
//! takes new keys at its second write only, and grows only while the records its writes then
//! name at the receiver stay within twice those they named themselves (`NAMED_GROWTH_MAX`):
//! writes to the same one or two keys fold into one entry, writes to distinct keys into pairs
//! at most (their receiver would otherwise store and relay each write with every key of the
//! span, and a relay would fold those again).

use super::log_shipping::RepeatedStates;
use crate::limits::{FRAME_STATES_BYTES_MAX, RECORD_OVERHEAD_BYTES};
use crate::replication::frame::{Spans, StateForm};
use crate::replication::link_states::LinkStates;
use crate::replication::seam::ShippedEntry;
use std::sync::Arc;

/// How many times the records a span's writes name at the receiver may exceed those they
/// named themselves.
const NAMED_GROWTH_MAX: usize = 2;

/// The frame's last entry, as a span may grow it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct OpenSpan {
    /// Sequence numbers after the entry's own it stands for.
    pub span: u64,
    /// Bytes of states the receiver is handed for the frame's entries before this one.
    handed_before: usize,
    /// What the frame's spans before this one stand for.
    spans_before: Spans,
    /// What the frame's spans stand for, this one's included.
    pub spans: Spans,
    /// Bytes of the entry's records (keys, states and their overhead).
    whole: usize,
    /// Records the writes of the span named themselves.
    named: usize,
}

/// What became of an entry offered to the frame's last one.
pub(super) enum Offered {
    /// The last entry stands for it now; its records grew by this many bytes on the wire.
    Joined(usize),
    /// It goes as an entry of its own.
    Apart,
    /// Joining it would pass the frame's bounds: the next frame carries it.
    Full,
}

impl OpenSpan {
    /// The frame's last entry, just pushed: `handed` bytes of states handed before it, `spans`
    /// what the spans before it stand for, `whole` its records' bytes, `named` its records.
    pub fn new(handed: usize, spans: Spans, whole: usize, named: usize) -> OpenSpan {
        OpenSpan {
            span: 0,
            handed_before: handed,
            spans_before: spans,
            spans,
            whole,
            named,
        }
    }

    /// Bytes of states the receiver is handed for the frame so far (each write of the span
    /// counted with all of its records).
    pub fn handed(&self) -> usize {
        self.handed_before
            .saturating_add(self.whole.saturating_mul(self.span as usize + 1))
    }

    /// Offers `entry`, read just after `last` (the frame's last entry, whose record forms are
    /// `last_forms`), to the span: it joins when both leave nothing out, are not lost and name
    /// no request, and every key they share has the same state in both; its other keys then
    /// join `last`'s records with their forms, taken into the frame's repeats and the link's
    /// table as the receiver will take them.
    pub fn offer(
        &mut self,
        last: &mut ShippedEntry,
        last_forms: &mut Vec<StateForm>,
        entry: &ShippedEntry,
        repeats: &mut RepeatedStates,
        link: &mut LinkStates<Arc<[u8]>>,
    ) -> Offered {
        if !plain(last) || !plain(entry) {
            return Offered::Apart;
        }
        let mut added = Vec::new();
        for (k, v) in &entry.states {
            match last.states.iter().find(|(lk, _)| lk == k) {
                Some((_, lv)) if Arc::ptr_eq(lv, v) || lv == v => {}
                Some(_) => return Offered::Apart, // written again meanwhile: a state of its own
                None => added.push((k.clone(), v.clone())),
            }
        }
        if !added.is_empty() && self.span > 0 {
            // Keys join a span at its second write only: a run of writes to distinct keys
            // stays pairs at most, and a relay does not fold those pairs further.
            return Offered::Apart;
        }
        let added_whole: usize = added
            .iter()
            .map(|(k, v)| k.len() + v.len() + RECORD_OVERHEAD_BYTES)
            .sum();
        let grown = OpenSpan {
            span: self.span + 1,
            whole: self.whole + added_whole,
            named: self.named + entry.states.len(),
            ..*self
        };
        let union = last.states.len() + added.len();
        if (grown.span as usize + 1).saturating_mul(union) > NAMED_GROWTH_MAX * grown.named {
            return Offered::Apart;
        }
        let mut spans = self.spans_before;
        if grown.handed() > FRAME_STATES_BYTES_MAX
            || spans
                .take(grown.span, last.states.len() + added.len())
                .is_err()
        {
            return Offered::Full;
        }
        let part = ShippedEntry {
            states: added,
            left_out: Vec::new(),
            lost: false,
            request: None,
        };
        let (forms, saved) = repeats.forms(link, &part);
        for (k, v) in &part.states {
            repeats.0.insert(k.clone(), v.clone());
            link.remember(k, v.clone());
        }
        last.states.extend(part.states);
        last_forms.extend(forms);
        *self = OpenSpan { spans, ..grown };
        Offered::Joined(added_whole - saved)
    }
}

/// Whether an entry may be part of a span: nothing left out, not lost, no request named.
fn plain(entry: &ShippedEntry) -> bool {
    entry.left_out.is_empty() && !entry.lost && entry.request.is_none()
}
