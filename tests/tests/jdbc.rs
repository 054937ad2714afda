//! pgjdbc (Debian `libpostgresql-jdbc-java`) through a small Java program.

use std::path::Path;
use std::process::Command;

use prognos_e2e::Server;

const JAR: &str = "/usr/share/java/postgresql.jar";

#[test]
fn pgjdbc_connects_reads_metadata_and_queries() {
    let required = prognos_e2e::clients_required();
    if !Path::new(JAR).exists() || Command::new("javac").arg("-version").output().is_err() {
        assert!(!required, "pgjdbc ({JAR}) and a JDK are required in CI");
        eprintln!("pgjdbc or javac missing; skipping");
        return;
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
    let server = Server::start_with_demo();
    let url = format!(
        "jdbc:postgresql://{}:{}/prognos",
        server.pg.ip(),
        server.pg.port()
    );
    let cp = format!("{}:{JAR}", build.path().display());
    let out = Command::new("java")
        .args(["-cp", &cp, "JdbcSmoke", &url])
        .output()
        .expect("java");
    assert!(
        out.status.success(),
        "JdbcSmoke failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
