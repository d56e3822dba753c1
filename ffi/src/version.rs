//! The library's version and ABI version, for callers to check what they loaded.

use std::ffi::c_char;

/// The ABI version: bumped when a function's signature or meaning changes incompatibly
/// (the shared library's SONAME is `libmeridian.so.<ABI>`).
pub const MERIDIAN_ABI_VERSION: u32 = 1;
/// Major version of the library the header was generated from.
pub const MERIDIAN_VERSION_MAJOR: u32 = 0;
/// Minor version of the library the header was generated from.
pub const MERIDIAN_VERSION_MINOR: u32 = 1;
/// Patch version of the library the header was generated from.
pub const MERIDIAN_VERSION_PATCH: u32 = 0;

/// The library's version (`"major.minor.patch"`); static, never null, do not free it.
#[no_mangle]
pub extern "C" fn meridian_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version of the loaded library (compare with `MERIDIAN_ABI_VERSION` of the header
/// compiled against).
#[no_mangle]
pub extern "C" fn meridian_abi_version() -> u32 {
    MERIDIAN_ABI_VERSION
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_header_constants_are_the_package_version() {
        let version = format!(
            "{}.{}.{}",
            super::MERIDIAN_VERSION_MAJOR,
            super::MERIDIAN_VERSION_MINOR,
            super::MERIDIAN_VERSION_PATCH
        );
        assert_eq!(version, env!("CARGO_PKG_VERSION"));
        // SAFETY: a static NUL-terminated string.
        let loaded = unsafe { std::ffi::CStr::from_ptr(super::meridian_version()) };
        assert_eq!(loaded.to_str(), Ok(env!("CARGO_PKG_VERSION")));
    }
}
