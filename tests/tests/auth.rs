//! Authentication and roles over pgwire, against the real server process: SCRAM-SHA-256
//! logins (tokio-postgres), trust on loopback, refusing to start unprotected on another
//! address, role statements and their privilege rules, and TLS through psql.

use std::process::Command;

use prognos_e2e::{Server, make_certificates, prognos_bin, rows_of, sqlstate};
use tokio_postgres::NoTls;

async fn login(
    server: &Server,
    user: &str,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut conn = format!(
        "host={} port={} user={user} dbname=prognos",
        server.pg.ip(),
        server.pg.port()
    );
    if let Some(p) = password {
        conn.push_str(&format!(" password='{p}'"));
    }
    let (client, connection) = tokio_postgres::connect(&conn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn one_value(c: &tokio_postgres::Client, sql: &str) -> Option<String> {
    let rows = c.simple_query(sql).await.expect(sql);
    rows_of(&rows).into_iter().next().and_then(|r| r[0].clone())
}

async fn failure(c: &tokio_postgres::Client, sql: &str) -> String {
    let e = c.batch_execute(sql).await.expect_err(sql);
    sqlstate(&e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_checked_with_scram_and_roles_follow_postgres_rules() {
    let mut server = Server::start_with(false, vec![("PROGNOS_PASSWORD".into(), "boot pw".into())]);
    let admin = login(&server, "prognos", Some("boot pw"))
        .await
        .expect("superuser logs in");
    assert_eq!(
        one_value(&admin, "SELECT current_user").await.as_deref(),
        Some("prognos")
    );
    assert_eq!(
        one_value(&admin, "SHOW is_superuser").await.as_deref(),
        Some("on")
    );

    let wrong = login(&server, "prognos", Some("boot"))
        .await
        .expect_err("wrong");
    assert_eq!(sqlstate(&wrong), "28P01", "{wrong}");
    let message = wrong.as_db_error().map(|d| d.message().to_string());
    assert_eq!(
        message.as_deref(),
        Some("password authentication failed for user \"prognos\"")
    );
    let unknown = login(&server, "nobody", Some("x"))
        .await
        .expect_err("unknown");
    assert_eq!(sqlstate(&unknown), "28000", "{unknown}");

    admin
        .batch_execute(
            "CREATE USER alice WITH PASSWORD 'alice pw'; CREATE ROLE readers; \
             CREATE USER nopass",
        )
        .await
        .expect("create roles");
    assert_eq!(failure(&admin, "CREATE ROLE alice").await, "42710");
    assert_eq!(failure(&admin, "CREATE ROLE pg_mine").await, "42939");
    assert_eq!(failure(&admin, "DROP ROLE prognos").await, "55006");
    assert_eq!(failure(&admin, "DROP ROLE ghost").await, "42704");
    assert_eq!(failure(&admin, "CREATE ROLE r CREATEDB").await, "0A000");
    assert_eq!(failure(&admin, "SET is_superuser = on").await, "55P02");
    admin
        .batch_execute("CREATE ROLE IF NOT EXISTS readers; DROP ROLE IF EXISTS ghost")
        .await
        .expect("IF [NOT] EXISTS");

    let alice = login(&server, "alice", Some("alice pw"))
        .await
        .expect("alice logs in");
    assert_eq!(
        one_value(&alice, "SELECT session_user").await.as_deref(),
        Some("alice")
    );
    assert_eq!(
        one_value(&alice, "SHOW is_superuser").await.as_deref(),
        Some("off")
    );
    // Only superusers manage roles; anyone may change their own password.
    assert_eq!(failure(&alice, "CREATE ROLE mallory").await, "42501");
    assert_eq!(failure(&alice, "ALTER USER alice SUPERUSER").await, "42501");
    assert_eq!(
        failure(&alice, "ALTER USER prognos PASSWORD 'x'").await,
        "42501"
    );
    assert_eq!(failure(&alice, "DROP ROLE readers").await, "42501");
    alice
        .batch_execute("ALTER USER alice WITH PASSWORD 'new pw'")
        .await
        .expect("own password");
    let old = login(&server, "alice", Some("alice pw"))
        .await
        .expect_err("old");
    assert_eq!(sqlstate(&old), "28P01");
    login(&server, "alice", Some("new pw"))
        .await
        .expect("new password works");

    // A role without LOGIN, and a login role without a password, cannot log in.
    let r = login(&server, "readers", Some("x"))
        .await
        .expect_err("nologin");
    assert_eq!(sqlstate(&r), "28000", "{r}");
    let r = login(&server, "nopass", Some("x"))
        .await
        .expect_err("no password");
    assert_eq!(sqlstate(&r), "28P01", "{r}");

    // Nothing of a password is stored but its SCRAM verifier; roles survive a restart.
    let stored = std::fs::read_to_string(server.data_dir.join("roles.json")).expect("roles");
    assert!(!stored.contains("new pw") && !stored.contains("boot pw"));
    assert!(stored.contains("SCRAM-SHA-256$4096:"), "{stored}");
    drop((admin, alice));
    server.restart();
    let admin = login(&server, "prognos", Some("boot pw"))
        .await
        .expect("superuser after restart");
    login(&server, "alice", Some("new pw"))
        .await
        .expect("alice after restart");
    admin
        .batch_execute("ALTER ROLE alice NOLOGIN")
        .await
        .expect("nologin");
    let r = login(&server, "alice", Some("new pw"))
        .await
        .expect_err("nologin");
    assert_eq!(sqlstate(&r), "28000");
    admin
        .batch_execute("ALTER ROLE alice RENAME TO alicia; ALTER ROLE alicia LOGIN")
        .await
        .expect("rename");
    login(&server, "alicia", Some("new pw"))
        .await
        .expect("a renamed role keeps its password");
    admin.batch_execute("DROP USER alicia").await.expect("drop");
    let r = login(&server, "alicia", Some("new pw"))
        .await
        .expect_err("dropped");
    assert_eq!(sqlstate(&r), "28000");
    // The server is still up for everyone else.
    assert_eq!(one_value(&admin, "SELECT 1").await.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_on_loopback_takes_the_role_a_client_names() {
    let server = Server::start();
    let admin = login(&server, "prognos", None).await.expect("trusted");
    let unknown = login(&server, "nobody", None).await.expect_err("unknown");
    assert_eq!(sqlstate(&unknown), "28000", "{unknown}");
    admin
        .batch_execute("CREATE USER bob")
        .await
        .expect("create bob");
    let bob = login(&server, "bob", None).await.expect("bob is trusted");
    assert_eq!(
        one_value(&bob, "SELECT current_user").await.as_deref(),
        Some("bob")
    );
    assert_eq!(failure(&bob, "CREATE ROLE eve").await, "42501");
}

/// The server's exit status and standard error when it refuses to start.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(prognos_bin());
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--no-demo")
        .args(["--http-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("PROGNOS_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run prognos");
    assert!(!out.status.success(), "started: {out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("prognos ready"),
        "{out:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unprotected_server_refuses_to_listen_beyond_loopback() {
    let err = refused_start(
        &["--pg-listen", "0.0.0.0:0", "--flight-listen", "127.0.0.1:0"],
        &[],
    );
    assert!(err.contains("refusing to listen on 0.0.0.0"), "{err}");
    assert!(err.contains("auth = \"none\""), "{err}");

    let err = refused_start(
        &[
            "--pg-listen",
            "127.0.0.1:0",
            "--flight-listen",
            "127.0.0.1:0",
        ],
        &[("PROGNOS__AUTH", "scram-sha-256")],
    );
    assert!(err.contains("no role has one"), "{err}");
}

fn psql(conninfo: &str, sql: &str) -> (bool, String) {
    let out = Command::new("psql")
        .args(["-X", "-At", "-d", conninfo, "-c", sql])
        .env("PGPASSWORD", "tls pw")
        .output()
        .expect("psql");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn psql_connects_over_tls_and_verifies_the_certificate() {
    let certs = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = make_certificates(certs.path());
    let server = Server::start_with(
        false,
        vec![
            ("PROGNOS_PASSWORD".into(), "tls pw".into()),
            ("PROGNOS__TLS__CERT_FILE".into(), cert),
            ("PROGNOS__TLS__KEY_FILE".into(), key),
        ],
    );
    let port = server.pg.port();
    let base = format!("host=localhost port={port} user=prognos dbname=prognos");
    let (ok, out) = psql(&format!("{base} sslmode=require"), "SELECT 41 + 1");
    assert!(ok && out.trim() == "42", "{out}");
    let (ok, out) = psql(
        &format!("{base} sslmode=verify-full sslrootcert={ca}"),
        "SELECT current_user",
    );
    assert!(ok && out.trim() == "prognos", "{out}");
    // A client that trusts another CA refuses the server.
    let other = tempfile::tempdir().expect("tmp");
    let (other_ca, _, _) = make_certificates(other.path());
    let (ok, out) = psql(
        &format!("{base} sslmode=verify-full sslrootcert={other_ca}"),
        "SELECT 1",
    );
    assert!(!ok && out.contains("certificate verify failed"), "{out}");
    // Without TLS the server refuses the connection (tls.require, on by default).
    let (ok, out) = psql(&format!("{base} sslmode=disable"), "SELECT 1");
    assert!(!ok && out.contains("no encryption"), "{out}");
}
