//! Building conditions so that `lastTransitionTime` means what Kubernetes says it
//! means: when the status last flipped, not when the operator last looked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as computed, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Computed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Computed {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }

    /// The API condition, keeping the previous transition time when the status
    /// (True/False) did not change.
    pub fn into_condition(
        self,
        previous: &[Condition],
        generation: Option<i64>,
        now: Timestamp,
    ) -> Condition {
        let status = if self.status { "True" } else { "False" };
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == self.type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: self.type_.to_owned(),
            status: status.to_owned(),
            reason: self.reason.to_owned(),
            message: self.message,
            observed_generation: generation,
            last_transition_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_time_even_when_the_message_changes() {
        let first =
            Computed::new("Available", true, "A", "1/3").into_condition(&[], Some(1), at(10));
        let again =
            Computed::new("Available", true, "A", "2/3").into_condition(&[first], Some(2), at(20));
        assert_eq!(again.last_transition_time, Time(at(10)));
        assert_eq!(again.message, "2/3");
        assert_eq!(again.observed_generation, Some(2));
    }

    #[test]
    fn a_flipped_status_gets_a_new_transition_time() {
        let first = Computed::new("Available", true, "A", "").into_condition(&[], None, at(10));
        let flipped =
            Computed::new("Available", false, "B", "").into_condition(&[first], None, at(20));
        assert_eq!(flipped.last_transition_time, Time(at(20)));
        assert_eq!(flipped.status, "False");
    }
}
