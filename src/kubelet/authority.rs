//! The kubelet's clients as they dial, whatever `:authority` they send.
//!
//! The kubelet's plugin watcher dials the registration socket with the
//! bare socket path as its gRPC target, so grpc-go sends that path,
//! percent-encoded, as the `:authority` pseudo-header. h2 (the HTTP/2 layer
//! under tonic) takes only a valid URI authority there and resets the
//! stream otherwise, and declines to relax that. A unix socket's authority
//! means nothing, so the plugin's sockets read each connection through
//! [`Tolerant`]: the client's header blocks are decoded (HPACK, by
//! loona-hpack), an `:authority` h2 would refuse becomes `localhost` (what
//! the kubelet's `unix:` dials send), and the block is encoded again as
//! plain literals, which leaves h2's header table empty. Every other byte,
//! and everything the server sends, passes through unchanged.
//!
//! [`Rewriter`] is the pure part: bytes in, bytes out.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, BufMut as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What every HTTP/2 client sends first.
const PREFACE: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer takes (SETTINGS_MAX_FRAME_SIZE's
/// least value), so the blocks written here never need the server's.
const MAX_FRAME: usize = 16_384;
/// The largest header block taken. The kubelet's are a few hundred bytes.
const MAX_BLOCK: usize = 64 * 1024;
/// The header table size every HTTP/2 decoder starts with, and h2's
/// server keeps (it never advertises another).
const TABLE_SIZE: usize = 4096;
/// What an authority h2 refuses becomes.
const STAND_IN: &[u8] = b"localhost";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthorityError {
    #[error("an HTTP/2 header block of over {MAX_BLOCK} bytes")]
    BlockTooLarge,
    #[error("an HTTP/2 frame inside a header block (stream {0})")]
    Interleaved(u32),
    #[error("a CONTINUATION frame without a header block (stream {0})")]
    StrayContinuation(u32),
    #[error("a HEADERS frame whose padding or priority runs past its end")]
    BadHeadersFrame,
    #[error("an undecodable HTTP/2 header block: {0}")]
    Hpack(String),
}

/// A header block being collected: HEADERS, then CONTINUATION frames up
/// to END_HEADERS.
struct Block {
    stream: u32,
    end_stream: bool,
    fragment: BytesMut,
}

/// The client-to-server half of an HTTP/2 connection, rewritten: feed it
/// what the client sent, take what the server should read.
pub struct Rewriter {
    /// Preface bytes still to pass.
    preface: usize,
    /// Bytes of the current frame still to pass unchanged.
    passing: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    /// What the server is to read.
    out: BytesMut,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            preface: PREFACE,
            passing: 0,
            block: None,
            decoder: decoder(),
            out: BytesMut::new(),
        }
    }
}

/// The client's encoder starts at, and may not grow past, the table size
/// the server advertised: h2's is the default.
fn decoder() -> loona_hpack::Decoder<'static> {
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(TABLE_SIZE);
    decoder.set_max_table_size(TABLE_SIZE);
    decoder
}

impl Rewriter {
    /// Takes as much of `input` as forms whole pieces; what is left waits
    /// for more. An error ends the connection (h2 would end it too).
    pub fn feed(&mut self, input: &mut BytesMut) -> Result<(), AuthorityError> {
        loop {
            let through = if self.preface > 0 {
                &mut self.preface
            } else {
                &mut self.passing
            };
            if *through > 0 {
                let n = (*through).min(input.len());
                if n == 0 {
                    return Ok(());
                }
                *through -= n;
                self.out.extend_from_slice(&input.split_to(n));
                continue;
            }
            if input.len() < FRAME_HEADER {
                return Ok(());
            }
            let len =
                usize::from(input[0]) << 16 | usize::from(input[1]) << 8 | usize::from(input[2]);
            let kind = input[3];
            let flags = input[4];
            let stream = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
            if kind != HEADERS && kind != CONTINUATION {
                if self.block.is_some() {
                    return Err(AuthorityError::Interleaved(stream));
                }
                self.out.extend_from_slice(&input.split_to(FRAME_HEADER));
                self.passing = len;
                continue;
            }
            if len > MAX_BLOCK {
                return Err(AuthorityError::BlockTooLarge);
            }
            if input.len() < FRAME_HEADER + len {
                return Ok(());
            }
            let mut payload = input.split_to(FRAME_HEADER + len);
            payload.advance(FRAME_HEADER);
            self.header_frame(kind, flags, stream, payload)?;
        }
    }

