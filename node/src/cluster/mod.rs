//! Clustering: who the members are, which of them own a key, and the node-to-node
//! traffic that keeps owners' copies in step (forwarding, replication, handoff).

pub mod kubernetes;
pub mod membership;
pub mod peers;
pub mod rebalance;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kcache_client::placement::{Member, View};
use parking_lot::Mutex;
use tokio::sync::watch;

pub use peers::{PeerPool, PeerService};

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
    pub peers: PeerPool,
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
            peers: PeerPool::default(),
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
}
