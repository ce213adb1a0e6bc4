//! MultiGet and MultiSet: a batch split by owner, each part served where it lives.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt as _;
use kcache_client::placement::Member;
use kcache_client::proto::{
    GetRequest, GetResponse, MultiGetRequest, MultiSetRequest, SetRequest, SetResponse,
};
use tonic::Status;

use super::CacheService;

/// Items of one MultiSet written at once.
const BATCH_DEPTH: usize = 64;
/// Most value bytes one MultiGet reply may carry (one value larger than this still
/// goes alone): a batch of repeated large keys would otherwise build a reply of
/// gigabytes.
pub const MAX_REPLY_BYTES: usize = 64 << 20;
use super::convert::{check_batch, condition, get_response, prefixed, to_status, ttl};
use crate::cluster::Placement;
impl CacheService {
    pub(crate) async fn multi_get(
        &self,
        keys: Vec<Bytes>,
        forwarded: bool,
    ) -> Result<Vec<GetResponse>, Status> {
        check_batch(keys.len())?;
        for (i, key) in keys.iter().enumerate() {
            self.store
                .check_key(key)
                .map_err(|e| prefixed(&format!("keys[{i}]"), to_status(e)))?;
        }
        let mut replies = vec![GetResponse::default(); keys.len()];
        let mut remote: HashMap<String, (Member, Vec<usize>)> = HashMap::new();
        let mut misses = Vec::new();
        // The reply's size is checked as it grows, and a key named again shares the
        // first lookup's value (no copy), so no request makes the node build a reply
        // past the limit.
        let limit = MAX_REPLY_BYTES.max(self.store.limits().max_value_size);
        let mut local_bytes = 0usize;
        let mut first_of: HashMap<&Bytes, usize> = HashMap::new();
        let suspects = self.cluster.peers.suspects();
        for (i, key) in keys.iter().enumerate() {
            match self.place(key, forwarded) {
                Some(p) if !p.local => {
                    // Any owner answers a read: the first one not suspect (as a single
                    // Get orders them), so a frozen owner does not hold up the batch.
                    let owner = p
                        .owners
                        .iter()
                        .min_by_key(|m| suspects.suspect(&m.address))
                        .cloned()
                        .ok_or_else(no_owner)?;
                    remote
                        .entry(owner.id.clone())
                        .or_insert((owner, vec![]))
                        .1
                        .push(i);
                }
                _ => {
                    replies[i] = match first_of.get(key) {
                        Some(&first) => replies[first].clone(),
                        None => get_response(self.store.get(key).map_err(to_status)?),
                    };
                    first_of.entry(key).or_insert(i);
                    local_bytes += replies[i].value.len();
                    if local_bytes > limit {
                        return Err(too_large(local_bytes, limit));
                    }
                    if !replies[i].found {
                        misses.push(i);
                    }
                }
            }
        }
        let keys = &keys;
        let lookups = misses.into_iter().map(|i| {
            let miss = replies[i].clone();
            async move { (i, self.read_through(&keys[i], miss).await) }
        });
        for (i, reply) in futures::future::join_all(lookups).await {
            replies[i] = reply;
        }
        let groups = remote.into_values().map(|(member, indexes)| {
            let subset = MultiGetRequest {
                keys: indexes.iter().map(|&i| keys[i].clone()).collect(),
            };
            async move {
                let result = self
                    .forward("multi_get", true, [&member], subset, |mut c, r| {
                        Box::pin(async move { c.multi_get(r).await })
                    })
                    .await;
                (indexes, result)
            }
        });
        for (indexes, result) in futures::future::join_all(groups).await {
            match result {
                Ok(reply) if reply.values.len() == indexes.len() => {
                    for (i, value) in indexes.into_iter().zip(reply.values) {
                        replies[i] = value;
                    }
                }
                // The owner is down or answered oddly: each key goes its own way,
                // which falls back to the next owner.
                _ => {
                    for i in indexes {
                        replies[i] = Box::pin(self.get(
                            GetRequest {
                                key: keys[i].clone(),
                            },
                            false,
                        ))
                        .await?;
                    }
                }
            }
        }
        let bytes: usize = replies.iter().map(|r| r.value.len()).sum();
        if bytes > limit {
            return Err(too_large(bytes, limit));
        }
        Ok(replies)
    }