    /// What the server is to read, taken.
    pub fn take(&mut self, max: usize) -> BytesMut {
        self.out.split_to(max.min(self.out.len()))
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    fn header_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        mut payload: BytesMut,
    ) -> Result<(), AuthorityError> {
        if kind == HEADERS {
            if self.block.is_some() {
                return Err(AuthorityError::Interleaved(stream));
            }
            let pad = if flags & PADDED != 0 {
                let pad = usize::from(*payload.first().ok_or(AuthorityError::BadHeadersFrame)?);
                payload.advance(1);
                pad
            } else {
                0
            };
            if flags & PRIORITY != 0 {
                // Priorities are advisory and h2 ignores them.
                if payload.len() < 5 {
                    return Err(AuthorityError::BadHeadersFrame);
                }
                payload.advance(5);
            }
            if pad > payload.len() {
                return Err(AuthorityError::BadHeadersFrame);
            }
            payload.truncate(payload.len() - pad);
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                fragment: payload,
            });
        } else {
            match &mut self.block {
                Some(block) if block.stream == stream => {
                    if block.fragment.len() + payload.len() > MAX_BLOCK {
                        return Err(AuthorityError::BlockTooLarge);
                    }
                    block.fragment.unsplit(payload);
                }
                _ => return Err(AuthorityError::StrayContinuation(stream)),
            }
        }
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.rewrite(block)?;
            }
        }
        Ok(())
    }

    /// Decodes a whole header block and writes it again, as HEADERS (and
    /// CONTINUATION) frames of plain literals.
    fn rewrite(&mut self, block: Block) -> Result<(), AuthorityError> {
        let mut encoded = BytesMut::with_capacity(block.fragment.len() + STAND_IN.len());
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                let value = if &*name == b":authority" && !valid_authority(&value) {
                    STAND_IN
                } else {
                    &value
                };
                literal(&name, value, &mut encoded);
            })
            .map_err(|e| AuthorityError::Hpack(e.to_string()))?;
        let mut chunks = encoded.chunks(MAX_FRAME).peekable();
        let mut kind = HEADERS;
        // An empty block is still one HEADERS frame.
        let first: &[u8] = &[];
        let mut chunk = chunks.next().unwrap_or(first);
        loop {
            let last = chunks.peek().is_none();
            let mut flags = if last { END_HEADERS } else { 0 };
            if kind == HEADERS && block.end_stream {
                flags |= END_STREAM;
            }
            self.frame(kind, flags, block.stream, chunk);
            match chunks.next() {
                Some(next) => {
                    chunk = next;
                    kind = CONTINUATION;
                }
                None => return Ok(()),
            }
        }
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        self.out.put_slice(&len.to_be_bytes()[1..]);
        self.out.put_u8(kind);
        self.out.put_u8(flags);
        self.out.put_u32(stream);
        self.out.put_slice(payload);
    }
}

/// Whether h2 takes `value` as an authority.
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// A literal header field without indexing, with a literal name (RFC 7541
/// 6.2.2), neither string Huffman-coded.
fn literal(name: &[u8], value: &[u8], dst: &mut BytesMut) {
    dst.put_u8(0);
    for s in [name, value] {
        integer(s.len(), 7, dst);
        dst.put_slice(s);
    }
}

/// An HPACK integer with an `bits`-bit prefix (RFC 7541 5.1), the prefix's
/// other bits zero.
fn integer(mut n: usize, bits: u32, dst: &mut BytesMut) {
    let max = (1usize << bits) - 1;
    if n < max {
        dst.put_u8(n as u8);
        return;
    }
    dst.put_u8(max as u8);
    n -= max;
    while n >= 128 {
        dst.put_u8((n % 128) as u8 | 0x80);
        n /= 128;
    }
    dst.put_u8(n as u8);
}

/// A connection whose client half is read through a [`Rewriter`].
pub struct Tolerant<S> {
    inner: S,
    rewriter: Rewriter,
    input: BytesMut,
    eof: bool,
}

