//! Clustering: who the members are, which of them own a key, and the node-to-node
//! traffic that keeps owners' copies in step (forwarding, replication, handoff).

pub mod antientropy;
pub mod kubernetes;
pub mod membership;
pub mod peers;
pub mod rebalance;
pub mod replicate;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kcache_client::placement::{Member, View};
use parking_lot::Mutex;
use tokio::sync::watch;

pub use peers::{PeerPool, PeerService};

/// How long after the membership last moved (a change seen, this node's handoff pass
/// for it ended, or handed-off entries arrived) a key this node owns but lacks is
/// looked for at its other and previous owners before it counts as a miss. Other
/// nodes start their handoff passes `SETTLE` (250 ms) after they see a change and
/// retry a failed one (after 200, 400, 800 ms, ... up to 5 s apart) until it
/// completes; each delivery re-opens the window, and 10 s covers a first pass with
/// room while confining the extra round trip a miss costs to moments of change.
pub const READ_THROUGH: Duration = Duration::from_secs(10);

/// How long membership must have been still (no change seen, no handoff pass ending)
/// before the Redis port's `cluster` mode answers MOVED; until then every node serves
/// every key by forwarding it. Members see an EndpointSlice change within well under a
/// second of each other; a node that redirected by its new view to one still on the
/// old view could be sent straight back, and a client gives up after a few bounces.
pub const REDIRECT_SETTLE: Duration = Duration::from_secs(2);

/// When a coordinated write answers its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteAck {
    /// After the coordinating owner stored it; replicas are updated in the background.
    One,
    /// After every reachable owner stored it.
    All,
}

/// A node's place in its cluster. Cheap to share: the view is behind a watch channel.
#[derive(Debug)]
pub struct Cluster {
    pub me: Member,
    pub replication: usize,
    pub write_ack: WriteAck,
    /// Members as the membership source reports them (this node included).
    views: watch::Receiver<Arc<View>>,
    /// Set when the node drains: it then places keys as if it were gone.
    draining: AtomicBool,
    /// The last view built from a reported one (this node added, or removed while
    /// draining), keyed by the reported epoch and the drain flag, so the request path
    /// does not rebuild it for every key.
    adjusted: Mutex<Option<(u64, bool, Arc<View>)>>,
    /// Bumped when `draining` flips, so the rebalancer wakes up.
    drain_signal: watch::Sender<bool>,
    /// The placement before the latest change and when membership last moved: entries
    /// may still be on their previous owners, on their way here.
    transition: Mutex<Transition>,
    pub peers: PeerPool,
    /// Copies of writes to the keys' other owners, in order, per peer.
    pub replicas: replicate::Replicator,
}

#[derive(Debug)]
struct Transition {
    previous: Arc<View>,
    moved: Instant,
}

/// Where a key lives, from this node's point of view.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The owners, primary first (this node may be among them).
    pub owners: Vec<Member>,
    /// Whether this node is one of them.
    pub local: bool,
    /// Whether this node is the primary (coordinates writes).
    pub primary: bool,
}

impl Placement {
    /// The owners other than this node, in order.
    pub fn others<'a>(&'a self, me: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
        self.owners.iter().filter(move |m| m.id != me)
    }
}

impl Cluster {
    pub fn new(
        me: Member,
        replication: usize,
        write_ack: WriteAck,
        views: watch::Receiver<Arc<View>>,
    ) -> Self {
        Self {
            me,
            replication: replication.max(1),
            write_ack,
            views,
            draining: AtomicBool::new(false),
            adjusted: Mutex::new(None),
            drain_signal: watch::Sender::new(false),
            transition: Mutex::new(Transition {
                previous: Arc::new(View::default()),
                moved: Instant::now(),
            }),
            peers: PeerPool::default(),
            replicas: replicate::Replicator::default(),
        }
    }

    /// A cluster of one (`--discovery none`).
    pub fn single(me: Member) -> Self {
        let view = Arc::new(View::new(vec![me.clone()]));
        let (_tx, rx) = watch::channel(view);
        Self::new(me, 1, WriteAck::One, rx)
    }

