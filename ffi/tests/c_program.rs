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

/// The static library as `scripts/localize-static.sh` prepares it for a host (only
/// `meridian_*` global), in `dir`.
fn localized_archive(dir: &Path) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("libmeridian-host.a");
    let made = Command::new("bash")
        .arg(crate_dir.join("../scripts/localize-static.sh"))
        .arg(lib_dir().join("libmeridian.a"))
        .arg(&out)
        .output()
        .expect("localize");
    assert!(made.status.success(), "{made:?}");
    out
}

/// The static libraries a program linking `libmeridian.a` needs besides it.
const STATIC_DEPS: [&str; 7] = [
    "-lstdc++",
    "-lpthread",
    "-ldl",
    "-lm",
    "-lrt",
    "-lgcc_s",
    "-lutil",
];

fn compile_and_run(name: &str, link: &[&str]) {
    compile_and_run_source(name, "tests/c/embedded.c", link, true);
}

fn compile_and_run_source(name: &str, source: &str, link: &[&str], asan: bool) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let libs = lib_dir();
    let scratch = tempfile::tempdir().expect("tempdir");
    let exe = scratch.path().join(name);
    // The shared library is found at run time under its SONAME (`make` links it so in the
    // target directory; here, in the scratch directory).
    std::os::unix::fs::symlink(
        libs.join("libmeridian.so"),
        scratch.path().join("libmeridian.so.1"),
    )
    .expect("symlink");
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
    .args(if asan {
        &["-fsanitize=address", "-fno-omit-frame-pointer"][..]
    } else {
        &[][..]
    })
    .arg("-I")
    .arg(crate_dir.join("include"))
    .arg(crate_dir.join(source))
    .arg("-o")
    .arg(&exe)
    .arg(format!("-L{}", libs.display()))
    .arg(format!("-Wl,-rpath,{}", scratch.path().display()))
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
    compile_and_run("embedded-shared", &["-lmeridian"]);
}

/// Only `meridian_*` functions leave the shared library, whose SONAME carries the ABI version.
#[test]
fn the_shared_library_exports_only_its_functions_under_its_soname() {
    let lib = lib_dir().join("libmeridian.so");
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("nm");
    assert!(nm.status.success(), "{nm:?}");
    let symbols: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    assert!(
        symbols.iter().any(|s| s == "meridian_version"),
        "{symbols:?}"
    );
    let foreign: Vec<&String> = symbols
        .iter()
        .filter(|s| !s.starts_with("meridian_"))
        .collect();
    assert!(
        foreign.is_empty(),
        "exported beside meridian_*: {foreign:?}"
    );
    let dynamic = Command::new("objdump")
        .arg("-p")
        .arg(&lib)
        .output()
        .expect("objdump");
    let text = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("SONAME") && l.trim_end().ends_with("libmeridian.so.1")),
        "no SONAME libmeridian.so.1:\n{text}"
    );
}

#[test]
fn the_c_program_passes_against_the_static_library_under_asan() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let archive = localized_archive(scratch.path());
    let archive = archive.to_string_lossy().into_owned();
    let mut link = vec![archive.as_str()];
    link.extend(STATIC_DEPS);
    compile_and_run("embedded-static", &link);
}

/// Prepared for a host, the static library's only global symbols are the `meridian_*`
/// functions (RocksDB's, Rust's and the C++ runtime's weak ones made local); a host that links
/// its own RocksDB (the system's) uses both side by side.
#[test]
fn a_host_with_its_own_rocksdb_links_the_static_library() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let archive = localized_archive(scratch.path());
    let symbols = Command::new("readelf")
        .arg("-sW")
        .arg(&archive)
        .output()
        .expect("readelf");
    let text = String::from_utf8_lossy(&symbols.stdout);
    let exported: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && (f[4] == "GLOBAL" || f[4] == "WEAK") && f[6] != "UND").then(|| f[7])
        })
        .collect();
    assert!(exported.contains(&"meridian_version"), "{exported:?}");
    let foreign: Vec<&&str> = exported
        .iter()
        .filter(|s| !s.starts_with("meridian_"))
        .collect();
    assert!(
        foreign.is_empty(),
        "global beside meridian_*: {:?}",
        &foreign[..foreign.len().min(20)]
    );
    let archive = archive.to_string_lossy().into_owned();
    let mut link = vec![archive.as_str(), "-lrocksdb"];
    link.extend(STATIC_DEPS);
    compile_and_run_source("host-rocksdb", "tests/c/host_rocksdb.c", &link, false);
}
