//! Bytes the library hands out: a `MeridianBuffer` owns them until `meridian_buffer_free`.

use crate::status::{guard, Failure, MeridianStatus};
use std::collections::HashMap;
use std::sync::Mutex;

/// The buffers handed out and not freed yet, by address (with their lengths): a copy of a
/// buffer struct freed a second time is refused, not freed twice.
static LIVE: Mutex<Option<HashMap<usize, usize>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashMap<usize, usize>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes owned by the library; free them with `meridian_buffer_free` (once).
#[repr(C)]
#[derive(Debug)]
pub struct MeridianBuffer {
    /// The bytes (null when `len` is 0).
    pub data: *mut u8,
    /// How many.
    pub len: usize,
}

impl MeridianBuffer {
    /// A buffer owning `bytes`.
    pub(crate) fn from_vec(bytes: Vec<u8>) -> MeridianBuffer {
        if bytes.is_empty() {
            return MeridianBuffer {
                data: std::ptr::null_mut(),
                len: 0,
            };
        }
        let boxed = bytes.into_boxed_slice();
        let len = boxed.len();
        let data = Box::into_raw(boxed).cast::<u8>();
        live()
            .get_or_insert_with(HashMap::new)
            .insert(data as usize, len);
        MeridianBuffer { data, len }
    }
}

/// Frees the bytes of `buffer` and empties it (a null `buffer`, or an empty one, is fine).
/// Freeing twice is refused with `MERIDIAN_INVALID_ARGUMENT`, through the same struct (the
/// first call empties it) or a copy of it (the library knows which buffers it handed out),
/// and so is a buffer this library did not fill.
///
/// # Safety
/// `buffer`, when not null, must point at a `MeridianBuffer` filled by this library.
#[no_mangle]
pub unsafe extern "C" fn meridian_buffer_free(buffer: *mut MeridianBuffer) -> MeridianStatus {
    guard(move || {
        if buffer.is_null() {
            return Ok(());
        }
        // SAFETY: the caller vouches that `buffer` is a buffer this library filled.
        let b = unsafe { &mut *buffer };
        if !b.data.is_null() && b.len > 0 {
            let handed_out = live()
                .as_mut()
                .and_then(|l| l.remove_entry(&(b.data as usize)));
            match handed_out {
                Some((_, len)) if len == b.len => {}
                Some((addr, len)) => {
                    live().get_or_insert_with(HashMap::new).insert(addr, len);
                    return Err(Failure::invalid(format!(
                        "buffer: length {} is not the {len} bytes it was handed out with",
                        b.len
                    )));
                }
                None => return Err(Failure::invalid(
                    "buffer: freed already (a copy of it was freed), or not filled by this library",
                )),
            }
            let slice = std::ptr::slice_from_raw_parts_mut(b.data, b.len);
            // SAFETY: `data`/`len` come from `Box::into_raw` of a boxed slice of `len` bytes,
            // handed out and not freed since (checked above).
            drop(unsafe { Box::from_raw(slice) });
        }
        b.data = std::ptr::null_mut();
        b.len = 0;
        Ok(())
    })
}
