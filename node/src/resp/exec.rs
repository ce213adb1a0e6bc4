//! Runs one command on the Cache service and writes its reply as Redis would: the same
//! replies, the same error texts for wrong arity, unknown commands and bad integers.
//! Errors of the service (`tonic::Status`) become Redis error codes in [`status_error`].

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kcache_client::proto::{
    DeleteRequest, GetRequest, GetResponse, IncrementRequest, SetCondition, SetRequest,
    TouchRequest,
};
use tonic::{Code, Status};

use super::commands::{self, COMMANDS, Spec};
use super::reply::{Out, Proto};
use super::{ClusterMode, Shared, cluster, info};
use crate::metrics::LocalRequests;
use crate::store::ScanCursor;

/// The protocol label of the port's metrics.
pub(super) const PROTOCOL: &str = "redis";
/// How often a read-modify-write (SET … GET, GETDEL, SET … KEEPTTL) retries when the
/// key changes between its read and its conditional write.
const CAS_ATTEMPTS: usize = 16;
/// Keys FLUSHDB reads from the store at a time.
const FLUSH_BATCH: usize = 1_000;
/// The Redis version kcache answers as: the command set and replies of Redis 7.2,
/// which clients check before they use HELLO or newer options.
pub(super) const REDIS_VERSION: &str = "7.2.0";

/// Whether the connection goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Close,
}

/// A connection's state between commands.
#[derive(Debug)]
pub(super) struct Session {
    pub id: u64,
    pub peer: SocketAddr,
    /// Where the client reached this node: what CLUSTER SLOTS tells it to use.
    pub local: SocketAddr,
    pub proto: Proto,
    pub name: Option<Bytes>,
    /// Whether the client may run commands: from the start on a node without
    /// tokens, after AUTH with one of them otherwise.
    pub authenticated: bool,
    /// READONLY: in the `cluster` mode, reads may go to any owner of a key, not only
    /// its primary (a Redis Cluster client's `read_from_replicas`).
    pub readonly: bool,
}

