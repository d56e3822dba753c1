//! The shared library's SONAME carries the ABI version (`ffi/src/version.rs`): a program
//! linked against `libmeridian.so.1` never loads an incompatible library.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmeridian.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
