//! Keeping the agent's heap small: it runs on every node for months, so
//! what it holds is what the DaemonSet costs.
//!
//! glibc's mmap threshold rises to the largest block freed (up to
//! 32 MiB), so once a large NodeSurvey has been encoded or parsed, blocks
//! of that size come from the heap and their pages stay resident after
//! they are freed. A fixed threshold maps such blocks on their own and
//! gives them back when freed: 1.9 MiB less at 1000 links
//! (`benches/dra.rs`). musl's allocator, in the shipped static binary,
//! returns large blocks already.

/// The size over which glibc maps a block on its own (its default,
/// made fixed).
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: nix::libc::c_int = 128 * 1024;

/// Sets the allocator up for a long-running process; call once, early.
pub fn keep_small() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before the agent's threads start.
        let ok = unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if ok != 1 {
            tracing::debug!("glibc refused mallopt(M_MMAP_THRESHOLD)");
        }
    }
}
