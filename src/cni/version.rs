//! CNI spec versions: which this plugin speaks, and how to talk to a
//! delegate that speaks fewer.

use std::cmp::Ordering;

/// Every version this plugin accepts, oldest first.
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const LATEST: &str = "1.1.0";

pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

pub fn compare(a: &str, b: &str) -> Ordering {
    parse(a).cmp(&parse(b))
}

/// The version to speak to a delegate supporting `theirs` when the
/// network config says `ours`: `ours` when they know it; else, for 1.1.0,
/// 1.0.0 (the 1.1.0 result and config formats are the 1.0.0 ones plus new
/// verbs, which Surveyor answers itself). `None` when they cannot talk.
pub fn for_delegate(ours: &str, theirs: &[String]) -> Option<String> {
    if theirs.iter().any(|t| t == ours) {
        return Some(ours.to_string());
    }
    if compare(ours, "1.0.0") == Ordering::Greater && theirs.iter().any(|t| t == "1.0.0") {
        return Some("1.0.0".to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let old: Vec<String> = ["0.3.1", "0.4.0", "1.0.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(for_delegate("1.0.0", &old).as_deref(), Some("1.0.0"));
        assert_eq!(for_delegate("1.1.0", &old).as_deref(), Some("1.0.0"));
        assert_eq!(for_delegate("0.3.0", &old), None);
        assert!(is_supported("0.4.0") && !is_supported("0.2.0") && !is_supported("2.0.0"));
        assert_eq!(compare("1.1.0", "1.0.0"), Ordering::Greater);
        assert_eq!(compare("0.4.0", "0.10.0"), Ordering::Less);
    }
}
