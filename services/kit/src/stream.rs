//! Connecting to NATS and setting up the JetStream streams at start-up (every program
//! does it, idempotently).
//!
//! **Settings only grow.** Replicas of two versions run side by side during a rolling
//! update, and each sets the streams up as it starts, so a program never lowers what it
//! finds: a stream with fewer replicas, or a shorter `max_age` or smaller `max_bytes`
//! than the settings, is raised to them (where JetStream allows it: a single server
//! cannot hold three replicas); a stream that keeps more than the settings is left as
//! it is, and the difference is logged as a warning. An unset limit means "no opinion":
//! a new stream keeps everything, an existing stream keeps its limit. Lowering a limit
//! on purpose is an operator's edit (`nats stream edit`), which no program undoes.

use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode, stream};
use async_nats::{ConnectErrorKind, ServerAddr};

use crate::config::{Limit, MaxAge, MaxBytes};
use crate::startup::{self, SetupError};
use crate::subjects;

/// How long the stream remembers `Nats-Msg-Id`s to drop republished events.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long set-up and consumers wait for one JetStream API answer before asking again.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// `js` with a short timeout for JetStream API requests ([`API_TIMEOUT`]): a cluster
/// without a leader for the stream or consumer (electing one after a node was lost, or
/// at first start) does not answer at all, and asking again soon beats sitting out the
/// client's 10 s on each attempt.
pub fn quick(js: &jetstream::Context) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(API_TIMEOUT)
        .build(js.client())
}

/// What the JetStream streams should be (`NATS_STREAM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Replicas of both streams (and, as consumers inherit them, of the durable consumers).
    pub replicas: usize,
    /// `RESELLER_EVENTS`' `max_age`; `None`: no opinion (see the module docs).
    pub max_age: Option<MaxAge>,
    /// `RESELLER_EVENTS`' `max_bytes`; `None`: no opinion.
    pub max_bytes: Option<MaxBytes>,
}

impl Default for StreamSettings {
    /// One replica, no opinion on limits: a single server keeping every event.
    fn default() -> Self {
        Self {
            replicas: 1,
            max_age: None,
            max_bytes: None,
        }
    }
}

/// Parses `NATS_URL`: one or more server URLs, comma-separated (`nats://` and port 4222
/// are assumed when left out).
///
/// # Errors
/// When an entry is empty or not a NATS server URL; the message names the entry (its
/// password, if any, hidden).
pub fn parse_servers(urls: &str) -> anyhow::Result<Vec<ServerAddr>> {
    let entries: Vec<&str> = urls.split(',').map(str::trim).collect();
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let which = if entries.len() == 1 {
                "NATS_URL".to_owned()
            } else {
                format!("NATS_URL entry {} of {}", i + 1, entries.len())
            };
            if entry.is_empty() {
                anyhow::bail!("{which} is empty (NATS_URL is {:?})", redact(urls));
            }
            entry.parse::<ServerAddr>().map_err(|e| {
                anyhow::anyhow!(
                    "{which} ({:?}) is not a NATS server URL: {e}",
                    redact(entry)
                )
            })
        })
        .collect()
}

/// `url` with the password of any `user:password@` part replaced by `***`.
fn redact(url: &str) -> String {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[start..].rfind('@') {
        Some(at) => {
            let userinfo = &url[start..start + at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..start], &url[start + at..])
        }
        None => url.to_owned(),
    }
}

/// Connects to the NATS servers of `urls` (see [`parse_servers`]) and returns the client
/// and a JetStream context. The client fails over among the servers (and those the
/// cluster announces) whenever its connection drops, without limit.
///
/// # Errors
/// At once for a malformed URL or refused credentials; when no server could be reached
/// within [`startup::STARTUP_BUDGET`].
pub async fn connect(urls: &str) -> anyhow::Result<(async_nats::Client, jetstream::Context)> {
    let servers = parse_servers(urls)?;
    let client = startup::retry("connecting to NATS", || async {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            // Two unanswered pings (20 s) and the client moves to another server, rather
            // than sitting on a half-open connection to a lost node for two minutes.
            .ping_interval(Duration::from_secs(10))
            .connect(servers.clone())
            .await
            .map_err(|err| match err.kind() {
                ConnectErrorKind::ServerParse
                | ConnectErrorKind::Authentication
                | ConnectErrorKind::AuthorizationViolation
                | ConnectErrorKind::Tls => SetupError::Permanent(err.into()),
                _ => SetupError::Transient(err.into()),
            })
    })
    .await?;
    let js = jetstream::new(client.clone());
    Ok((client, js))
}

