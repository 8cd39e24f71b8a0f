//! Which links a node surveys: physical ones by default, every one with
//! `--all`, those matching `--include` globs whatever their kind, minus
//! those matching `--exclude`.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::inventory::Interface;

#[derive(Debug, thiserror::Error)]
pub enum SurveyError {
    #[error("invalid glob {glob:?} in {flag}: {reason}")]
    BadGlob {
        flag: &'static str,
        glob: String,
        reason: String,
    },
}

/// The survey filter. Globs match an interface's name or any altName.
#[derive(Clone, Debug)]
pub struct SurveyFilter {
    all: bool,
    include: GlobSet,
    exclude: GlobSet,
}

impl Default for SurveyFilter {
    /// Physical links only.
    fn default() -> Self {
        SurveyFilter {
            all: false,
            include: GlobSet::empty(),
            exclude: GlobSet::empty(),
        }
    }
}

impl SurveyFilter {
    pub fn new(all: bool, include: &[String], exclude: &[String]) -> Result<Self, SurveyError> {
        Ok(SurveyFilter {
            all,
            include: glob_set("--include", include)?,
            exclude: glob_set("--exclude", exclude)?,
        })
    }

    /// Whether `iface` is surveyed.
    pub fn surveys(&self, iface: &Interface) -> bool {
        let hit = |set: &GlobSet| iface.names().any(|n| set.is_match(n));
        if hit(&self.exclude) {
            return false;
        }
        self.all || iface.kind.is_physical() || hit(&self.include)
    }

    /// True when only physical links are surveyed (no flag widened it).
    pub fn is_default(&self) -> bool {
        !self.all && self.include.is_empty()
    }
}

fn glob_set(flag: &'static str, globs: &[String]) -> Result<GlobSet, SurveyError> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        let parsed = Glob::new(glob).map_err(|e| SurveyError::BadGlob {
            flag,
            glob: glob.clone(),
            reason: e.kind().to_string(),
        })?;
        builder.add(parsed);
    }
    builder.build().map_err(|e| SurveyError::BadGlob {
        flag,
        glob: globs.join(","),
        reason: e.kind().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::LinkKind;

    fn iface(name: &str, kind: &str) -> Interface {
        Interface::new(name, 1, LinkKind::from(kind))
    }

    fn filter(all: bool, include: &[&str], exclude: &[&str]) -> SurveyFilter {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        SurveyFilter::new(all, &s(include), &s(exclude)).unwrap()
    }

    #[test]
    fn default_surveys_physical_only() {
        let f = SurveyFilter::default();
        assert!(f.surveys(&iface("ens4", "physical")));
        assert!(!f.surveys(&iface("veth1", "veth")));
        assert!(!f.surveys(&iface("lo", "loopback")));
        assert!(f.is_default());
    }

    #[test]
    fn include_takes_any_kind_and_exclude_wins() {
        let f = filter(false, &["sv-*"], &["sv-skip"]);
        assert!(f.surveys(&iface("sv-a", "veth")));
        assert!(!f.surveys(&iface("sv-skip", "veth")));
        assert!(!f.surveys(&iface("other", "veth")));
        assert!(f.surveys(&iface("ens4", "physical")));
        let f = filter(true, &[], &["ens*"]);
        assert!(f.surveys(&iface("veth9", "veth")));
        assert!(!f.surveys(&iface("ens4", "physical")));
    }

    #[test]
    fn globs_match_alt_names() {
        let mut i = iface("enp59s0f1", "veth");
        i.alt_names = vec!["green0".into()];
        assert!(filter(false, &["green*"], &[]).surveys(&i));
        assert!(!filter(true, &[], &["green*"]).surveys(&i));
    }

    #[test]
    fn bad_glob_names_flag_and_glob() {
        let err = SurveyFilter::new(false, &["sv-[".into()], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--include") && msg.contains("sv-["), "{msg}");
    }
}
