//! Kubernetes conditions whose `lastTransitionTime` moves only when their
//! status or reason does, so an object whose facts did not change keeps an
//! unchanged status (and is not written again). Times are to the second:
//! what the API keeps, so what is compared is what is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Now, to the second.
pub fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// A condition of `kind`, keeping the transition time of the same status
/// and reason in `previous`.
pub fn condition(
    previous: &[Condition],
    kind: &str,
    (status, reason, message): (&str, &str, String),
    now: &Time,
) -> Condition {
    let since = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status && c.reason == reason)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: since,
        observed_generation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_whole_seconds_and_kept_across_the_same_state() {
        assert_eq!(now().0.subsec_nanosecond(), 0);
        let t1 = Time(Timestamp::from_second(100).unwrap());
        let t2 = Time(Timestamp::from_second(200).unwrap());
        let first = condition(&[], "Ready", ("True", "Ok", "a".into()), &t1);
        let same = condition(
            std::slice::from_ref(&first),
            "Ready",
            ("True", "Ok", "b".into()),
            &t2,
        );
        assert_eq!(
            same.last_transition_time, t1,
            "a new message keeps the time"
        );
        let moved = condition(&[first], "Ready", ("False", "Ok", "a".into()), &t2);
        assert_eq!(moved.last_transition_time, t2);
    }
}
