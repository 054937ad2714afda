//! psql (the real client binary): meta-commands and `\copy`.

use std::process::Command;

use prognos_e2e::Server;

fn psql(server: &Server, args: &[&str]) -> Option<(bool, String, String)> {
    let out = match Command::new("psql")
        .arg(server.pg_url())
        .args(["-X", "-v", "ON_ERROR_STOP=1", "--no-psqlrc"])
        .args(args)
        .output()
    {
        Ok(o) => o,
        Err(e) if !prognos_e2e::clients_required() => {
            eprintln!("psql not available ({e}); skipping");
            return None;
        }
        Err(e) => panic!("psql not available: {e}"),
    };
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn psql_meta_commands_work() {
    let server = Server::start_with_demo();
    let Some((ok, out, err)) = psql(&server, &["-c", "\\dt"]) else {
        return;
    };
    assert!(ok, "\\dt failed: {err}");
    for t in ["customers", "daily_sales", "service_metrics"] {
        assert!(out.contains(t), "\\dt lacks {t}:\n{out}");
    }
    let (ok, out, err) = psql(&server, &["-c", "\\d customers"]).expect("psql");
    assert!(ok, "\\d failed: {err}");
    assert!(
        out.contains("monthly_charges") && out.contains("churned"),
        "\\d output:\n{out}"
    );
    for cmd in ["\\dn", "\\l", "\\df", "\\dv"] {
        let (ok, out, err) = psql(&server, &["-c", cmd]).expect("psql");
        assert!(ok, "{cmd} failed: {err}\n{out}");
    }
    let (ok, out, _) = psql(&server, &["-c", "\\dn"]).expect("psql");
    assert!(ok && out.contains("public"), "\\dn:\n{out}");
}

#[test]
fn psql_du_lists_roles_and_memberships_and_dt_only_visible_tables() {
    let server = Server::start_with_demo();
    let Some((ok, _, err)) = psql(
        &server,
        &[
            "-c",
            "CREATE USER alice; CREATE ROLE analysts; GRANT analysts TO alice; \
             GRANT SELECT ON customers TO analysts",
        ],
    ) else {
        return;
    };
    assert!(ok, "setup: {err}");
    let (ok, out, err) = psql(&server, &["-c", "\\du"]).expect("psql");
    assert!(ok, "\\du failed: {err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("\\du lacks {name}:\n{out}"))
            .to_string()
    };
    assert!(line("alice").contains("{analysts}"), "{out}");
    assert!(line("analysts").contains("Cannot login"), "{out}");
    assert!(line("prognos").contains("Superuser"), "{out}");
    assert!(
        !out.contains("pg_read_all_data"),
        "predefined roles are hidden:\n{out}"
    );
    // alice sees the table granted to her role, and no other.
    let url = server.pg_url().replace("prognos@", "alice@");
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "--no-psqlrc", "-c", "\\dt"])
        .output()
        .expect("psql");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("customers"), "{text}");
    assert!(!text.contains("daily_sales"), "{text}");
    // \dt shows each table's owner, and pg_class.relacl its grants as PostgreSQL writes them.
    let Some((ok, _, err)) = psql(
        &server,
        &[
            "-c",
            "CREATE TABLE notes (n int); ALTER TABLE notes OWNER TO alice; \
             GRANT SELECT, INSERT ON notes TO PUBLIC",
        ],
    ) else {
        return;
    };
    assert!(ok, "owner: {err}");
    let (ok, out, err) = psql(&server, &["-c", "\\dt"]).expect("psql");
    assert!(ok, "\\dt failed: {err}");
    let owner = |table: &str| {
        out.lines()
            .find(|l| l.split('|').nth(1).map(str::trim) == Some(table))
            .and_then(|l| l.split('|').nth(3))
            .map(|o| o.trim().to_string())
            .unwrap_or_else(|| panic!("\\dt lacks {table}:\n{out}"))
    };
    assert_eq!(owner("notes"), "alice", "{out}");
    assert_eq!(owner("customers"), "prognos", "{out}");
    let (ok, out, err) = psql(
        &server,
        &[
            "-At",
            "-c",
            "SELECT relname, relacl FROM pg_class WHERE relname IN ('customers', 'notes', 'daily_sales') ORDER BY 1",
        ],
    )
    .expect("psql");
    assert!(ok, "relacl: {err}");
    assert_eq!(
        out.trim(),
        "customers|{prognos=arwdD/prognos,analysts=r/prognos}\n\
         daily_sales|\n\
         notes|{alice=arwdD/alice,=ar/alice}"
    );
}

