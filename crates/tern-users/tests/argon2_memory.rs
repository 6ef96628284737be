//! Argon2 checks give their memory back: after many checks on several
//! threads the process is not tens of megabytes larger (glibc used to keep
//! each check's 19 MiB in the heap of every thread that ran one). Alone in
//! its own test binary, so that no other test moves the figure.

#[cfg(target_os = "linux")]
#[test]
fn argon2_checks_leave_no_memory_behind() {
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
    // Production parameters (19 MiB).
    let hash = tern_users::hash_password("right").unwrap();
    assert!(tern_users::verify_password(&hash, "right").unwrap());
    let before = rss_kib();
    for _ in 0..3 {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let hash = hash.clone();
                std::thread::spawn(move || {
                    let pw = if i % 2 == 0 { "right" } else { "wrong" };
                    assert_eq!(tern_users::verify_password(&hash, pw).unwrap(), i % 2 == 0);
                    tern_users::dummy_verify("x");
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "RSS grew by {grown} KiB over 24 argon2 checks on 12 threads"
    );
}
