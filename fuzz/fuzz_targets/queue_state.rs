//! The spool's per-message state file (`queue/<id>.state`) against
//! arbitrary contents: a crash can leave a torn line, a disk can leave
//! garbage. Reading never panics, and a record appended after whatever is
//! there always counts (see `tern_queue::fuzz_check_state_file`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tern_queue::fuzz_check_state_file(data);
});
