//! Bytes the library hands out: a `MeridianBuffer` owns them until `meridian_buffer_free`.

use crate::status::{guard, MeridianStatus};

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
        MeridianBuffer {
            data: Box::into_raw(boxed).cast::<u8>(),
            len,
        }
    }
}

/// Frees the bytes of `buffer` and empties it (a null `buffer`, or an empty one, is fine;
/// freeing twice is refused: the first call empties it).
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
            let slice = std::ptr::slice_from_raw_parts_mut(b.data, b.len);
            // SAFETY: `data`/`len` come from `Box::into_raw` of a boxed slice of `len` bytes.
            drop(unsafe { Box::from_raw(slice) });
        }
        b.data = std::ptr::null_mut();
        b.len = 0;
        Ok(())
    })
}