/// Creates `RESELLER_EVENTS` (every event, kept for projection rebuilds within the
/// limits; a 2-minute duplicate window for `Nats-Msg-Id`) and `RESELLER_DEAD_LETTERS`
/// when missing, and raises what `settings` asks more of on existing ones. Transient
/// JetStream failures (a cluster electing its leader, a peer replica creating the stream
/// at the same moment) are retried.
///
/// # Errors
/// When JetStream is not enabled, refuses to create a stream (e.g. more replicas than
/// servers), or stays unreachable for [`startup::STARTUP_BUDGET`].
pub async fn ensure_streams(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> anyhow::Result<()> {
    let js = &quick(js);
    ensure_stream(js, events_config(settings), settings, true).await?;
    ensure_stream(js, dead_letters_config(settings), settings, false).await
}

/// `RESELLER_EVENTS` as a new stream.
fn events_config(settings: &StreamSettings) -> stream::Config {
    let max_age = match settings.max_age {
        Some(Limit::AtMost(age)) => age.into(),
        _ => Duration::ZERO,
    };
    stream::Config {
        name: subjects::EVENTS_STREAM.to_owned(),
        subjects: vec![subjects::ALL_EVENTS.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        num_replicas: settings.replicas,
        max_age,
        max_bytes: match settings.max_bytes {
            Some(Limit::AtMost(bytes)) => i64::try_from(bytes.as_u64()).unwrap_or(i64::MAX),
            _ => -1,
        },
        // JetStream refuses a duplicate window longer than the stream keeps events.
        duplicate_window: if max_age.is_zero() {
            DUPLICATE_WINDOW
        } else {
            DUPLICATE_WINDOW.min(max_age)
        },
        ..Default::default()
    }
}

/// `RESELLER_DEAD_LETTERS` as a new stream.
fn dead_letters_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: subjects::DEAD_LETTER_STREAM.to_owned(),
        subjects: vec![subjects::ALL_DEAD_LETTERS.to_owned()],
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// Creates the stream `new` describes, or raises an existing one to `settings`
/// (`limits`: whether `max_age`/`max_bytes` apply to it).
async fn ensure_stream(
    js: &jetstream::Context,
    new: stream::Config,
    settings: &StreamSettings,
    limits: bool,
) -> anyhow::Result<()> {
    let name = new.name.clone();
    let found = startup::retry(&format!("setting up stream {name}"), || async {
        match js.get_stream(&name).await {
            Ok(stream) => {
                let info = stream.cached_info();
                Ok(Some((info.config.clone(), info.cluster.is_some())))
            }
            Err(err) => match err.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(e) if e.code() == 404 => {
                    create_stream(js, &new).await.map(|()| None)
                }
                jetstream::context::GetStreamErrorKind::JetStream(e) => Err(sort(&e, err.into())),
                _ => Err(no_answer(err.into())),
            },
        }
    })
    .await?;
    let Some((found, clustered)) = found else {
        return Ok(());
    };
    let plan = raise(&found, clustered, settings, limits);
    for kept in &plan.kept {
        tracing::warn!(stream = %name, "{kept}: left as it is (settings only grow)");
    }
    let Some(raised) = plan.raised else {
        return Ok(());
    };
    let update = startup::retry(&format!("raising stream {name}"), || async {
        js.update_stream(&raised)
            .await
            .map_err(|err| match err.kind() {
                jetstream::context::CreateStreamErrorKind::JetStream(e) if is_transient(&e) => {
                    SetupError::Transient(err.into())
                }
                jetstream::context::CreateStreamErrorKind::JetStream(_) => {
                    SetupError::Permanent(err.into())
                }
                _ => SetupError::Transient(err.into()),
            })
    })
    .await;
    match update {
        Ok(_) => {
            tracing::info!(stream = %name, changes = %plan.changes.join(", "), "stream raised to the settings")
        }
        // The stream works as it is; a later start (or an operator) can raise it.
        Err(err) => tracing::warn!(
            stream = %name,
            changes = %plan.changes.join(", "),
            error = %format!("{err:#}"),
            "JetStream refused to raise the stream to the settings; running with it as it is"
        ),
    }
    Ok(())
}

/// Creates a stream. A peer that created it a moment before with another configuration
/// (a replica of another version) makes this a transient failure: the next attempt
/// finds the stream and raises it.
async fn create_stream(js: &jetstream::Context, config: &stream::Config) -> Result<(), SetupError> {
    use jetstream::context::CreateStreamErrorKind as Kind;
    match js.create_stream(config.clone()).await {
        Ok(_) => {
            tracing::info!(
                stream = %config.name,
                replicas = config.num_replicas,
                max_age = ?config.max_age,
                max_bytes = config.max_bytes,
                "created stream"
            );
            Ok(())
        }
        Err(err) => match err.kind() {
            Kind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NAME_EXIST => {
                Err(SetupError::Transient(err.into()))
            }
            Kind::JetStream(e) => Err(sort(&e, err.into())),
            Kind::TimedOut | Kind::JetStreamUnavailable | Kind::Response => {
                Err(no_answer(err.into()))
            }
            _ => Err(SetupError::Permanent(err.into())),
        },
    }
}

/// A JetStream API error as transient or permanent.
fn sort(e: &jetstream::Error, err: anyhow::Error) -> SetupError {
    if is_transient(e) {
        SetupError::Transient(err)
    } else {
        SetupError::Permanent(err)
    }
}

/// A request JetStream did not answer (a timeout, no responders): transient while a
/// cluster forms, permanent when JetStream is off, which only the budget tells apart.
fn no_answer(err: anyhow::Error) -> SetupError {
    SetupError::Transient(err.context(
        "JetStream did not answer (a cluster still electing its leader, or a server without -js)",
    ))
}

/// JetStream API errors that a cluster gets over by itself: no leader yet, peers still
/// joining, a server catching up (HTTP-style code 503).
fn is_transient(e: &jetstream::Error) -> bool {
    e.code() == 503
        || [
            ErrorCode::CLUSTER_NOT_AVAILABLE,
            ErrorCode::CLUSTER_NOT_LEADER,
            ErrorCode::CLUSTER_NOT_ACTIVE,
            ErrorCode::CLUSTER_INCOMPLETE,
            ErrorCode::CLUSTER_NOT_ASSIGNED,
            ErrorCode::CLUSTER_NO_PEERS,
        ]
        .contains(&e.error_code())
}

/// What to do with an existing stream.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Its configuration raised to the settings, when anything grows.
    raised: Option<stream::Config>,
    /// What grows, for the log.
    changes: Vec<String>,
    /// Where the stream keeps more than the settings ask, for the log.
    kept: Vec<String>,
}