    pub(crate) async fn multi_set(
        &self,
        items: Vec<SetRequest>,
        forwarded: bool,
    ) -> Result<Vec<SetResponse>, Status> {
        check_batch(items.len())?;
        // Refuse the whole batch before writing any of it.
        for (i, item) in items.iter().enumerate() {
            let label = format!("items[{i}]");
            condition(item).map_err(|s| prefixed(&label, s))?;
            self.store
                .check_set(&item.key, &item.value, ttl(item.ttl_ms))
                .map_err(|e| prefixed(&label, to_status(e)))?;
        }
        let mut replies = vec![SetResponse::default(); items.len()];
        let mut remote: HashMap<String, (Member, Vec<usize>)> = HashMap::new();
        let mut local = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.place(&item.key, forwarded) {
                Some(p) if !p.primary => {
                    let primary = first_owner(&p)?;
                    remote
                        .entry(primary.id.clone())
                        .or_insert((primary, vec![]))
                        .1
                        .push(i);
                }
                _ => local.push(i),
            }
        }
        // From here on the batch is being written: an item that fails says so in its
        // own result, and the call succeeds with the others' results, so a client
        // never takes a partly written batch for an unwritten one (and retries it).
        // Items on distinct keys are written concurrently, so a large batch is not a
        // chain of replication round trips (a forwarded part must answer within the
        // peer deadline); a batch naming a key twice is written in order.
        let distinct = {
            let mut seen = HashSet::with_capacity(local.len());
            local.iter().all(|&i| seen.insert(&items[i].key))
        };
        let depth = if distinct { BATCH_DEPTH } else { 1 };
        let items_ref = &items;
        let mut written = futures::stream::iter(local)
            .map(|i| async move {
                let result = self.set(items_ref[i].clone(), forwarded).await;
                (i, result.unwrap_or_else(failed))
            })
            .buffer_unordered(depth);
        while let Some((i, reply)) = written.next().await {
            replies[i] = reply;
        }
        drop(written);
        let groups = remote.into_values().map(|(member, indexes)| {
            let subset = MultiSetRequest {
                items: indexes.iter().map(|&i| items[i].clone()).collect(),
            };
            async move {
                let result = self
                    .forward("multi_set", false, [&member], subset, |mut c, r| {
                        Box::pin(async move { c.multi_set(r).await })
                    })
                    .await;
                (indexes, result)
            }
        });
        for (indexes, result) in futures::future::join_all(groups).await {
            match result {
                Ok(reply) if reply.results.len() == indexes.len() => {
                    for (i, value) in indexes.into_iter().zip(reply.results) {
                        replies[i] = value;
                    }
                }
                // The owner took the call and failed it (a deadline: its outcome is
                // unknown): each of its items says so.
                Err(status) if status.code() != tonic::Code::Unavailable => {
                    for i in indexes {
                        replies[i] = failed(status.clone());
                    }
                }
                _ => {
                    for i in indexes {
                        replies[i] = Box::pin(self.set(items[i].clone(), false))
                            .await
                            .unwrap_or_else(failed);
                    }
                }
            }
        }
        Ok(replies)
    }
}

fn too_large(bytes: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "the reply would carry at least {bytes} bytes of values; the limit is {limit}: ask \
         for fewer keys, and for each key once"
    ))
}

/// The result of a batch item that failed.
fn failed(status: Status) -> SetResponse {
    SetResponse {
        error: Some(kcache_client::proto::Error {
            code: status.code() as i32,
            message: status.message().to_owned(),
        }),
        ..SetResponse::default()
    }
}

/// The key's primary owner. A node that drains while every other member leaves (a
/// scale to zero) places keys on nobody.
fn first_owner(placement: &Placement) -> Result<Member, Status> {
    placement.owners.first().cloned().ok_or_else(no_owner)
}

fn no_owner() -> Status {
    Status::unavailable("this node is leaving and no member is left to own the key")
}
