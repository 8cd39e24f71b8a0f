//! Any bytes as a CDP and as an FDP PDU (after the SNAP header): decoded
//! or refused, never a panic; whatever decodes also publishes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use surveyor::inventory::Protocol;
use surveyor::lldp::cdp::parse;

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::Cdp, Protocol::Fdp] {
        if let Ok(pdu) = parse(data, protocol) {
            let _ = pdu.neighbor();
        }
    }
});
