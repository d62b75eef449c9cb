//! The gRPC server bootstrap: the services of a program, plus `grpc.health.v1` and
//! server reflection (both without auth), served on a bound listener until shutdown.

use std::convert::Infallible;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// The services one program serves.
#[derive(Debug, Default)]
pub struct GrpcServer {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
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
        for name in &self.names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        health.set_service_status("", ServingStatus::Serving).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(reseller_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let names = self.names;
        let stopping = async move {
            shutdown.cancelled().await;
            // Tell load balancers first, then stop accepting.
            for name in &names {
                health
                    .set_service_status(*name, ServingStatus::NotServing)
                    .await;
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
        };
        Server::builder()
            .layer(tower::util::MapResponseLayer::new(
                too_large_is_resource_exhausted,
            ))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_routes(self.routes.routes())
            .add_service(health_service)
            .add_service(reflection)
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

/// tonic answers an over-sized request with `OUT_OF_RANGE`; the contract (and gRPC's own
/// status-code guide) says `RESOURCE_EXHAUSTED`. Rewrites that one answer.
fn too_large_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers.get("grpc-message").is_some_and(|v| {
        String::from_utf8_lossy(v.as_bytes()).contains("message%20length%20too%20large")
    });
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}
