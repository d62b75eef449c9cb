//! TLS to PostgreSQL: against a private server that accepts only TLS, with a certificate
//! from a CA the test makes, `sslmode=require` and `verify-full` with the CA work (and
//! `pg_stat_ssl` shows the session encrypted), a wrong CA is refused at once, and a
//! service's pool and migrations run over it; a statement too big for one TLS record
//! does not wait for the server's delayed ACK (`TCP_NODELAY`, see
//! `third_party/README.md`).

use std::time::{Duration, Instant};

use reseller_kit::config::CommonConfig;
use reseller_tests::cluster::postgres::{PostgresServer, make_ca};
use sqlx::{Connection, PgConnection};

/// Whether the session on `conn` is encrypted, as the server sees it.
async fn encrypted(conn: &mut PgConnection) -> (bool, String) {
    sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("pg_stat_ssl")
}

#[tokio::test]
async fn tls_to_postgres_verifies_the_server_against_the_given_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = PostgresServer::start_tls(dir.path())
        .await
        .unwrap_or_else(|e| panic!("the private PostgreSQL did not start: {e:#}"));
    let ca = server.ca_cert().expect("a TLS server has a CA");
    let ca = ca.to_str().expect("path");
    // Database `postgres` as user `postgres`, with `params`.
    let url = |params: &str| format!("{}?{params}", server.url("postgres"));

    // Encrypted without checking, and with the certificate checked against the CA and
    // the host name (the certificate names 127.0.0.1 and localhost).
    for params in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let mut conn = PgConnection::connect(&url(&params))
            .await
            .unwrap_or_else(|e| panic!("{params}: {e}"));
        let (ssl, version) = encrypted(&mut conn).await;
        assert!(ssl, "{params}: not encrypted");
        eprintln!("{params}: encrypted with {version}");
    }
    let localhost =
        url(&format!("sslmode=verify-full&sslrootcert={ca}")).replace("127.0.0.1", "localhost");
    PgConnection::connect(&localhost)
        .await
        .expect("verify-full via localhost");

    // The server takes no plain connections (hostssl only), so TLS is not optional here.
    PgConnection::connect(&url("sslmode=disable"))
        .await
        .expect_err("a plain connection");

    // A certificate from another CA is refused, and the program does not wait for it.
    let other = tempfile::tempdir().unwrap();
    let (wrong_ca, _) = make_ca(other.path(), "other-ca").expect("another CA");
    let wrong = url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        wrong_ca.display()
    ));
    let err = PgConnection::connect(&wrong)
        .await
        .expect_err("the wrong CA");
    eprintln!("wrong CA: {err}");
    let config = CommonConfig::new(&wrong, "nats://127.0.0.1:4222", "secret");
    let started = Instant::now();
    let err = reseller_kit::db::connect(&config)
        .await
        .expect_err("the wrong CA");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    eprintln!("the service refuses at once: {err:#}");

    // A service's pool and migrations over verify-full.
    let config = CommonConfig::new(
        &url(&format!("sslmode=verify-full&sslrootcert={ca}")),
        "nats://127.0.0.1:4222",
        "secret",
    );
    let pool = reseller_kit::db::connect(&config)
        .await
        .expect("pool over TLS");
    reseller_kit::db::migrate(&pool, &reporting_service::MIGRATOR, "reporting-service")
        .await
        .expect("migrations over TLS");
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        encrypted(&mut conn).await.0,
        "the pool's sessions are encrypted"
    );
}

/// A projection writes 1,000 devices in one statement, some 60 KB of parameters: over
/// TLS that is several records, and without `TCP_NODELAY` the last one waits for the
/// server's delayed ACK (40 ms on Linux) on every statement. Over a healthy connection on
/// loopback such a statement takes about a millisecond; the median of a few must stay far
/// below the 40 ms a stalled one takes.
#[tokio::test]
async fn a_big_statement_over_tls_does_not_wait_for_a_delayed_ack() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = PostgresServer::start_tls(dir.path())
        .await
        .unwrap_or_else(|e| panic!("the private PostgreSQL did not start: {e:#}"));
    let ca = server.ca_cert().expect("a TLS server has a CA");
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.url("postgres"),
        ca.display()
    );
    let config = CommonConfig::new(&url, "nats://127.0.0.1:4222", "secret");
    let pool = reseller_kit::db::connect(&config)
        .await
        .expect("pool over TLS");
    let mut conn = pool.acquire().await.unwrap();
    assert!(encrypted(&mut conn).await.0, "the session is encrypted");

    // 2,000 identifiers of 40 characters: about 90 KB in one Bind message.
    let ids: Vec<String> = (0..2_000).map(|i| format!("{i:040}")).collect();
    let mut took = Vec::new();
    for _ in 0..11 {
        let started = Instant::now();
        let n: i32 = sqlx::query_scalar("SELECT cardinality($1::text[])")
            .bind(&ids)
            .fetch_one(&mut *conn)
            .await
            .expect("the statement");
        took.push(started.elapsed());
        assert_eq!(n, 2_000);
    }
    took.sort();
    let median = took[took.len() / 2];
    eprintln!("round trips of a 90 KB statement over TLS: {took:?}");
    assert!(
        median < Duration::from_millis(20),
        "a 90 KB statement over TLS took {median:?} (median of {}): the connection waits \
         for delayed ACKs (TCP_NODELAY is off)",
        took.len()
    );
}
