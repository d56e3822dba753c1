//! Compiles `tests/c/embedded.c` against the header and each library (shared and static)
//! under AddressSanitizer (leaks included) and runs it: every check in it must hold, with no
//! memory error and no leak. `make test` builds the libraries first.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where cargo put the libraries (this test binary sits in `<target>/release/deps`).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn compile_and_run(name: &str, link: &[&str]) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let libs = lib_dir();
    let scratch = tempfile::tempdir().expect("tempdir");
    let exe = scratch.path().join(name);
    let mut cc = Command::new("cc");
    cc.args([
        "-std=c11",
        "-D_DEFAULT_SOURCE",
        "-pthread",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-g",
    ])
    .args(["-fsanitize=address", "-fno-omit-frame-pointer"])
    .arg("-I")
    .arg(crate_dir.join("include"))
    .arg(crate_dir.join("tests/c/embedded.c"))
    .arg("-o")
    .arg(&exe)
    .arg(format!("-L{}", libs.display()))
    .args(link);
    let built = cc.output().expect("cc");
    assert!(
        built.status.success(),
        "cc failed (is `make test` building the libraries first?):\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe)
        .arg(scratch.path().join("data"))
        .env("LD_LIBRARY_PATH", &libs)
        .env("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1")
        .output()
        .expect("run");
    assert!(
        run.status.success() && String::from_utf8_lossy(&run.stdout).contains("ok"),
        "{name} failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn the_c_program_passes_against_the_shared_library_under_asan() {
    let rpath = format!("-Wl,-rpath,{}", lib_dir().display());
    compile_and_run("embedded-shared", &["-lmeridian", &rpath]);
}

#[test]
fn the_c_program_passes_against_the_static_library_under_asan() {
    let archive = lib_dir().join("libmeridian.a");
    let archive = archive.to_string_lossy().into_owned();
    compile_and_run(
        "embedded-static",
        &[
            &archive,
            "-lstdc++",
            "-lpthread",
            "-ldl",
            "-lm",
            "-lrt",
            "-lgcc_s",
            "-lutil",
        ],
    );
}