#[test]
fn psql_copy_from_and_to() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        "id,name,amount\n1,alpha,1.5\n2,\"be,ta\",2.5\n3,,\n",
    )
    .expect("csv");
    let Some((ok, _, err)) = psql(
        &server,
        &[
            "-c",
            "CREATE TABLE loaded (id BIGINT, name VARCHAR, amount DOUBLE)",
        ],
    ) else {
        return;
    };
    assert!(ok, "{err}");
    let copy = format!(
        "\\copy loaded FROM '{}' WITH (FORMAT csv, HEADER true)",
        input.display()
    );
    let (ok, out, err) = psql(&server, &["-c", &copy]).expect("psql");
    assert!(ok, "\\copy from failed: {err}\n{out}");
    assert!(out.contains("COPY 3"), "{out}");
    let (ok, out, err) = psql(
        &server,
        &[
            "-A",
            "-t",
            "-c",
            "SELECT id, name, amount FROM loaded ORDER BY id",
        ],
    )
    .expect("psql");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1|alpha|1.5\n2|be,ta|2.5\n3||");

    let output = dir.path().join("out.csv");
    let copy = format!(
        "\\copy (SELECT id, name FROM loaded ORDER BY id) TO '{}' WITH (FORMAT csv)",
        output.display()
    );
    let (ok, _, err) = psql(&server, &["-c", &copy]).expect("psql");
    assert!(ok, "\\copy to failed: {err}");
    let text = std::fs::read_to_string(&output).expect("out.csv");
    assert_eq!(text, "1,alpha\n2,\"be,ta\"\n3,\n");
}

/// An example's output with what varies between runs replaced: the data dir's path, creation
/// times (`2026-12-06T06:51:43Z`) and training times (`train_seconds | 0.086`).
fn normalize_run(out: &str, data_dir: &std::path::Path) -> String {
    let dir = data_dir.display().to_string();
    let times = regex::Regex::new(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z").expect("regex");
    let seconds = regex::Regex::new(r"(train_seconds\s*\|\s*)[0-9.]+").expect("regex");
    let out = out
        .replace(&dir, "<data_dir>")
        .replace(dir.trim_start_matches('/'), "<data_dir>");
    let out = times.replace_all(&out, "<time>");
    seconds.replace_all(&out, "${1}<seconds>").into_owned()
}

#[test]
fn sql_examples_run() {
    let server = Server::start_with_demo();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("sql/examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let bless = std::env::var("PROGNOS_BLESS").is_ok();
    for f in files {
        let path = f.display().to_string();
        let Some((ok, out, err)) = psql(&server, &["-f", &path]) else {
            return;
        };
        assert!(ok, "{path} failed: {err}\n{out}");
        assert!(!err.contains("ERROR"), "{path}: {err}");
        // The output must be what the example's `.expected` file shows (`PROGNOS_BLESS=1`
        // writes it), up to what varies between runs.
        let got = normalize_run(&out, &server.data_dir);
        let expected_path = f.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).expect("write .expected");
            continue;
        }
        let want = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        if got != want {
            let first = got
                .lines()
                .zip(want.lines())
                .position(|(g, w)| g != w)
                .unwrap_or(got.lines().count().min(want.lines().count()));
            panic!(
                "{path}: output differs from {} at line {}:\n got: {:?}\nwant: {:?}",
                expected_path.display(),
                first + 1,
                got.lines().nth(first),
                want.lines().nth(first)
            );
        }
    }
    // The export of 02_tables_and_files.sql landed in the data dir's files/ folder.
    assert!(
        server
            .data_dir
            .join("files/exports/weekly_sales.parquet")
            .exists()
    );
}
