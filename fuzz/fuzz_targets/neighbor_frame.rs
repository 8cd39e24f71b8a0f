//! Any bytes as a whole Ethernet frame, as the listener hands it over:
//! which protocol, then its decoder. Seeded with real frames of each
//! (fixtures/lldp, fixtures/neighbors), the fuzzer keeps their headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use surveyor::lldp::decode::{Protocols, decode};

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, Protocols::all());
});