    /// The members keys are placed on now: the reported members plus this node, or
    /// minus it while it drains.
    pub fn view(&self) -> Arc<View> {
        let reported = self.views.borrow().clone();
        let draining = self.draining.load(Ordering::Acquire);
        let present = reported.contains(&self.me.id);
        if present != draining {
            return reported;
        }
        let mut adjusted = self.adjusted.lock();
        if let Some((epoch, was_draining, view)) = adjusted.as_ref()
            && *epoch == reported.epoch()
            && *was_draining == draining
        {
            return view.clone();
        }
        let view = Arc::new(if draining {
            reported.without(&self.me.id)
        } else {
            let mut members = reported.members().to_vec();
            members.push(self.me.clone());
            View::new(members)
        });
        *adjusted = Some((reported.epoch(), draining, view.clone()));
        view
    }

    /// A receiver that changes whenever the reported members change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.views.clone()
    }

    /// A receiver that changes when the node starts draining.
    pub fn drain_events(&self) -> watch::Receiver<bool> {
        self.drain_signal.subscribe()
    }

    pub fn is_single(&self) -> bool {
        let view = self.views.borrow();
        view.is_empty() || (view.len() == 1 && view.contains(&self.me.id))
    }

    pub fn placement(&self, key: &[u8]) -> Placement {
        let view = self.view();
        let owners: Vec<Member> = view
            .owners(key, self.replication)
            .into_iter()
            .cloned()
            .collect();
        let local = owners.iter().any(|m| m.id == self.me.id);
        let primary = owners.first().is_some_and(|m| m.id == self.me.id);
        Placement {
            owners,
            local,
            primary,
        }
    }

    /// Starts draining: from now on keys are placed without this node.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.drain_signal.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The members as reported, without this node: where keys were placed before it
    /// joined.
    pub fn others(&self) -> View {
        self.views.borrow().without(&self.me.id)
    }

    /// Notes that membership moved now; `previous`, when given, is the placement keys
    /// were on before.
    pub fn moved(&self, previous: Option<Arc<View>>) {
        let mut transition = self.transition.lock();
        transition.moved = Instant::now();
        if let Some(previous) = previous {
            transition.previous = previous;
        }
    }

    /// Whether membership has been still for [`READ_THROUGH`]: no handoff is on its
    /// way, so owners' copies differ only by writes they missed.
    pub fn settled(&self) -> bool {
        self.transition.lock().moved.elapsed() > READ_THROUGH
    }

    /// Whether the Redis port may answer MOVED: not while this node drains (the others
    /// still send its keys to it) nor within [`REDIRECT_SETTLE`] of a change.
    pub fn redirects(&self) -> bool {
        !self.is_draining() && self.transition.lock().moved.elapsed() > REDIRECT_SETTLE
    }

    /// Where else a key this node owns but lacks may be while a handoff can still be
    /// on its way ([`READ_THROUGH`]): its owners before the change and its other owners
    /// now, at their current addresses. Empty outside that window.
    pub fn read_through(&self, key: &[u8]) -> Vec<Member> {
        self.elsewhere(key, false)
    }

    /// Where a newer copy of a key may be, for a write that reads the key's state (an
    /// increment, a condition) while a handoff can still be on its way: as
    /// [`Cluster::read_through`], but empty when this node already was the key's
    /// primary before the change, whose copy every write went through. A member that
    /// synced the key before it joined may hold an old copy that the handoff will
    /// not replace (the write here would be newer), so a present key is no proof.
    pub fn write_through(&self, key: &[u8]) -> Vec<Member> {
        self.elsewhere(key, true)
    }

    fn elsewhere(&self, key: &[u8], unless_was_primary: bool) -> Vec<Member> {
        let previous = {
            let transition = self.transition.lock();
            if transition.moved.elapsed() > READ_THROUGH {
                return Vec::new();
            }
            transition.previous.clone()
        };
        let view = self.view();
        let mut found: Vec<Member> = Vec::new();
        let earlier = previous.owners(key, self.replication);
        if unless_was_primary && earlier.first().is_some_and(|m| m.id == self.me.id) {
            return Vec::new();
        }
        for member in earlier
            .into_iter()
            .chain(view.owners(key, self.replication))
        {
            if member.id == self.me.id || found.iter().any(|m| m.id == member.id) {
                continue;
            }
            let current = view.members().iter().find(|m| m.id == member.id);
            found.push(current.unwrap_or(member).clone());
        }
        found
    }
}
