//! Any bytes as an EDP PDU (after the SNAP header): decoded or refused,
//! never a panic; whatever decodes also publishes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use surveyor::lldp::edp::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(pdu) = parse(data) {
        let _ = pdu.neighbor();
    }
});
