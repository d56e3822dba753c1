//! Client mode through the C ABI's functions, against real `meridian node` processes: the
//! routed client uses the nearest region, fails over when it dies, keeps the session's token,
//! and refuses bad arguments and closed handles.

#![allow(clippy::unwrap_used)]
// Calls the C ABI's `unsafe extern "C"` functions, as a C program would.
#![allow(unsafe_code)]

use meridian_c::buffer::{meridian_buffer_free, MeridianBuffer};
use meridian_c::client::*;
use meridian_c::status::MeridianStatus as S;
use meridian_c::token::meridian_token_free;
use meridian_tests::Cluster;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr;

/// The `meridian` executable cargo built beside this test.
fn meridian_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("meridian")
}

fn text(b: &mut MeridianBuffer) -> String {
    let s = unsafe { std::slice::from_raw_parts(b.data, b.len) };
    let out = String::from_utf8_lossy(s).into_owned();
    unsafe { meridian_buffer_free(b) };
    out
}

#[test]
fn the_routed_client_fails_over_through_the_c_abi() {
    let mut cluster = Cluster::prepare(
        "ffi",
        &[
            ("euw1", "eu-west"),
            ("use1", "us-east"),
            ("apn1", "ap-northeast"),
        ],
        &["t"],
    )
    .unwrap();
    cluster.run_with(&meridian_bin());
    let places = [(53.3, -6.3), (39.0, -77.5), (35.7, 139.7)];
    for (node, (lat, lon)) in cluster.nodes.iter_mut().zip(places) {
        node.config.location = meridian_core::routing::Location::new(lat, lon);
    }
    cluster.start_all().unwrap();
    cluster
        .wait_linked(std::time::Duration::from_secs(30))
        .unwrap();
    let path = cluster.dir().join("client.toml");
    cluster
        .cluster_file("t", meridian_core::routing::Location::new(48.85, 2.35))
        .write(&path)
        .unwrap();
    let path = CString::new(path.to_string_lossy().into_owned()).unwrap();

    let mut client = ptr::null_mut();
    unsafe {
        assert_eq!(
            meridian_client_open(ptr::null(), &mut client),
            S::MeridianInvalidArgument
        );
        assert_eq!(
            meridian_client_open(path.as_ptr(), ptr::null_mut()),
            S::MeridianInvalidArgument
        );
        assert_eq!(
            meridian_client_open(path.as_ptr(), &mut client),
            S::MeridianOk
        );
    }
    let majority = MeridianConsistency::MeridianConsistencyMajority as i32;
    let mut region = MeridianBuffer {
        data: ptr::null_mut(),
        len: 0,
    };
    unsafe {
        let (k, v) = (b"cart", b"book");
        let mut token = ptr::null_mut();
        assert_eq!(
            meridian_client_lww_set(
                client,
                k.as_ptr(),
                4,
                v.as_ptr(),
                4,
                majority,
                0,
                &mut token
            ),
            S::MeridianOk
        );
        assert!(!token.is_null());
        assert_eq!(meridian_token_free(token), S::MeridianOk);
        assert_eq!(meridian_client_region(client, &mut region), S::MeridianOk);
        assert_eq!(text(&mut region), "eu-west");
        assert_eq!(meridian_client_retried_after_lost(), 0, "answered at once");
        let regions = MeridianConsistency::MeridianConsistencyRegions as i32;
        assert_eq!(
            meridian_client_counter_add(client, b"n".as_ptr(), 1, 2, regions, 0, ptr::null_mut()),
            S::MeridianInvalidArgument,
            "regions(0)"
        );
        // A level outside the enum is refused (it was matched as an enum: undefined).
        for bad in [4, 7, -1, i32::MAX] {
            assert_eq!(
                meridian_client_counter_add(client, b"n".as_ptr(), 1, 2, bad, 0, ptr::null_mut()),
                S::MeridianInvalidArgument,
                "level {bad}"
            );
        }
    }

    // Operations added to a batch while it commits are kept for the next commit.
    let mut batch = ptr::null_mut();
    assert_eq!(
        unsafe { meridian_c::batch::meridian_batch_new(&mut batch) },
        S::MeridianOk
    );
    let shared = batch as usize;
    let adder = std::thread::spawn(move || {
        for _ in 0..2_000 {
            let status = unsafe {
                meridian_c::batch::meridian_batch_counter_add(
                    shared as *mut _,
                    b"added".as_ptr(),
                    5,
                    1,
                )
            };
            assert_eq!(status, S::MeridianOk);
        }
    });
    let local_level = MeridianConsistency::MeridianConsistencyLocal as i32;
    let commit =
        || unsafe { meridian_client_batch_commit(client, batch, local_level, 0, ptr::null_mut()) };
    while !adder.is_finished() {
        let status = commit();
        assert!(
            status == S::MeridianOk || status == S::MeridianInvalidArgument,
            "{status:?}"
        );
    }
    adder.join().unwrap();
    let last = commit();
    assert!(
        last == S::MeridianOk || last == S::MeridianInvalidArgument,
        "{last:?}"
    );
    let mut added = 0i64;
    assert_eq!(
        unsafe { meridian_client_counter_get(client, b"added".as_ptr(), 5, &mut added) },
        S::MeridianOk
    );
    assert_eq!(added, 2_000, "operations added during commits were lost");
    assert_eq!(meridian_c::batch::meridian_batch_free(batch), S::MeridianOk);

    // A client-mode scan is a cursor: 600 keys (held by every region) in pages of 256; eu-west
    // dies after the first page, and the cursor goes on in us-east from the last key it
    // handed out: every key once, in order.
    let all = MeridianConsistency::MeridianConsistencyAll as i32;
    for i in 0..600 {
        let key = format!("row:{i:04}");
        let status = unsafe {
            meridian_client_lww_set(
                client,
                key.as_ptr(),
                key.len(),
                b"x".as_ptr(),
                1,
                all,
                0,
                ptr::null_mut(),
            )
        };
        assert_eq!(status, S::MeridianOk, "{key}");
    }
    let mut scan = ptr::null_mut();
    assert_eq!(
        unsafe {
            meridian_c::scan::meridian_client_scan_prefix(
                client,
                b"row:".as_ptr(),
                4,
                usize::MAX,
                &mut scan,
            )
        },
        S::MeridianOk
    );
    let mut seen = Vec::new();
    let mut kind = meridian_c::scan::MeridianKind::MeridianKindRegister;
    loop {
        let mut key = MeridianBuffer {
            data: ptr::null_mut(),
            len: 0,
        };
        match unsafe { meridian_c::scan::meridian_scan_next(scan, &mut key, &mut kind) } {
            S::MeridianOk => seen.push(text(&mut key)),
            S::MeridianNotFound => break,
            other => panic!("{other:?}"),
        }
        if seen.len() == 300 {
            // The second page is being handed out; the third comes from another region.
            cluster.nodes[0].kill();
        }
    }
    let expected: Vec<String> = (0..600).map(|i| format!("row:{i:04}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(meridian_c::scan::meridian_scan_free(scan), S::MeridianOk);

    // eu-west is dead: the same client writes in us-east, and reads its writes there.
    unsafe {
        let (k, v) = (b"cart", b"pen");
        assert_eq!(
            meridian_client_lww_set(
                client,
                k.as_ptr(),
                4,
                v.as_ptr(),
                3,
                majority,
                0,
                ptr::null_mut()
            ),
            S::MeridianOk
        );
        assert_eq!(meridian_client_region(client, &mut region), S::MeridianOk);
        assert_eq!(text(&mut region), "us-east");
        let mut value = MeridianBuffer {
            data: ptr::null_mut(),
            len: 0,
        };
        assert_eq!(
            meridian_client_lww_get(client, k.as_ptr(), 4, &mut value),
            S::MeridianOk
        );
        assert_eq!(text(&mut value), "pen");
        let local = MeridianConsistency::MeridianConsistencyLocal as i32;
        assert_eq!(
            meridian_client_counter_add(client, b"n".as_ptr(), 1, 5, local, 0, ptr::null_mut()),
            S::MeridianOk
        );
        let mut n = 0i64;
        assert_eq!(
            meridian_client_counter_get(client, b"n".as_ptr(), 1, &mut n),
            S::MeridianOk
        );
        assert_eq!(n, 5);
        assert_eq!(
            meridian_client_lww_get(client, b"none".as_ptr(), 4, &mut value),
            S::MeridianNotFound
        );
        let mut token = ptr::null_mut();
        assert_eq!(meridian_client_token(client, &mut token), S::MeridianOk);
        assert_eq!(meridian_client_merge_token(client, token), S::MeridianOk);
        assert_eq!(meridian_token_free(token), S::MeridianOk);
        assert_eq!(meridian_client_close(client), S::MeridianOk);
        assert_eq!(meridian_client_close(client), S::MeridianClosed);
        assert_eq!(
            meridian_client_counter_get(client, b"n".as_ptr(), 1, &mut n),
            S::MeridianClosed
        );
    }
}
