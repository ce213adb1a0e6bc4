//! Rendezvous (highest-random-weight) placement: a key's owners are the R members
//! with the highest hash of (member, key). Adding or removing a member moves only
//! the keys it wins or held — about 1/N of them — and every node computes the same
//! owners from the same member list, with no ring to agree on.

/// Stable 64-bit hash of bytes (FNV-1a then a finalizer): the same on every node and
/// every build, unlike the std hasher, because nodes must agree on owners.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The murmur3 64-bit finalizer: spreads every input bit over the output.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The weight of a member for a key, from their precomputed hashes.
pub fn weight(member_hash: u64, key_hash: u64) -> u64 {
    mix(member_hash ^ key_hash.rotate_left(17))
}

/// Indexes of the `r` members with the highest weight for `key_hash`, best first.
/// `member_hashes[i]` is `stable_hash` of member i's id.
pub fn owners(member_hashes: &[u64], key_hash: u64, r: usize) -> Vec<usize> {
    let r = r.min(member_hashes.len());
    let mut best: Vec<(u64, usize)> = Vec::with_capacity(r + 1);
    for (i, &m) in member_hashes.iter().enumerate() {
        let w = weight(m, key_hash);
        if best.len() < r || w > best[best.len() - 1].0 {
            let at = best.partition_point(|&(bw, _)| bw > w);
            best.insert(at, (w, i));
            best.truncate(r);
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// A cluster member as placement sees it: a stable id (the pod name) and where its
/// gRPC API listens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    pub id: String,
    /// host:port
    pub address: String,
}

/// A set of members with their hashes precomputed; every node and smart client that
/// holds the same members computes the same owners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    members: Vec<Member>,
    hashes: Vec<u64>,
    epoch: u64,
}

impl View {
    /// Members are sorted and deduplicated by id (the first address of an id wins).
    pub fn new(mut members: Vec<Member>) -> Self {
        members.sort();
        members.dedup_by(|a, b| a.id == b.id);
        let hashes = members
            .iter()
            .map(|m| stable_hash(m.id.as_bytes()))
            .collect();
        let fingerprint: Vec<u8> = members
            .iter()
            .flat_map(|m| [m.id.as_bytes(), b"=", m.address.as_bytes(), b","].concat())
            .collect();
        Self {
            members,
            hashes,
            epoch: stable_hash(&fingerprint),
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// A fingerprint of the member set: equal on every node that sees the same members,
    /// different whenever a member or its address changes.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    /// The key's owners, primary first.
    pub fn owners(&self, key: &[u8], replication: usize) -> Vec<&Member> {
        self.owners_by_hash(stable_hash(key), replication)
    }

    /// As [`View::owners`], for a key hashed once with [`stable_hash`].
    pub fn owners_by_hash(&self, key_hash: u64, replication: usize) -> Vec<&Member> {
        owners(&self.hashes, key_hash, replication)
            .into_iter()
            .map(|i| &self.members[i])
            .collect()
    }

    /// The same view less one member (a node that drains leaves its own view first).
    pub fn without(&self, id: &str) -> View {
        View::new(
            self.members
                .iter()
                .filter(|m| m.id != id)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| stable_hash(format!("kcache-{i}").as_bytes()))
            .collect()
    }

    fn keys(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|i| stable_hash(format!("key:{i}").as_bytes()))
    }

    #[test]
    fn owners_are_distinct_ordered_and_capped_at_the_member_count() {
        let m = members(5);
        let o = owners(&m, 42, 3);
        assert_eq!(o.len(), 3);
        assert!(o[0] != o[1] && o[1] != o[2] && o[0] != o[2]);
        assert!(weight(m[o[0]], 42) > weight(m[o[1]], 42));
        assert_eq!(owners(&m, 42, 9).len(), 5);
        assert_eq!(owners(&m, 42, 1)[0], o[0]);
    }

    #[test]
    fn the_stable_hash_does_not_change_between_builds() {
        // Nodes of different versions must agree on owners during a rolling update.
        assert_eq!(stable_hash(b"kcache"), 0x806e_1efd_0f94_9cbc);
    }

    #[test]
    fn keys_spread_evenly_over_3_to_64_members() {
        for n in [3, 4, 5, 8, 13, 16, 32, 64] {
            let m = members(n);
            let total = 400_000u64;
            let mut counts = vec![0u64; n];
            for k in keys(total) {
                counts[owners(&m, k, 1)[0]] += 1;
            }
            let mean = total as f64 / n as f64;
            let max = *counts.iter().max().unwrap() as f64;
            assert!(
                max / mean <= 1.10,
                "{n} members: max/mean {:.3}",
                max / mean
            );
        }
    }

    #[test]
    fn adding_a_member_moves_about_one_in_n_plus_one_keys() {
        for n in [3, 4, 5, 8, 16, 32, 63] {
            let (before, after) = (members(n), members(n + 1));
            let total = 200_000u64;
            let moved = keys(total)
                .filter(|&k| owners(&before, k, 1)[0] != owners(&after, k, 1)[0])
                .count() as f64;
            let bound = 1.1 / (n + 1) as f64;
            assert!(
                moved / total as f64 <= bound,
                "{n}->{}: {:.4} > {bound:.4}",
                n + 1,
                moved / total as f64
            );
        }
    }

    #[test]
    fn with_replicas_a_new_member_only_takes_places_it_wins() {
        let (before, after) = (members(5), members(6));
        for k in keys(10_000) {
            let old = owners(&before, k, 2);
            let new = owners(&after, k, 2);
            // Every new owner is either an old owner or the new member (index 5).
            assert!(new.iter().all(|o| old.contains(o) || *o == 5));
        }
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            address: format!("{id}:7000"),
        }
    }

    #[test]
    fn views_of_the_same_members_agree_whatever_the_order() {
        let a = View::new(vec![member("b"), member("a"), member("c")]);
        let b = View::new(vec![member("c"), member("b"), member("a"), member("a")]);
        assert_eq!(a, b);
        assert_eq!(a.epoch(), b.epoch());
        assert_eq!(a.owners(b"k", 2), b.owners(b"k", 2));
        assert_ne!(a.epoch(), a.without("c").epoch());
        assert!(!a.without("c").contains("c"));
    }
}