impl<S> Tolerant<S> {
    pub fn new(inner: S) -> Self {
        Tolerant {
            inner,
            rewriter: Rewriter::default(),
            input: BytesMut::new(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tolerant<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.rewriter.has_output() {
                buf.put_slice(&this.rewriter.take(buf.remaining()));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => {
                    this.input.extend_from_slice(read.filled());
                    if let Err(e) = this.rewriter.feed(&mut this.input) {
                        tracing::debug!("closing a kubelet plugin connection: {e}");
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            e,
                        )));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tolerant<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Tolerant<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE_BYTES: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const PATH: &[u8] = b"/var/lib/kubelet/plugins_registry/surveyor.dev-reg.sock";
    const PERCENT: &[u8] = b"%2Fvar%2Flib%2Fkubelet%2Fplugins_registry%2Fsurveyor.dev-reg.sock";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    fn request(encoder: &mut loona_hpack::Encoder<'_>, authority: Option<&[u8]>) -> Vec<u8> {
        let mut headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/pluginregistration.Registration/GetInfo"),
        ];
        headers.extend(authority.map(|a| (&b":authority"[..], a)));
        headers.push((b"content-type", b"application/grpc"));
        headers.push((b"te", b"trailers"));
        // In no static table: indexed the first time, referred to after.
        headers.push((b"grpc-accept-encoding", b"identity"));
        encoder.encode(headers)
    }

    /// Everything the rewriter gives for `input`, fed in pieces of `step`.
    fn run(input: &[u8], step: usize) -> Result<Vec<u8>, AuthorityError> {
        let mut r = Rewriter::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            r.feed(&mut buf)?;
            out.extend_from_slice(&r.take(usize::MAX));
        }
        Ok(out)
    }

    /// The frames after the preface: (kind, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE_BYTES));
        bytes = &bytes[PREFACE..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    fn decoded(block: &[u8]) -> Vec<(String, String)> {
        loona_hpack::Decoder::new()
            .decode(block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    fn authority_of(block: &[u8]) -> Option<String> {
        decoded(block)
            .into_iter()
            .find(|(n, _)| n == ":authority")
            .map(|(_, v)| v)
    }

    #[test]
    fn a_path_authority_becomes_localhost_and_the_rest_passes_unchanged() {
        let mut encoder = loona_hpack::Encoder::new();
        let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let headers = frame(
            HEADERS,
            END_HEADERS,
            1,
            &request(&mut encoder, Some(PERCENT)),
        );
        let data = frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]);
        // The second call on the connection refers to the first's table.
        let again = frame(
            HEADERS,
            END_HEADERS,
            3,
            &request(&mut encoder, Some(PERCENT)),
        );
        let input = [PREFACE_BYTES, &settings, &headers, &data, &again].concat();
        for step in [1, 7, input.len()] {
            let out = frames(&run(&input, step).unwrap());
            assert_eq!(out.len(), 4, "step {step}");
            assert_eq!(out[0], (0x4, 0, 0, settings[9..].to_vec()));
            assert_eq!((out[1].0, out[1].1, out[1].2), (HEADERS, END_HEADERS, 1));
            let headers = decoded(&out[1].3);
            assert_eq!(headers[0], (":method".into(), "POST".into()));
            assert_eq!(authority_of(&out[1].3).as_deref(), Some("localhost"));
            assert_eq!(headers.len(), 7);
            assert_eq!(out[2], (0x0, END_STREAM, 1, vec![0; 5]));
            assert_eq!(authority_of(&out[3].3).as_deref(), Some("localhost"));
            assert_eq!(decoded(&out[3].3), headers);
        }
    }

    #[test]
    fn valid_or_missing_authorities_are_kept_as_they_are() {
        for (authority, expected) in [
            (Some(&b"localhost"[..]), Some("localhost")),
            (Some(b"[::]:50051"), Some("[::]:50051")),
            (Some(PATH), Some("localhost")),
            (Some(b""), Some("localhost")),
            (None, None),
        ] {
            let block = request(&mut loona_hpack::Encoder::new(), authority);
            let input = [PREFACE_BYTES, &frame(HEADERS, END_HEADERS, 1, &block)].concat();
            let out = frames(&run(&input, 3).unwrap());
            assert_eq!(authority_of(&out[0].3).as_deref(), expected);
        }
    }

    #[test]
    fn padding_priority_and_continuations_are_folded_into_one_block() {
        let block = request(&mut loona_hpack::Encoder::new(), Some(PATH));
        let (a, b) = block.split_at(10);
        let mut first = vec![3u8]; // pad length
        first.extend([0x80, 0, 0, 0, 16]); // priority: exclusive, weight
        first.extend(a);
        first.extend([0; 3]);
        let input = [
            PREFACE_BYTES,
            &frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &first),
            &frame(CONTINUATION, END_HEADERS, 5, b),
        ]
        .concat();
        let out = frames(&run(&input, 5).unwrap());
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].0, out[0].1, out[0].2),
            (HEADERS, END_HEADERS | END_STREAM, 5)
        );
        assert_eq!(authority_of(&out[0].3).as_deref(), Some("localhost"));
    }

    #[test]
    fn a_large_block_is_written_as_headers_and_continuations() {
        let big = vec![b'x'; 20_000];
        let block = loona_hpack::Encoder::new()
            .encode([(&b":authority"[..], PATH), (&b"x-big"[..], &big[..])]);
        let mut input = PREFACE_BYTES.to_vec();
        for (n, chunk) in block.chunks(MAX_FRAME).enumerate() {
            let (kind, last) = (
                if n == 0 { HEADERS } else { CONTINUATION },
                (n + 1) * MAX_FRAME >= block.len(),
            );
            input.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, chunk));
        }
        let out = frames(&run(&input, 4096).unwrap());
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].0, out[0].1, out[0].3.len()),
            (HEADERS, 0, MAX_FRAME)
        );
        assert_eq!((out[1].0, out[1].1), (CONTINUATION, END_HEADERS));
        let whole = [out[0].3.clone(), out[1].3.clone()].concat();
        assert_eq!(decoded(&whole)[1].1.len(), 20_000);
    }

    #[test]
    fn malformed_connections_are_refused() {
        let block = request(&mut loona_hpack::Encoder::new(), Some(PATH));
        let cases: Vec<(Vec<u8>, AuthorityError)> = vec![
            (
                frame(CONTINUATION, END_HEADERS, 1, &block),
                AuthorityError::StrayContinuation(1),
            ),
            (
                [frame(HEADERS, 0, 1, &block), frame(0x0, 0, 1, b"x")].concat(),
                AuthorityError::Interleaved(1),
            ),
            (
                [
                    frame(HEADERS, 0, 1, &block),
                    frame(CONTINUATION, END_HEADERS, 3, b""),
                ]
                .concat(),
                AuthorityError::StrayContinuation(3),
            ),
            (
                frame(HEADERS, PADDED | END_HEADERS, 1, &[200, 1, 2]),
                AuthorityError::BadHeadersFrame,
            ),
            (
                frame(HEADERS, PRIORITY | END_HEADERS, 1, &[1, 2]),
                AuthorityError::BadHeadersFrame,
            ),
            (
                frame(HEADERS, PADDED, 1, &[]),
                AuthorityError::BadHeadersFrame,
            ),
            (
                frame(HEADERS, END_HEADERS, 1, &vec![0; MAX_BLOCK + 1]),
                AuthorityError::BlockTooLarge,
            ),
        ];
        for (bytes, expected) in cases {
            let input = [PREFACE_BYTES, &bytes].concat();
            assert_eq!(run(&input, input.len()), Err(expected));
        }
        // An index past every table.
        let input = [
            PREFACE_BYTES,
            &frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f]),
        ]
        .concat();
        assert!(matches!(run(&input, 64), Err(AuthorityError::Hpack(_))));
    }

    /// Whatever arrives, the rewriter answers without panicking.
    #[test]
    fn random_input_never_panics() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let block = request(&mut loona_hpack::Encoder::new(), Some(PATH));
        for _ in 0..5000 {
            let mut input = PREFACE_BYTES.to_vec();
            for _ in 0..(next() % 4) {
                let kind = [HEADERS, CONTINUATION, 0x0, 0x4][(next() % 4) as usize];
                let mut payload = block.clone();
                for _ in 0..(next() % 6) {
                    let at = (next() as usize) % payload.len();
                    payload[at] = next() as u8;
                }
                payload.truncate((next() as usize) % (payload.len() + 1));
                input.extend(frame(kind, next() as u8, (next() % 4) as u32, &payload));
            }
            let _ = run(&input, 1 + (next() as usize) % 16);
        }
    }
}
