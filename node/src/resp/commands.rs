//! The Redis commands kcache answers, by name and arity, as `COMMAND` reports them.
//! Arity is Redis's convention: `n` exactly n arguments (the name included), `-n` at
//! least n. Key positions let Redis Cluster clients find a command's keys.

/// One command's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Lower case, as Redis names commands in replies and errors.
    pub name: &'static str,
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write", "denyoom"];
const WRITE_FAST: &[&str] = &["write", "fast"];
const CONN: &[&str] = &["fast", "loading", "stale", "no-auth"];
const ADMIN: &[&str] = &["loading", "stale"];
const NO_KEYS: (i32, i32, i32) = (0, 0, 0);
const ONE_KEY: (i32, i32, i32) = (1, 1, 1);
const ALL_KEYS: (i32, i32, i32) = (1, -1, 1);

/// Every command, the hottest first (lookups walk the list).
pub const COMMANDS: &[Spec] = &[
    spec("get", 2, READ, ONE_KEY),
    spec("set", -3, WRITE, ONE_KEY),
    spec("mget", -2, READ, ALL_KEYS),
    spec("mset", -3, WRITE, (1, -1, 2)),
    spec("del", -2, WRITE, ALL_KEYS),
    spec("unlink", -2, WRITE_FAST, ALL_KEYS),
    spec("exists", -2, READ, ALL_KEYS),
    spec("incr", 2, WRITE, ONE_KEY),
    spec("incrby", 3, WRITE, ONE_KEY),
    spec("decr", 2, WRITE, ONE_KEY),
    spec("decrby", 3, WRITE, ONE_KEY),
    spec("getex", -2, WRITE_FAST, ONE_KEY),
    spec("getdel", 2, WRITE_FAST, ONE_KEY),
    spec("expire", -3, WRITE_FAST, ONE_KEY),
    spec("pexpire", -3, WRITE_FAST, ONE_KEY),
    spec("expireat", -3, WRITE_FAST, ONE_KEY),
    spec("pexpireat", -3, WRITE_FAST, ONE_KEY),
    spec("ttl", 2, READ, ONE_KEY),
    spec("pttl", 2, READ, ONE_KEY),
    spec("persist", 2, WRITE_FAST, ONE_KEY),
    spec("ping", -1, &["fast", "stale"], NO_KEYS),
    spec("echo", 2, &["fast", "stale"], NO_KEYS),
    spec("hello", -1, CONN, NO_KEYS),
    spec("auth", -2, CONN, NO_KEYS),
    spec("select", 2, &["fast", "loading", "stale"], NO_KEYS),
    spec("quit", -1, CONN, NO_KEYS),
    spec("client", -2, ADMIN, NO_KEYS),
    spec("command", -1, ADMIN, NO_KEYS),
    spec("info", -1, ADMIN, NO_KEYS),
    spec("config", -2, ADMIN, NO_KEYS),
    spec("dbsize", 1, &["readonly", "fast"], NO_KEYS),
    spec("flushdb", -1, &["write"], NO_KEYS),
    spec("flushall", -1, &["write"], NO_KEYS),
    spec("cluster", -2, ADMIN, NO_KEYS),
    spec("readonly", 1, &["fast", "loading", "stale"], NO_KEYS),
    spec("readwrite", 1, &["fast", "loading", "stale"], NO_KEYS),
    spec("asking", 1, &["fast"], NO_KEYS),
];

/// The command called `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

impl Spec {
    /// Whether `args` (the name included) is a number of arguments it takes.
    pub fn arity_ok(&self, args: usize) -> bool {
        let arity = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 {
            args == arity
        } else {
            args >= arity
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lower_case_and_found_in_any_case() {
        for (i, c) in COMMANDS.iter().enumerate() {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(COMMANDS[..i].iter().all(|o| o.name != c.name), "{}", c.name);
        }
        assert_eq!(lookup(b"GeT").map(|c| c.name), Some("get"));
        assert_eq!(lookup(b"nope"), None);
    }

    #[test]
    fn arity_follows_redis_conventions() {
        let set = lookup(b"set").unwrap();
        assert!(!set.arity_ok(2) && set.arity_ok(3) && set.arity_ok(7));
        let get = lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(3));
    }
}
