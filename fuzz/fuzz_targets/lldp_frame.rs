//! Any bytes, as an Ethernet frame and as a bare LLDPDU: the parser may
//! refuse them, never panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use surveyor::lldp::frame::{parse_frame, parse_lldpdu};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, pdu)) = parse_frame(data) {
        // Whatever parses must also publish.
        let _ = pdu.neighbor();
    }
    let _ = parse_lldpdu(data);
});
