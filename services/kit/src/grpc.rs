//! The gRPC server bootstrap: the services of a program, plus `grpc.health.v1` and
//! server reflection (`grpc.reflection.v1` and `v1alpha`, both without auth), served on a
//! bound listener until shutdown.
//!
//! Health: `""` is `SERVING` while the process runs (the liveness probe); each service's
//! own name (e.g. `reseller.v1.DeviceService`) follows the program's
//! [`Readiness`](crate::readiness::Readiness) when one is given
//! ([`GrpcServer::ready_when`]): `NOT_SERVING` while PostgreSQL or NATS is unreachable
//! (the readiness probe). On shutdown every name turns `NOT_SERVING` first.
//!
//! Header limits, both ways. A request's headers may be up to
//! [`MAX_REQUEST_HEADER_BYTES`], so a bearer token carrying a 10 kB junk subject still
//! reaches the auth interceptor and is refused as `UNAUTHENTICATED` (HTTP/2's 16 KiB
//! default would answer HTTP 431, which clients read as `UNKNOWN`). An error answer's
//! status headers are kept under a default client's 16 KiB header-list limit
//! ([`keep_status_headers_small`]), or the client would see a protocol error
//! (`INTERNAL`) instead of the status.

use std::convert::Infallible;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::readiness::Readiness;

/// Most bytes of a request's header list (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`).
pub const MAX_REQUEST_HEADER_BYTES: u32 = 64 * 1024;

/// Most bytes of an answer's `grpc-message` header (percent-encoded).
const MAX_GRPC_MESSAGE_HEADER_BYTES: usize = 3 * 1024;

/// Most bytes of an answer's `grpc-status-details-bin` header (base64); larger details
/// are dropped, the status and its message stay.
const MAX_STATUS_DETAILS_HEADER_BYTES: usize = 8 * 1024;

/// A generated gRPC server (`reseller.v1`'s `…Server`) whose message sizes can be
/// bounded: tonic generates the two setters on each server type rather than on a trait,
/// so this trait names them once for [`crate::app::Platform::serve`].
pub trait MessageLimits {
    /// Refuses requests, and answers, larger than `bytes` (decoded or encoded).
    #[must_use]
    fn limit_messages(self, bytes: usize) -> Self;
}

macro_rules! message_limits {
    ($($module:ident :: $server:ident),* $(,)?) => {$(
        impl<T> MessageLimits for reseller_proto::v1::$module::$server<T> {
            fn limit_messages(self, bytes: usize) -> Self {
                self.max_decoding_message_size(bytes)
                    .max_encoding_message_size(bytes)
            }
        }
    )*};
}

message_limits!(
    account_service_server::AccountServiceServer,
    customer_service_server::CustomerServiceServer,
    device_service_server::DeviceServiceServer,
    msp_service_server::MspServiceServer,
    reporting_service_server::ReportingServiceServer,
);

/// The services one program serves.
#[derive(Debug, Default)]
pub struct GrpcServer {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    readiness: Option<watch::Receiver<Readiness>>,
    max_connection_age: Option<Duration>,
}

impl GrpcServer {
    /// No services yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service (usually wrapped in the auth interceptor); its health is reported
    /// under its full name.
    pub fn add_service<S>(&mut self, svc: S) -> &mut Self
    where
        S: tower_service::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// Ends each client connection after `age` (HTTP/2 GOAWAY; calls in flight finish,
    /// the client reconnects), so clients spread onto replicas started after them. `None`
    /// keeps connections for as long as the client does.
    pub fn max_connection_age(&mut self, age: Option<Duration>) -> &mut Self {
        self.max_connection_age = age;
        self
    }

    /// Reports the services' health names as `readiness` says (see the module docs);
    /// without it they are `SERVING` until shutdown.
    pub fn ready_when(&mut self, readiness: watch::Receiver<Readiness>) -> &mut Self {
        self.readiness = Some(readiness);
        self
    }