/// Compares a stream's configuration with the settings: only ever raises. `clustered`:
/// whether the stream lives on a NATS cluster (a single server holds one copy, and 2.9
/// would record a raise it cannot honour).
fn raise(found: &stream::Config, clustered: bool, settings: &StreamSettings, limits: bool) -> Plan {
    let mut plan = Plan::default();
    let mut raised = found.clone();
    // A stream created with replicas 0 has the server's default: one.
    let replicas = found.num_replicas.max(1);
    if settings.replicas > replicas && !clustered {
        plan.kept.push(format!(
            "it has {replicas} replica on a single NATS server, which cannot hold \
             NATS_STREAM_REPLICAS={} (that needs a cluster)",
            settings.replicas
        ));
    } else if settings.replicas > replicas {
        raised.num_replicas = settings.replicas;
        plan.changes
            .push(format!("replicas {replicas} -> {}", settings.replicas));
    } else if settings.replicas < replicas {
        plan.kept.push(format!(
            "it has {replicas} replicas, more than NATS_STREAM_REPLICAS={}",
            settings.replicas
        ));
    }
    if limits {
        if let Some(wanted) = settings.max_age {
            let wanted = match wanted {
                Limit::Unlimited => Limit::Unlimited,
                Limit::AtMost(age) => Limit::AtMost(Duration::from(age)),
            };
            let has = if found.max_age.is_zero() {
                Limit::Unlimited
            } else {
                Limit::AtMost(found.max_age)
            };
            let show = |l: &Limit<Duration>| match l {
                Limit::Unlimited => "unlimited".to_owned(),
                Limit::AtMost(d) => humantime::format_duration(*d).to_string(),
            };
            if !has.covers(&wanted) {
                raised.max_age = match wanted {
                    Limit::Unlimited => Duration::ZERO,
                    Limit::AtMost(age) => age,
                };
                plan.changes
                    .push(format!("max_age {} -> {}", show(&has), show(&wanted)));
            } else if has != wanted {
                plan.kept.push(format!(
                    "it keeps events for {}, longer than NATS_STREAM_MAX_AGE={}",
                    show(&has),
                    show(&wanted)
                ));
            }
        }
        if let Some(wanted) = settings.max_bytes {
            let wanted = match wanted {
                Limit::Unlimited => Limit::Unlimited,
                Limit::AtMost(bytes) => Limit::AtMost(bytes.as_u64()),
            };
            let has = match u64::try_from(found.max_bytes) {
                Ok(bytes) if bytes > 0 => Limit::AtMost(bytes),
                _ => Limit::Unlimited,
            };
            if !has.covers(&wanted) {
                raised.max_bytes = match wanted {
                    Limit::Unlimited => -1,
                    Limit::AtMost(bytes) => i64::try_from(bytes).unwrap_or(i64::MAX),
                };
                plan.changes.push(format!("max_bytes {has} -> {wanted}"));
            } else if has != wanted {
                plan.kept.push(format!(
                    "it keeps {has} bytes, more than NATS_STREAM_MAX_BYTES={wanted}"
                ));
            }
        }
    }
    if !plan.changes.is_empty() {
        plan.raised = Some(raised);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(replicas: usize, age: Option<&str>, bytes: Option<&str>) -> StreamSettings {
        StreamSettings {
            replicas,
            max_age: age.map(|a| a.parse().unwrap()),
            max_bytes: bytes.map(|b| b.parse().unwrap()),
        }
    }

    #[test]
    fn nats_url_lists_parse_and_a_bad_entry_is_named() {
        let servers =
            parse_servers("nats://127.0.0.1:4222, nats://127.0.0.1:4223,127.0.0.1:4224").unwrap();
        assert_eq!(servers.len(), 3);
        let err = parse_servers("nats://127.0.0.1:4222,nats://127.0.0.1:42x3").unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("NATS_URL entry 2 of 2 (\"nats://127.0.0.1:42x3\")"),
            "{message}"
        );
        let err = parse_servers("nats://a:4222,").unwrap_err().to_string();
        assert!(err.contains("entry 2 of 2 is empty"), "{err}");
        let err = parse_servers("http://u:secret@host:4222")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("secret") && err.contains("u:***@host"),
            "{err}"
        );
    }

    #[test]
    fn settings_only_grow() {
        let small = events_config(&settings(1, Some("1d"), Some("1MiB")));
        assert_eq!(small.duplicate_window, DUPLICATE_WINDOW);

        // More replicas, a longer age and more bytes are raised.
        let plan = raise(&small, true, &settings(3, Some("30d"), Some("1GiB")), true);
        let raised = plan.raised.expect("raised");
        assert_eq!(raised.num_replicas, 3);
        assert_eq!(raised.max_age, Duration::from_secs(30 * 86_400));
        assert_eq!(raised.max_bytes, 1 << 30);
        assert!(plan.kept.is_empty());

        // Less of everything is left alone, and said.
        let plan = raise(&raised, true, &settings(1, Some("1d"), Some("1MiB")), true);
        assert_eq!(plan.raised, None);
        assert_eq!(plan.kept.len(), 3, "{:?}", plan.kept);

        // No opinion changes nothing; `unlimited` lifts a limit.
        let plan = raise(&raised, true, &settings(3, None, None), true);
        assert_eq!(plan, Plan::default());
        let plan = raise(
            &raised,
            true,
            &settings(3, Some("unlimited"), Some("unlimited")),
            true,
        );
        let lifted = plan.raised.expect("lifted");
        assert_eq!((lifted.max_age, lifted.max_bytes), (Duration::ZERO, -1));

        // An unlimited stream stays unlimited whatever limit is asked for.
        let plan = raise(&lifted, true, &settings(3, Some("30d"), Some("1GiB")), true);
        assert_eq!(plan.raised, None);
        assert_eq!(plan.kept.len(), 2);

        // The dead-letter stream has no limits to raise.
        let dead_letters = dead_letters_config(&settings(1, None, None));
        let plan = raise(&dead_letters, true, &settings(3, Some("1d"), None), false);
        assert_eq!(plan.raised.expect("raised").num_replicas, 3);

        // A single server cannot hold more replicas: said, not attempted.
        let plan = raise(&dead_letters, false, &settings(3, None, None), false);
        assert_eq!((plan.raised, plan.kept.len()), (None, 1));
    }

    #[test]
    fn a_short_max_age_shortens_the_duplicate_window() {
        let config = events_config(&settings(1, Some("30s"), None));
        assert_eq!(config.duplicate_window, Duration::from_secs(30));
    }
}
