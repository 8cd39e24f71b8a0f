//! When each write may go, pure: a target (a map's status, a node's
//! labels) marked as needing a look waits a short settle time, so a burst
//! of NodeSurvey changes becomes one write; one target is written at most
//! once per interval; a failed write is retried with backoff; a target is
//! never written twice at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Pacer<T> {
    interval: Duration,
    settle: Duration,
    queue: BTreeSet<(Instant, T)>,
    due: HashMap<T, Instant>,
    last: HashMap<T, Instant>,
    failures: HashMap<T, u32>,
    busy: HashSet<T>,
    /// Marked while busy: looked at again once the write ends.
    again: HashSet<T>,
}

impl<T: Clone + Ord + Hash> Pacer<T> {
    pub fn new(interval: Duration, settle: Duration) -> Self {
        Pacer {
            interval,
            settle,
            queue: BTreeSet::new(),
            due: HashMap::new(),
            last: HashMap::new(),
            failures: HashMap::new(),
            busy: HashSet::new(),
            again: HashSet::new(),
        }
    }

    /// `target` needs a look: after the settle time, and not before its
    /// interval since its last write is over.
    pub fn mark(&mut self, target: &T, now: Instant) {
        if self.busy.contains(target) {
            self.again.insert(target.clone());
            return;
        }
        let mut at = now + self.settle;
        if let Some(last) = self.last.get(target) {
            at = at.max(*last + self.interval);
        }
        self.schedule(target, at);
    }

    fn schedule(&mut self, target: &T, at: Instant) {
        if let Some(old) = self.due.get(target) {
            if *old <= at {
                return; // already due sooner
            }
            self.queue.remove(&(*old, target.clone()));
        }
        self.due.insert(target.clone(), at);
        self.queue.insert((at, target.clone()));
    }

    /// When the next target is due.
    pub fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Targets due by `now`, at most `limit`; each is busy until
    /// [`Pacer::finish`]ed.
    pub fn take(&mut self, now: Instant, limit: usize) -> Vec<T> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((at, _)) = self.queue.first() else {
                break;
            };
            if *at > now {
                break;
            }
            let Some((_, target)) = self.queue.pop_first() else {
                break;
            };
            self.due.remove(&target);
            self.busy.insert(target.clone());
            out.push(target);
        }
        out
    }

    /// A taken target's write is over: `Some(true)` written, `Some(false)`
    /// failed (retried with backoff), `None` nothing needed writing.
    pub fn finish(&mut self, target: &T, written: Option<bool>, now: Instant) {
        self.busy.remove(target);
        match written {
            Some(true) => {
                self.last.insert(target.clone(), now);
                self.failures.remove(target);
            }
            Some(false) => {
                let failures = self.failures.entry(target.clone()).or_default();
                *failures += 1;
                let wait = backoff(*failures);
                self.again.remove(target);
                self.schedule(target, now + wait);
                return;
            }
            None => {}
        }
        if self.again.remove(target) {
            self.mark(target, now);
        }
    }

    /// Drops everything about `target` (its object is gone).
    pub fn forget(&mut self, target: &T) {
        if let Some(at) = self.due.remove(target) {
            self.queue.remove(&(at, target.clone()));
        }
        self.last.remove(target);
        self.failures.remove(target);
        self.again.remove(target);
    }

    /// Drops every mark and every write in flight (leadership lost; the
    /// writes are abandoned).
    pub fn reset(&mut self) {
        self.queue.clear();
        self.due.clear();
        self.again.clear();
        self.busy.clear();
    }

    pub fn pending(&self) -> usize {
        self.queue.len() + self.busy.len()
    }
}

/// 500 ms doubling to 30 s.
fn backoff(failures: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_settles_into_one_write_and_writes_are_a_second_apart() {
        let t0 = Instant::now();
        let mut p: Pacer<&str> = Pacer::new(1000 * MS, 100 * MS);
        for i in 0..40 {
            p.mark(&"green", t0 + i * MS);
        }
        assert_eq!(
            p.next(),
            Some(t0 + 100 * MS),
            "the first mark sets the time"
        );
        assert!(p.take(t0 + 99 * MS, 8).is_empty());
        assert_eq!(p.take(t0 + 100 * MS, 8), ["green"]);
        // Marked while being written: looked at again after, paced.
        p.mark(&"green", t0 + 150 * MS);
        assert_eq!(p.next(), None);
        p.finish(&"green", Some(true), t0 + 200 * MS);
        assert_eq!(
            p.next(),
            Some(t0 + 1200 * MS),
            "a second after the last write"
        );
        assert_eq!(p.take(t0 + 1200 * MS, 8), ["green"]);
        p.finish(&"green", None, t0 + 1201 * MS);
        assert_eq!(p.next(), None, "nothing needed writing: nothing more");
    }

    #[test]
    fn failures_back_off_and_limits_hold() {
        let t0 = Instant::now();
        let mut p: Pacer<u32> = Pacer::new(1000 * MS, Duration::ZERO);
        for n in 0..10 {
            p.mark(&n, t0);
        }
        assert_eq!(p.take(t0, 4), [0, 1, 2, 3]);
        assert_eq!(p.pending(), 10);
        p.finish(&0, Some(false), t0);
        p.finish(&1, None, t0);
        assert_eq!(p.take(t0 + 100 * MS, 100), [4, 5, 6, 7, 8, 9]);
        assert_eq!(p.take(t0 + 500 * MS, 100), [0], "retried after 500 ms");
        p.finish(&0, Some(false), t0 + 500 * MS);
        assert_eq!(p.next(), Some(t0 + 1500 * MS), "then after 1 s");
        assert_eq!(backoff(2), 1000 * MS);
        assert_eq!(backoff(40), BACKOFF_MAX);
        p.forget(&1);
        p.reset();
        assert_eq!(p.next(), None);
    }
}
