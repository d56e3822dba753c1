//! Handles: what C holds is an id, never an address. Each kind of object lives in a registry
//! of its own, shared behind `Arc`s, so a handle used from several threads at once is safe, a
//! closed handle is refused (`MERIDIAN_CLOSED`: ids are never reused), and a close while
//! another thread is in a call only drops the object when that call ends.

use crate::status::{Failure, MeridianStatus};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Ids of every handle kind, from 1 (0 would be a null pointer).
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// The live objects of one kind.
pub(crate) struct Registry<T> {
    name: &'static str,
    live: RwLock<Option<HashMap<usize, Arc<T>>>>,
}

impl<T> Registry<T> {
    /// An empty registry for objects called `name` in messages.
    pub const fn new(name: &'static str) -> Registry<T> {
        Registry {
            name,
            live: RwLock::new(None),
        }
    }

    /// Registers `object`; returns its handle.
    pub fn insert(&self, object: T) -> usize {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(id, Arc::new(object));
        id
    }

    /// The object of `handle`.
    pub fn get(&self, handle: usize) -> Result<Arc<T>, Failure> {
        if handle == 0 {
            return Err(Failure::invalid(format!("null {} handle", self.name)));
        }
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|live| live.get(&handle).cloned())
            .ok_or_else(|| {
                Failure::new(
                    MeridianStatus::MeridianClosed,
                    format!(
                        "{} handle {handle:#x} is closed or was never opened",
                        self.name
                    ),
                )
            })
    }

    /// Every live object, with its handle (a snapshot).
    pub fn all(&self) -> Vec<(usize, Arc<T>)> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|live| live.iter().map(|(id, o)| (*id, Arc::clone(o))).collect())
            .unwrap_or_default()
    }

    /// Takes `handle` out (closing it); `None` when it is not live.
    pub fn remove(&self, handle: usize) -> Option<Arc<T>> {
        self.live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|live| live.remove(&handle))
    }
}
