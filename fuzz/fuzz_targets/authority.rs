//! Any bytes after the HTTP/2 preface, fed in pieces of any size, as the
//! kubelet plugin's sockets read a client: refused or rewritten, never a
//! panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use surveyor::kubelet::authority::Rewriter;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let mut rewriter = Rewriter::default();
    let mut input = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
    for piece in rest.chunks(usize::from(step).max(1)) {
        input.extend_from_slice(piece);
        if rewriter.feed(&mut input).is_err() {
            return;
        }
        let _ = rewriter.take(usize::MAX);
    }
});