impl Session {
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr, authenticated: bool) -> Self {
        Self {
            id,
            peer,
            local,
            proto: Proto::Resp2,
            name: None,
            authenticated,
            readonly: false,
        }
    }

    /// Runs `args` (the command name first) and appends its reply to `buf`.
    pub async fn run(
        &mut self,
        shared: &Shared,
        requests: &LocalRequests<'_>,
        args: Vec<Bytes>,
        buf: &mut BytesMut,
    ) -> Flow {
        let Some(spec) = commands::lookup(&args[0]) else {
            let mut out = Out {
                buf,
                proto: self.proto,
            };
            out.error(&unknown_command(&args));
            return Flow::Continue;
        };
        let mut out = Out {
            buf,
            proto: self.proto,
        };
        if !self.authenticated && !matches!(spec.name, "auth" | "hello" | "quit") {
            out.error("NOAUTH Authentication required.");
            return Flow::Continue;
        }
        if !spec.arity_ok(args.len()) {
            out.error(&wrong_arity(spec.name));
            return Flow::Continue;
        }
        if shared.config.cluster_mode == ClusterMode::Cluster
            && let Err(e) = self.redirect(shared, spec, &args)
        {
            out.error(&e);
            return Flow::Continue;
        }
        let mut cx = Context {
            shared,
            requests,
            out,
            args: &args,
        };
        match spec.name {
            "get" => cx.get().await,
            "set" => cx.set().await,
            "mget" => cx.mget().await,
            "mset" => cx.mset().await,
            "del" | "unlink" => cx.del().await,
            "exists" => cx.exists().await,
            "incr" => cx.incr(1).await,
            "decr" => cx.incr(-1).await,
            "incrby" => cx.incrby(false).await,
            "decrby" => cx.incrby(true).await,
            "getex" => cx.getex().await,
            "getdel" => cx.getdel().await,
            "expire" | "pexpire" | "expireat" | "pexpireat" => cx.expire(spec.name).await,
            "ttl" => cx.ttl(1000).await,
            "pttl" => cx.ttl(1).await,
            "persist" => cx.persist().await,
            "ping" => match args.get(1) {
                Some(message) => cx.out.bulk(message),
                None => cx.out.simple("PONG"),
            },
            "echo" => cx.out.bulk(&args[1]),
            "hello" => return self.hello(cx),
            "auth" => self.auth(shared, &mut cx.out, &args),
            "select" => match int_arg(&args[1]) {
                Ok(0) => cx.out.ok(),
                Ok(_) => cx.out.error("ERR DB index is out of range"),
                Err(e) => cx.out.error(e),
            },
            "quit" => {
                cx.out.ok();
                return Flow::Close;
            }
            "client" => self.client(&mut cx.out, &args),
            "command" => command(&mut cx.out, &args),
            "info" => {
                let text = info::render(shared, &args[1..]);
                cx.out.verbatim(&text);
            }
            "config" => config(&mut cx.out, shared, &args),
            "dbsize" => cx.out.int(shared.service.store().stats().items as i64),
            "flushdb" | "flushall" => cx.flush().await,
            "cluster" => match shared.config.cluster_mode {
                ClusterMode::Standalone => cx
                    .out
                    .error("ERR This instance has cluster support disabled"),
                ClusterMode::Emulated => {
                    let member = &shared.service.node().node_id;
                    cluster::emulated(&mut cx.out, &args, member, self.local);
                }
                ClusterMode::Cluster => {
                    let node = shared.service.cluster();
                    let view = node.view();
                    let slots = cluster::Slots {
                        view: &view,
                        replication: node.replication,
                        me: &node.me.id,
                        port: shared.config.port,
                    };
                    slots.command(&mut cx.out, &args);
                }
            },
            "readonly" | "readwrite" => {
                self.readonly = spec.name == "readonly";
                cx.out.ok();
            }
            "asking" => cx.out.ok(),
            other => cx.out.error(&format!("ERR '{other}' is not served")),
        }
        Flow::Continue
    }

    /// In the `cluster` mode, whether this node serves a command's keys: `Err` holds
    /// CROSSSLOT for keys of more than one slot, or MOVED to the slot's primary. While
    /// membership has just moved or this node drains, every node serves every key by
    /// forwarding it (as in the `emulated` mode): nodes whose views differ for a moment
    /// would otherwise send a client back and forth between them.
    fn redirect(&self, shared: &Shared, spec: &Spec, args: &[Bytes]) -> Result<(), String> {
        if spec.first_key <= 0 {
            return Ok(());
        }
        let last = if spec.last_key < 0 {
            args.len() as i32 + spec.last_key
        } else {
            spec.last_key
        };
        let keys = (spec.first_key..=last)
            .step_by(spec.step.max(1) as usize)
            .filter_map(|i| args.get(i as usize));
        let Some(slot) = cluster::slot_of(keys)? else {
            return Ok(());
        };
        let node = shared.service.cluster();
        if !node.redirects() {
            return Ok(());
        }
        let view = node.view();
        let slots = cluster::Slots {
            view: &view,
            replication: node.replication,
            me: &node.me.id,
            port: shared.config.port,
        };
        slots.redirect(slot, self.readonly && spec.flags.contains(&"readonly"))
    }

    /// HELLO [protover [AUTH user pass] [SETNAME name]]: switches the protocol and
    /// describes the server.
    fn hello(&mut self, mut cx: Context<'_, '_>) -> Flow {
        let args = cx.args;
        let mut proto = self.proto;
        if let Some(version) = args.get(1) {
            proto = match int_arg(version) {
                Ok(2) => Proto::Resp2,
                Ok(3) => Proto::Resp3,
                Ok(_) => {
                    cx.out.error("NOPROTO unsupported protocol version");
                    return Flow::Continue;
                }
                Err(_) => {
                    cx.out
                        .error("ERR Protocol version is not an integer or out of range");
                    return Flow::Continue;
                }
            };
        }
        let mut i = 2;
        let mut name = None;
        let mut credentials = None;
        while i < args.len() {
            let option = &args[i];
            if option.eq_ignore_ascii_case(b"auth") && i + 2 < args.len() {
                credentials = Some((&args[i + 1], &args[i + 2]));
                i += 3;
            } else if option.eq_ignore_ascii_case(b"setname") && i + 1 < args.len() {
                name = Some(args[i + 1].clone());
                i += 2;
            } else {
                cx.out.error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                ));
                return Flow::Continue;
            }
        }
        if let Some((user, password)) = credentials {
            if let Err(e) = self.check_password(cx.shared, Some(user), password) {
                cx.out.error(e);
                return Flow::Continue;
            }
        } else if !self.authenticated {
            cx.out.error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
            return Flow::Continue;
        }
        if name.is_some() {
            self.name = name;
        }
        self.proto = proto;
        let mut out = Out {
            buf: cx.out.buf,
            proto,
        };
        let cluster = cx.shared.config.cluster_mode != ClusterMode::Standalone;
        out.map(7);
        out.bulk(b"server");
        out.bulk(b"redis");
        out.bulk(b"version");
        out.bulk(REDIS_VERSION.as_bytes());
        out.bulk(b"proto");
        out.int(if proto == Proto::Resp3 { 3 } else { 2 });
        out.bulk(b"id");
        out.int(self.id as i64);
        out.bulk(b"mode");
        out.bulk(if cluster { b"cluster" } else { b"standalone" });
        out.bulk(b"role");
        out.bulk(b"master");
        out.bulk(b"modules");
        out.array(0);
        Flow::Continue
    }

    /// AUTH [user] password: the password is one of the node's tokens, the user (if
    /// given) `default`. On a node without tokens, as a Redis without `requirepass`.
    fn auth(&mut self, shared: &Shared, out: &mut Out<'_>, args: &[Bytes]) {
        let result = match args {
            [_, password] => self.check_password(shared, None, password),
            [_, user, password] => self.check_password(shared, Some(user), password),
            _ => Err("ERR syntax error"),
        };
        match result {
            Ok(()) => out.ok(),
            Err(e) => out.error(e),
        }
    }

    fn check_password(
        &mut self,
        shared: &Shared,
        user: Option<&Bytes>,
        password: &[u8],
    ) -> Result<(), &'static str> {
        const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
        let default_user = user.is_none_or(|u| u.as_ref() == b"default");
        match &shared.config.auth {
            None if user.is_none() => Err(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ),
            None if default_user => Ok(()),
            Some(tokens) if default_user && tokens.accepts(password) => {
                self.authenticated = true;
                Ok(())
            }
            _ => Err(WRONGPASS),
        }
    }

    fn client(&mut self, out: &mut Out<'_>, args: &[Bytes]) {
        let sub = args[1].to_ascii_lowercase();
        match (sub.as_slice(), args.len()) {
            (b"setname", 3) => {
                let name = &args[2];
                if name.iter().any(|&c| c <= b' ' || c > b'~') {
                    out.error(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                } else {
                    self.name = (!name.is_empty()).then(|| name.clone());
                    out.ok();
                }
            }
            (b"getname", 2) => match &self.name {
                Some(name) => out.bulk(name),
                None => out.null(),
            },
            (b"setinfo", 4) => {
                let attr = &args[2];
                if attr.eq_ignore_ascii_case(b"lib-name") || attr.eq_ignore_ascii_case(b"lib-ver") {
                    out.ok();
                } else {
                    out.error(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(attr)
                    ));
                }
            }
            (b"id", 2) => out.int(self.id as i64),
            (b"info", 2) => {
                let name = self
                    .name
                    .as_ref()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                out.verbatim(&format!(
                    "id={} addr={} name={} db=0 resp={}\n",
                    self.id,
                    self.peer,
                    name,
                    if self.proto == Proto::Resp3 { 3 } else { 2 }
                ));
            }
            (b"setname" | b"getname" | b"setinfo" | b"id" | b"info", _) => out.error(&format!(
                "ERR wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&sub)
            )),
            _ => out.error(&format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&args[1])
            )),
        }
    }
}

