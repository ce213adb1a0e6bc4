//! Publishing notices as Kubernetes events on the CacheCluster. Events are
//! best-effort: a failure to publish one is logged, never allowed to fail the
//! reconciliation it describes.

use kcache_crd::CacheCluster;
use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::status::notices::Notice;

/// The `reportingController` of every event; `kubectl describe` shows it as From.
pub const REPORTER: &str = "kcache-operator";
/// Events carry at most 1 kB of note.
const MAX_NOTE_BYTES: usize = 1000;

/// Publishes notices for one operator instance.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
    /// Shared by notices that recur on every reconciliation while their cause lasts
    /// (a failing API, a missing CRD): the recorder folds repeats of the same reason
    /// into one event whose count grows, instead of one event per attempt.
    recurring: Recorder,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// `instance` tells replicas of the operator apart (the pod name).
    pub fn new(client: Client, instance: &str) -> Self {
        let reporter = Reporter {
            controller: REPORTER.to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            recurring: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
        }
    }

    /// Publishes a notice about a change as an event of its own. Each is published
    /// once per change, so a new message is never folded into an older event with
    /// the same reason.
    pub async fn publish(&self, cluster: &CacheCluster, notice: &Notice) {
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        send(&recorder, cluster, notice).await;
    }

    /// Publishes a notice that repeats while its cause lasts.
    pub async fn publish_recurring(&self, cluster: &CacheCluster, notice: &Notice) {
        send(&self.recurring, cluster, notice).await;
    }
}

async fn send(recorder: &Recorder, cluster: &CacheCluster, notice: &Notice) {
    let event = Event {
        type_: if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: notice.reason.clone(),
        note: Some(truncate(&notice.note)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, reason = %notice.reason, "could not publish an event");
    }
}

fn truncate(note: &str) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note.to_owned();
    }
    let mut end = MAX_NOTE_BYTES - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_at_a_character_boundary_within_the_event_limit() {
        let note = "é".repeat(800);
        let cut = truncate(&note);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with("..."));
    }
}
