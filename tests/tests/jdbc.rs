//! pgjdbc (Debian `libpostgresql-jdbc-java`) through a small Java program.

use std::path::Path;
use std::process::Command;

use prognos_e2e::Server;

const JAR: &str = "/usr/share/java/postgresql.jar";

/// `JdbcSmoke.java` compiled into a temporary folder: the folder (keep it alive) and the
/// class path; `None` (after checking that CI does not require them) without pgjdbc or a JDK.
fn compiled() -> Option<(tempfile::TempDir, String)> {
    let required = prognos_e2e::clients_required();
    if !Path::new(JAR).exists() || Command::new("javac").arg("-version").output().is_err() {
        assert!(!required, "pgjdbc ({JAR}) and a JDK are required in CI");
        eprintln!("pgjdbc or javac missing; skipping");
        return None;
    }
    let build = tempfile::tempdir().expect("tmp");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("jdbc/JdbcSmoke.java");
    let status = Command::new("javac")
        .args(["-d"])
        .arg(build.path())
        .arg(&src)
        .status()
        .expect("javac");
    assert!(status.success(), "javac failed");
    let cp = format!("{}:{JAR}", build.path().display());
    Some((build, cp))
}

/// Runs `JdbcSmoke` with `args` and checks it passed.
fn smoke(cp: &str, args: &[&str]) {
    let out = Command::new("java")
        .args(["-cp", cp, "JdbcSmoke"])
        .args(args)
        .output()
        .expect("java");
    assert!(
        out.status.success(),
        "JdbcSmoke failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pgjdbc_connects_reads_metadata_and_queries() {
    let Some((_build, cp)) = compiled() else {
        return;
    };
    let server = Server::start_with_demo();
    let url = format!(
        "jdbc:postgresql://{}:{}/prognos",
        server.pg.ip(),
        server.pg.port()
    );
    smoke(&cp, &[&url]);
}

/// pgjdbc with `ssl=true` and `sslmode=verify-full` against the server's certificate, logging
/// in with a SCRAM-SHA-256 password (a wrong one gets `28P01`).
#[test]
fn pgjdbc_connects_over_tls_with_a_password() {
    let Some((_build, cp)) = compiled() else {
        return;
    };
    let certs = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = prognos_e2e::make_certificates(certs.path());
    let server = Server::start_with(
        false,
        vec![
            ("PROGNOS_PASSWORD".into(), "jdbc pw".into()),
            ("PROGNOS__TLS__CERT_FILE".into(), cert),
            ("PROGNOS__TLS__KEY_FILE".into(), key),
        ],
    );
    let url = format!(
        "jdbc:postgresql://localhost:{}/prognos?ssl=true&sslmode=verify-full&sslrootcert={ca}",
        server.pg.port()
    );
    smoke(&cp, &[&url, "prognos", "jdbc pw"]);
}