/// A command being run: the shared state, its arguments and where its reply goes.
struct Context<'a, 'b> {
    shared: &'a Shared,
    requests: &'a LocalRequests<'a>,
    out: Out<'b>,
    args: &'a [Bytes],
}

/// How a command sets a key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// None given: the node's `--default-ttl` (none: never expires).
    Default,
    /// In this many milliseconds (at least 1).
    In(u64),
    /// Never (GETEX PERSIST).
    Never,
    /// The key keeps the TTL it has (SET KEEPTTL).
    Keep,
}

impl Expiry {
    /// The proto's TTL: absent = default, 0 = never.
    fn ttl_ms(self) -> Option<u64> {
        match self {
            Expiry::Default | Expiry::Keep => None,
            Expiry::In(ms) => Some(ms),
            Expiry::Never => Some(0),
        }
    }
}

/// Runs one request and records its outcome and duration in `requests`.
async fn observed<T>(
    requests: &LocalRequests<'_>,
    op: &'static str,
    f: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = f.await;
    let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
    requests.observe(op, code, started);
    result
}

impl Context<'_, '_> {
    async fn observed<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        observed(self.requests, op, f).await
    }

    async fn read(&self, key: &Bytes) -> Result<GetResponse, Status> {
        self.shared
            .service
            .get(GetRequest { key: key.clone() }, false)
            .await
    }

    /// A value this node holds is written into the reply from the store, uncopied.
    async fn get(&mut self) {
        let Context {
            shared,
            requests,
            out,
            args,
        } = self;
        let found = |value: &[u8]| out.bulk(value);
        match observed(
            requests,
            "get",
            shared.service.get_in_place(&args[1], found),
        )
        .await
        {
            Ok(None) => {}
            Ok(Some(reply)) if reply.found => out.bulk(&reply.value),
            Ok(Some(_)) => out.null(),
            Err(status) => out.error(&status_error(&status)),
        }
    }

    async fn set(&mut self) {
        let options = match SetOptions::parse(&self.args[3..]) {
            Ok(options) => options,
            Err(e) => return self.out.error(&e),
        };
        let (key, value) = (self.args[1].clone(), self.args[2].clone());
        if !options.get && options.expiry != Expiry::Keep {
            let request = SetRequest {
                key,
                value,
                ttl_ms: options.expiry.ttl_ms(),
                condition: options.condition as i32,
                version: 0,
            };
            let service = &self.shared.service;
            return match self.observed("set", service.set(request, false)).await {
                Ok(reply) if reply.stored => self.out.ok(),
                Ok(_) => self.out.null(),
                Err(status) => self.out.error(&status_error(&status)),
            };
        }
        let result = self
            .observed("set", self.read_modify_write(&key, &value, options))
            .await;
        match result {
            Ok((_, old)) if options.get => match old {
                Some(old) => self.out.bulk(&old),
                None => self.out.null(),
            },
            Ok((true, _)) => self.out.ok(),
            Ok((false, _)) => self.out.null(),
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    /// SET with GET or KEEPTTL: read the key, then write it only if it is still that
    /// version (or still absent); retried when another write came between. Returns
    /// whether it stored, and the value it replaced.
    async fn read_modify_write(
        &self,
        key: &Bytes,
        value: &Bytes,
        options: SetOptions,
    ) -> Result<(bool, Option<Bytes>), Status> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read(key).await?;
            let old = current.found.then(|| current.value.clone());
            let blocked = match options.condition {
                SetCondition::IfAbsent => current.found,
                SetCondition::IfPresent => !current.found,
                _ => false,
            };
            if blocked {
                return Ok((false, old));
            }
            let ttl_ms = match options.expiry {
                Expiry::Keep if current.found => Some(current.ttl_ms.unwrap_or(0)),
                other => other.ttl_ms(),
            };
            let (condition, version) = if current.found {
                (SetCondition::IfVersion, current.version)
            } else {
                (SetCondition::IfAbsent, 0)
            };
            let request = SetRequest {
                key: key.clone(),
                value: value.clone(),
                ttl_ms,
                condition: condition as i32,
                version,
            };
            if self.shared.service.set(request, false).await?.stored {
                return Ok((true, old));
            }
        }
        Err(contended())
    }

    async fn mget(&mut self) {
        let keys = self.args[1..].to_vec();
        let service = &self.shared.service;
        match self.observed("mget", service.multi_get(keys, false)).await {
            Ok(replies) => {
                self.out.array(replies.len());
                for reply in replies {
                    if reply.found {
                        self.out.bulk(&reply.value);
                    } else {
                        self.out.null();
                    }
                }
            }
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    async fn mset(&mut self) {
        if self.args.len().is_multiple_of(2) {
            return self.out.error(&wrong_arity("mset"));
        }
        let items = self.args[1..]
            .chunks_exact(2)
            .map(|pair| SetRequest {
                key: pair[0].clone(),
                value: pair[1].clone(),
                ..SetRequest::default()
            })
            .collect();
        let service = &self.shared.service;
        match self.observed("mset", service.multi_set(items, false)).await {
            Ok(_) => self.out.ok(),
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    async fn del(&mut self) {
        let service = &self.shared.service;
        let deleting = async {
            let mut deleted = 0;
            for key in &self.args[1..] {
                let request = DeleteRequest {
                    key: key.clone(),
                    if_version: None,
                };
                deleted += i64::from(service.delete(request, false).await?.deleted);
            }
            Ok(deleted)
        };
        match self.observed("del", deleting).await {
            Ok(n) => self.out.int(n),
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    async fn exists(&mut self) {
        let keys = self.args[1..].to_vec();
        let service = &self.shared.service;
        match self
            .observed("exists", service.multi_get(keys, false))
            .await
        {
            Ok(replies) => self
                .out
                .int(replies.iter().filter(|r| r.found).count() as i64),
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    async fn incr(&mut self, delta: i64) {
        let request = IncrementRequest {
            key: self.args[1].clone(),
            delta,
            initial: 0,
            ttl_ms: None,
        };
        let service = &self.shared.service;
        match self
            .observed("incr", service.increment(request, false))
            .await
        {
            Ok(reply) => self.out.int(reply.value),
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    async fn incrby(&mut self, negate: bool) {
        let delta = match int_arg(&self.args[2]) {
            Ok(d) if negate => match d.checked_neg() {
                Some(d) => d,
                None => return self.out.error("ERR decrement would overflow"),
            },
            Ok(d) => d,
            Err(e) => return self.out.error(e),
        };
        self.incr(delta).await;
    }

    async fn getex(&mut self) {
        let expiry = match getex_expiry(&self.args[2..]) {
            Ok(expiry) => expiry,
            Err(e) => return self.out.error(&e),
        };
        let key = &self.args[1];
        let service = &self.shared.service;
        let getting = async {
            let current = self.read(key).await?;
            if current.found && expiry != Expiry::Default {
                let touch = TouchRequest {
                    key: key.clone(),
                    ttl_ms: expiry.ttl_ms(),
                };
                service.touch(touch, false).await?;
            }
            Ok(current)
        };
        match self.observed("getex", getting).await {
            Ok(reply) if reply.found => self.out.bulk(&reply.value),
            Ok(_) => self.out.null(),
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    async fn getdel(&mut self) {
        let key = &self.args[1];
        let service = &self.shared.service;
        // Delete only the version read, so the value returned is the one deleted.
        let deleting = async {
            for _ in 0..CAS_ATTEMPTS {
                let current = self.read(key).await?;
                if !current.found {
                    return Ok(None);
                }
                let request = DeleteRequest {
                    key: key.clone(),
                    if_version: Some(current.version),
                };
                if service.delete(request, false).await?.deleted {
                    return Ok(Some(current.value));
                }
            }
            Err(contended())
        };
        match self.observed("getdel", deleting).await {
            Ok(Some(value)) => self.out.bulk(&value),
            Ok(None) => self.out.null(),
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT key time [NX|XX|GT|LT].
    async fn expire(&mut self, name: &'static str) {
        let time = match int_arg(&self.args[2]) {
            Ok(t) => t,
            Err(e) => return self.out.error(e),
        };
        let invalid = format!("ERR invalid expire time in '{name}' command");
        let unit = if name.starts_with('p') { 1 } else { 1000 };
        let Some(mut ms) = time.checked_mul(unit) else {
            return self.out.error(&invalid);
        };
        if name.ends_with("at") {
            ms = ms.saturating_sub(unix_ms());
        }
        let mut when = None;
        for option in &self.args[3..] {
            let option = option.to_ascii_lowercase();
            let next = match option.as_slice() {
                b"nx" => ExpireIf::NoTtl,
                b"xx" => ExpireIf::HasTtl,
                b"gt" => ExpireIf::Greater,
                b"lt" => ExpireIf::Less,
                _ => {
                    return self.out.error(&format!(
                        "ERR Unsupported option {}",
                        String::from_utf8_lossy(&option)
                    ));
                }
            };
            if when.is_some_and(|w| w != next) {
                return self
                    .out
                    .error("ERR NX and XX, GT or LT options at the same time are not compatible");
            }
            when = Some(next);
        }
        let key = &self.args[1];
        let service = &self.shared.service;
        let expiring = async {
            if let Some(when) = when {
                let current = self.read(key).await?;
                if !current.found || !when.holds(current.ttl_ms, ms) {
                    return Ok(0);
                }
            }
            if ms <= 0 {
                let request = DeleteRequest {
                    key: key.clone(),
                    if_version: None,
                };
                return Ok(i64::from(service.delete(request, false).await?.deleted));
            }
            let request = TouchRequest {
                key: key.clone(),
                ttl_ms: Some(ms as u64),
            };
            Ok(i64::from(service.touch(request, false).await?.found))
        };
        match self.observed("expire", expiring).await {
            Ok(n) => self.out.int(n),
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    /// TTL (`unit` 1000) and PTTL (`unit` 1): -2 for a missing key, -1 for one that
    /// never expires.
    async fn ttl(&mut self, unit: u64) {
        let key = &self.args[1];
        match self.observed("ttl", self.read(key)).await {
            Ok(reply) if !reply.found => self.out.int(-2),
            Ok(reply) => match reply.ttl_ms {
                None => self.out.int(-1),
                Some(ms) => self.out.int(((ms + unit / 2) / unit) as i64),
            },
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    async fn persist(&mut self) {
        let key = &self.args[1];
        let service = &self.shared.service;
        let persisting = async {
            let current = self.read(key).await?;
            if !current.found || current.ttl_ms.is_none() {
                return Ok(0);
            }
            let request = TouchRequest {
                key: key.clone(),
                ttl_ms: Some(0),
            };
            Ok(i64::from(service.touch(request, false).await?.found))
        };
        match self.observed("persist", persisting).await {
            Ok(n) => self.out.int(n),
            Err(status) => self.out.error(&status_error(&status)),
        }
    }

    /// FLUSHDB and FLUSHALL delete every key this node holds, on all of its owners
    /// (each delete goes through the service, so it is replicated): like Redis
    /// Cluster, where FLUSHALL empties the node it is sent to, a whole kcache cluster
    /// is emptied by sending it to every node.
    async fn flush(&mut self) {
        let mode_ok =
            |m: &Bytes| m.eq_ignore_ascii_case(b"sync") || m.eq_ignore_ascii_case(b"async");
        if self.args.len() > 2 || self.args.get(1).is_some_and(|m| !mode_ok(m)) {
            return self.out.error("ERR syntax error");
        }
        let service = &self.shared.service;
        let flushing = async {
            let mut cursor = Some(ScanCursor::default());
            while let Some(at) = cursor {
                let (entries, next) = service.store().scan(at, FLUSH_BATCH, usize::MAX);
                for entry in entries {
                    let request = DeleteRequest {
                        key: entry.key,
                        if_version: None,
                    };
                    service.delete(request, false).await?;
                }
                cursor = next;
            }
            Ok(())
        };
        match self.observed("flushdb", flushing).await {
            Ok(()) => self.out.ok(),
            Err(status) => self.out.error(&status_error(&status)),
        }
    }
}

/// EXPIRE's conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpireIf {
    NoTtl,
    HasTtl,
    Greater,
    Less,
}

impl ExpireIf {
    /// Whether a key with `current` TTL may get `new_ms` (no TTL counts as infinite).
    fn holds(self, current: Option<u64>, new_ms: i64) -> bool {
        match (self, current) {
            (ExpireIf::NoTtl, current) => current.is_none(),
            (ExpireIf::HasTtl, current) => current.is_some(),
            (ExpireIf::Greater, None) => false,
            (ExpireIf::Greater, Some(ms)) => new_ms > ms as i64,
            (ExpireIf::Less, None) => true,
            (ExpireIf::Less, Some(ms)) => new_ms < ms as i64,
        }
    }
}

/// SET's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SetOptions {
    condition: SetCondition,
    get: bool,
    expiry: Expiry,
}

impl SetOptions {
    fn parse(args: &[Bytes]) -> Result<Self, String> {
        let mut options = SetOptions {
            condition: SetCondition::Always,
            get: false,
            expiry: Expiry::Default,
        };
        let mut i = 0;
        let syntax = || "ERR syntax error".to_string();
        while i < args.len() {
            let option = args[i].to_ascii_lowercase();
            match option.as_slice() {
                b"nx" | b"xx" if options.condition == SetCondition::Always => {
                    options.condition = if option == b"nx" {
                        SetCondition::IfAbsent
                    } else {
                        SetCondition::IfPresent
                    };
                }
                b"get" => options.get = true,
                b"keepttl" if options.expiry == Expiry::Default => options.expiry = Expiry::Keep,
                b"ex" | b"px" | b"exat" | b"pxat" if options.expiry == Expiry::Default => {
                    let value = args.get(i + 1).ok_or_else(syntax)?;
                    options.expiry = expiry_arg(&option, value, "set")?;
                    i += 1;
                }
                _ => return Err(syntax()),
            }
            i += 1;
        }
        Ok(options)
    }
}

/// GETEX's options: EX/PX/EXAT/PXAT time or PERSIST, at most one.
fn getex_expiry(args: &[Bytes]) -> Result<Expiry, String> {
    match args {
        [] => Ok(Expiry::Default),
        [persist] if persist.eq_ignore_ascii_case(b"persist") => Ok(Expiry::Never),
        [option, value] => {
            let option = option.to_ascii_lowercase();
            match option.as_slice() {
                b"ex" | b"px" | b"exat" | b"pxat" => expiry_arg(&option, value, "getex"),
                _ => Err("ERR syntax error".into()),
            }
        }
        _ => Err("ERR syntax error".into()),
    }
}

/// A TTL option's value as milliseconds from now; a time already past becomes 1 ms,
/// which expires the key at once as Redis does.
fn expiry_arg(option: &[u8], value: &[u8], command: &str) -> Result<Expiry, String> {
    let n = int_arg(value).map_err(str::to_string)?;
    let invalid = || format!("ERR invalid expire time in '{command}' command");
    if n <= 0 {
        return Err(invalid());
    }
    let unit = if option.starts_with(b"p") { 1 } else { 1000 };
    let mut ms = n.checked_mul(unit).ok_or_else(invalid)?;
    if option.ends_with(b"at") {
        ms = ms.saturating_sub(unix_ms());
    }
    Ok(Expiry::In(ms.max(1) as u64))
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A decimal i64 argument, or Redis's error for one that is not.
fn int_arg(arg: &[u8]) -> Result<i64, &'static str> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|s| !(s.starts_with('+') || s.len() > 1 && s.starts_with('0')))
        .and_then(|s| s.parse().ok())
        .ok_or("ERR value is not an integer or out of range")
}

fn contended() -> Status {
    Status::aborted("the key changed under every attempt to update it; try again")
}

/// Redis's text for a command it does not know.
fn unknown_command(args: &[Bytes]) -> String {
    let shown = |b: &Bytes| {
        let text = String::from_utf8_lossy(b);
        text.chars().take(128).collect::<String>()
    };
    let mut message = format!(
        "ERR unknown command '{}', with args beginning with: ",
        shown(&args[0])
    );
    for arg in args.iter().skip(1).take(16) {
        message.push_str(&format!("'{}' ", shown(arg)));
    }
    message
}

fn wrong_arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// The Redis error for a service status: the message names the limit or the cause.
pub(super) fn status_error(status: &Status) -> String {
    let message = status.message();
    match status.code() {
        Code::FailedPrecondition if message.contains("overflows") => {
            "ERR increment or decrement would overflow".into()
        }
        Code::FailedPrecondition => "ERR value is not an integer or out of range".into(),
        Code::ResourceExhausted => format!("OOM {message}"),
        // The owner of the key could not be reached: worth retrying.
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted => {
            format!("TRYAGAIN {message}")
        }
        Code::Unauthenticated => "NOAUTH Authentication required.".into(),
        _ => format!("ERR {message}"),
    }
}

/// COMMAND, COMMAND COUNT, COMMAND INFO name..., COMMAND DOCS, COMMAND LIST.
fn command(out: &mut Out<'_>, args: &[Bytes]) {
    let Some(sub) = args.get(1) else {
        out.array(COMMANDS.len());
        COMMANDS.iter().for_each(|c| command_info(out, c));
        return;
    };
    match sub.to_ascii_lowercase().as_slice() {
        b"count" => out.int(COMMANDS.len() as i64),
        b"info" => {
            out.array(args.len() - 2);
            for name in &args[2..] {
                match commands::lookup(name) {
                    Some(c) => command_info(out, c),
                    None => out.null(),
                }
            }
        }
        b"list" => {
            out.array(COMMANDS.len());
            COMMANDS.iter().for_each(|c| out.bulk(c.name.as_bytes()));
        }
        // Documentation is optional for clients; an empty map says there is none.
        b"docs" => out.map(0),
        _ => out.error(&format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

/// One command in COMMAND's format (Redis 7: name, arity, flags, first key, last key,
/// step, ACL categories, tips, key specs, subcommands).
fn command_info(out: &mut Out<'_>, c: &Spec) {
    out.array(10);
    out.bulk(c.name.as_bytes());
    out.int(i64::from(c.arity));
    out.set(c.flags.len());
    c.flags.iter().for_each(|f| out.simple(f));
    out.int(i64::from(c.first_key));
    out.int(i64::from(c.last_key));
    out.int(i64::from(c.step));
    out.set(0);
    out.set(0);
    out.array(0);
    out.array(0);
}

/// CONFIG GET pattern...: the few parameters tools ask for (redis-benchmark reads
/// `save` and `appendonly`), from the node's flags; CONFIG SET is not served: the
/// node is configured by its flags.
fn config(out: &mut Out<'_>, shared: &Shared, args: &[Bytes]) {
    if args[1].eq_ignore_ascii_case(b"get") && args.len() >= 3 {
        let limit = shared.service.store().limits().max_memory.to_string();
        let cluster = if shared.config.cluster_mode == ClusterMode::Standalone {
            "no"
        } else {
            "yes"
        };
        let params: [(&str, &str); 6] = [
            ("save", ""),
            ("appendonly", "no"),
            ("databases", "1"),
            ("maxmemory", &limit),
            ("maxmemory-policy", "allkeys-lfu"),
            ("cluster-enabled", cluster),
        ];
        let matching: Vec<_> = params
            .iter()
            .filter(|(name, _)| args[2..].iter().any(|p| glob(p, name.as_bytes())))
            .collect();
        out.map(matching.len());
        for (name, value) in matching {
            out.bulk(name.as_bytes());
            out.bulk(value.as_bytes());
        }
    } else if args[1].eq_ignore_ascii_case(b"resetstat") {
        out.ok();
    } else if args[1].eq_ignore_ascii_case(b"get") {
        out.error("ERR wrong number of arguments for 'config|get' command");
    } else {
        out.error(&format!(
            "ERR unknown subcommand '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(&args[1])
        ));
    }
}

/// Redis's glob for CONFIG GET: `*` any run, `?` any one byte, case-insensitive.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => {
            // A run of stars is one star: no pattern costs more than the name's length
            // per star.
            let rest = &rest[rest.iter().take_while(|&&c| c == b'*').count()..];
            (0..=name.len()).any(|i| glob(rest, &name[i..]))
        }
        Some((&p, rest)) => name.split_first().is_some_and(|(&n, tail)| {
            (p == b'?' || p.eq_ignore_ascii_case(&n)) && glob(rest, tail)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_arguments_are_read_as_redis_reads_them() {
        assert_eq!(int_arg(b"-12"), Ok(-12));
        assert_eq!(int_arg(b"0"), Ok(0));
        for bad in [
            &b"012"[..],
            b"+1",
            b"1.5",
            b"",
            b" 1",
            b"99999999999999999999",
        ] {
            assert!(int_arg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn set_options_parse_and_conflicts_are_syntax_errors() {
        let args = |s: &str| {
            s.split(' ')
                .map(|w| Bytes::from(w.to_string()))
                .collect::<Vec<_>>()
        };
        let o = SetOptions::parse(&args("NX GET px 1500")).unwrap();
        assert_eq!(o.condition, SetCondition::IfAbsent);
        assert!(o.get);
        assert_eq!(o.expiry, Expiry::In(1500));
        assert_eq!(
            SetOptions::parse(&args("NX XX")),
            Err("ERR syntax error".into())
        );
        assert_eq!(
            SetOptions::parse(&args("EX 1 KEEPTTL")),
            Err("ERR syntax error".into())
        );
        assert_eq!(
            SetOptions::parse(&args("EX")),
            Err("ERR syntax error".into())
        );
        assert_eq!(
            SetOptions::parse(&args("EX 0")),
            Err("ERR invalid expire time in 'set' command".into())
        );
        assert_eq!(
            SetOptions::parse(&args("EX x")),
            Err("ERR value is not an integer or out of range".into())
        );
    }

    #[test]
    fn config_patterns_glob_as_redis_globs_them() {
        assert!(glob(b"*", b"save"));
        assert!(glob(b"MAXMEMORY*", b"maxmemory-policy"));
        assert!(glob(b"s?ve", b"save"));
        assert!(!glob(b"save", b"saves"));
        assert!(!glob(b"*x", b"save"));
    }

    #[test]
    fn unknown_commands_are_reported_as_redis_reports_them() {
        let args = [Bytes::from("FOO"), Bytes::from("a"), Bytes::from("b")];
        assert_eq!(
            unknown_command(&args),
            "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
        );
    }

    #[test]
    fn statuses_become_redis_error_codes() {
        assert_eq!(
            status_error(&Status::failed_precondition(
                "value is not a decimal 64-bit integer, so it cannot be incremented"
            )),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            status_error(&Status::failed_precondition(
                "incrementing 1 by 9 overflows a signed 64-bit integer"
            )),
            "ERR increment or decrement would overflow"
        );
        assert!(status_error(&Status::unavailable("x")).starts_with("TRYAGAIN "));
        assert!(status_error(&Status::invalid_argument("key is 300 bytes")).starts_with("ERR key"));
    }
}