    /// Serves on `listener` until `shutdown`, then stops accepting and lets in-flight
    /// calls finish (the caller bounds that with the grace period).
    ///
    /// # Errors
    /// When the transport fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("", ServingStatus::Serving).await;
        // Every name has its status before the first call can ask (the task below keeps
        // them current).
        let ready = self
            .readiness
            .as_ref()
            .is_none_or(|r| r.borrow().is_ready());
        for name in &self.names {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(*name, status).await;
        }
        let names = self.names;
        let statuses = tokio::spawn(report_health(
            health,
            names,
            self.readiness,
            shutdown.clone(),
        ));
        // Both reflection versions: grpcurl and most tools speak v1, Python's
        // grpcio-reflection and older clients only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(reseller_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let stopping = async move {
            shutdown.cancelled().await;
            // Tell load balancers first (the health task turns every name NOT_SERVING
            // as it stops), then stop accepting.
            let _ = statuses.await;
        };
        let mut builder = Server::builder();
        if let Some(age) = self.max_connection_age {
            builder = builder.max_connection_age(age);
        }
        builder
            // Outermost, so that it sees the codes as the caller gets them.
            .layer(crate::rpc_layer::RpcLayer)
            .layer(tower::util::MapResponseLayer::new(
                contract_codes_for_tonics_answers,
            ))
            .layer(tower::util::MapResponseLayer::new(
                keep_status_headers_small,
            ))
            .http2_max_header_list_size(MAX_REQUEST_HEADER_BYTES)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_routes(self.routes.routes())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(
                // TCP_NODELAY: without it every unary answer waits for the client's
                // delayed ACK (~40 ms); tonic applies no socket options to a listener
                // it is handed unless told.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopping,
            )
            .await?;
        Ok(())
    }
}

/// Keeps the health of `names` in step with `readiness` (or `SERVING` without one) until
/// `shutdown`, then reports every name, `""` included, `NOT_SERVING`. One task does both,
/// so a late readiness change can never turn a stopping server back to `SERVING`.
async fn report_health(
    health: HealthReporter,
    names: Vec<&'static str>,
    mut readiness: Option<watch::Receiver<Readiness>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let set_all = |status: ServingStatus| {
        let health = health.clone();
        let names = names.clone();
        async move {
            for name in names {
                health.set_service_status(name, status).await;
            }
        }
    };
    let mut ready = true;
    loop {
        if let Some(r) = readiness.as_mut() {
            ready = r.borrow_and_update().is_ready();
        }
        set_all(if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
        .await;
        let changed = async {
            match readiness.as_mut() {
                Some(r) => r.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            still_watching = changed => if !still_watching {
                // The probe stopped (it stops at shutdown): keep the last answer.
                readiness = None;
            },
        }
    }
    set_all(ServingStatus::NotServing).await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

/// Two answers tonic gives before a handler runs, rewritten to what the contract says:
/// an over-sized request is `OUT_OF_RANGE` in tonic and `RESOURCE_EXHAUSTED` in the
/// contract (and gRPC's own status-code guide); a request that does not decode (a string
/// field that is not UTF-8: stray bytes from a caller) is `INTERNAL` in tonic, which
/// tells the caller the server failed, where the caller's input is malformed:
/// `INVALID_ARGUMENT`, with tonic's message naming the field
/// (`ListCustomersRequest.query: invalid string value: data is not UTF-8 encoded`).
/// The over-sized request's answer carries the `MESSAGE_TOO_LARGE` reason.
fn contract_codes_for_tonics_answers<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let status = headers.get("grpc-status").map(|v| v.as_bytes().to_vec());
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    let rewritten = match status.as_deref() {
        Some(b"11") if message.contains("message length too large") => Some("8"),
        Some(b"13") if message.starts_with("failed to decode Protobuf message") => Some("3"),
        _ => None,
    };
    if let Some(code) = rewritten {
        headers.insert("grpc-status", http::HeaderValue::from_static(code));
    }
    if rewritten == Some("8") {
        // Like every RESOURCE_EXHAUSTED, with its reason (README.md "Error reasons").
        let refusal = crate::ApiError::refused(crate::Reason::MessageTooLarge, message);
        let mut status_headers = http::HeaderMap::new();
        if tonic::Status::from(refusal)
            .add_header(&mut status_headers)
            .is_ok()
            && let Some(details) = status_headers.remove("grpc-status-details-bin")
        {
            headers.insert("grpc-status-details-bin", details);
        }
    }
    response
}

/// Keeps an error answer's status headers small enough for any client (16 KiB of
/// headers is the common default): a `grpc-message` over
/// [`MAX_GRPC_MESSAGE_HEADER_BYTES`] is cut to [`crate::error::MAX_MESSAGE_BYTES`] of
/// text, and `grpc-status-details-bin` over [`MAX_STATUS_DETAILS_HEADER_BYTES`] is
/// dropped. Statuses built from [`crate::ApiError`] are bounded already; this catches any
/// other (a handler's own `Status`, tonic's). It sees the headers of unary answers and of
/// streams that fail before their first message, where errors are answered.
fn keep_status_headers_small<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let long_message = headers
        .get("grpc-message")
        .filter(|v| v.len() > MAX_GRPC_MESSAGE_HEADER_BYTES)
        .map(|v| percent_decode(v.as_bytes()));
    if let Some(message) = long_message {
        let cut = crate::error::bounded(message);
        if let Ok(value) = http::HeaderValue::from_str(&percent_encode(&cut)) {
            headers.insert("grpc-message", value);
        }
    }
    if headers
        .get("grpc-status-details-bin")
        .is_some_and(|v| v.len() > MAX_STATUS_DETAILS_HEADER_BYTES)
    {
        headers.remove("grpc-status-details-bin");
    }
    response
}

/// gRPC's percent-encoding of `grpc-message` (PROTOCOL-HTTP2.md): printable ASCII but
/// `%` as it is, every other byte as `%XX`.
const GRPC_MESSAGE_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// Decodes a `grpc-message` value; invalid UTF-8 is replaced.
fn percent_decode(encoded: &[u8]) -> String {
    percent_encoding::percent_decode(encoded)
        .decode_utf8_lossy()
        .into_owned()
}

/// Encodes `text` for `grpc-message`.
fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, GRPC_MESSAGE_ESCAPED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(message: &str, details: usize) -> http::Response<()> {
        http::Response::builder()
            .header("grpc-status", "3")
            .header("grpc-message", percent_encode(message))
            .header("grpc-status-details-bin", "A".repeat(details))
            .body(())
            .unwrap()
    }

    #[test]
    fn an_undecodable_request_is_invalid_argument() {
        let answer = http::Response::builder()
            .header("grpc-status", "13")
            .header(
                "grpc-message",
                percent_encode("failed to decode Protobuf message: X.query: invalid string value"),
            )
            .body(())
            .unwrap();
        let answer = contract_codes_for_tonics_answers(answer);
        assert_eq!(answer.headers()["grpc-status"], "3");
        let other = http::Response::builder()
            .header("grpc-status", "13")
            .header("grpc-message", "internal%20error")
            .body(())
            .unwrap();
        assert_eq!(
            contract_codes_for_tonics_answers(other).headers()["grpc-status"],
            "13"
        );
    }

    #[test]
    fn percent_encoding_round_trips() {
        let text = "knox_id must be 6 to 20 digits, got \"Ä\u{0}%\"";
        let encoded = percent_encode(text);
        assert!(encoded.is_ascii() && !encoded.contains('\u{0}'));
        assert_eq!(percent_decode(encoded.as_bytes()), text);
        assert_eq!(percent_decode(b"100%"), "100%");
    }

    #[test]
    fn long_status_headers_are_cut_and_short_ones_kept() {
        let long = keep_status_headers_small(answer(&"Ä".repeat(5_000), 20_000));
        let message = long.headers()["grpc-message"].as_bytes();
        assert!(message.len() <= 3 * crate::error::MAX_MESSAGE_BYTES);
        assert!(percent_decode(message).ends_with('…'));
        assert!(!long.headers().contains_key("grpc-status-details-bin"));

        let short = keep_status_headers_small(answer("customer 1 not found", 100));
        assert_eq!(
            percent_decode(short.headers()["grpc-message"].as_bytes()),
            "customer 1 not found"
        );
        assert!(short.headers().contains_key("grpc-status-details-bin"));
    }
}
