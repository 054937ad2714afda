//! The Grafana dashboards of `dashboards/`, checked without Grafana (it does not install
//! here): every query of the Postgres dashboard has its template variables and macros
//! expanded as Grafana's PostgreSQL data source expands them, runs through the real server
//! on the demo data (plus a logged classifier and a forecasting model), and must return the
//! shape its panel reads; every series the Prometheus dashboard reads must be on `/metrics`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use prognos_e2e::Server;
use regex::{Captures, Regex};
use serde_json::Value;
use tokio_postgres::types::Type;

fn dashboard(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../dashboards")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("dashboard file");
    serde_json::from_str(&text).expect("dashboard JSON")
}

/// Template variables as Grafana's frontend replaces them before a query is sent: `$name`
/// (the longest word after `$`), `${name}` and `[[name]]`; built-in `$__…` names are left to
/// the macro engine.
fn expand_variables(sql: &str, values: &BTreeMap<String, String>) -> String {
    let re = Regex::new(r"\$(\w+)|\[\[(\w+)\]\]|\$\{(\w+)\}").expect("regex");
    re.replace_all(sql, |c: &Captures| {
        let name = c
            .get(1)
            .or_else(|| c.get(2))
            .or_else(|| c.get(3))
            .map(|m| m.as_str())
            .unwrap_or_default();
        if name.starts_with("__") {
            return c[0].to_string();
        }
        values
            .get(name)
            .unwrap_or_else(|| panic!("unknown variable {name} in {sql}"))
            .clone()
    })
    .into_owned()
}

/// Grafana's PostgreSQL macro engine (`pkg/tsdb/grafana-postgresql-datasource/macros.go`):
/// `$__name(args)` with the arguments up to the first `)`, split on commas and trimmed.
fn expand_macros(sql: &str, from: &str, to: &str) -> String {
    let re = Regex::new(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)").expect("regex");
    re.replace_all(sql, |c: &Captures| {
        let args: Vec<String> = c[2].split(',').map(|a| a.trim().to_string()).collect();
        let seconds = |a: &str| -> u64 {
            let a = a.trim_matches('\'');
            let (n, unit) = a.split_at(a.len() - 1);
            let n: u64 = n.parse().expect("interval");
            n * match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                other => panic!("interval unit {other}"),
            }
        };
        match &c[1] {
            "__time" => format!("{} AS \"time\"", args[0]),
            "__timeEpoch" => format!("extract(epoch from {}) as \"time\"", args[0]),
            "__timeFilter" => format!("{} BETWEEN '{from}' AND '{to}'", args[0]),
            "__timeFrom" => format!("'{from}'"),
            "__timeTo" => format!("'{to}'"),
            "__timeGroup" | "__timeGroupAlias" => {
                let s = seconds(&args[1]);
                let group = format!("floor(extract(epoch from {})/{s})*{s}", args[0]);
                if &c[1] == "__timeGroupAlias" {
                    format!("{group} AS \"time\"")
                } else {
                    group
                }
            }
            other => panic!("macro {other} is not one Grafana's PostgreSQL data source has"),
        }
    })
    .into_owned()
}

fn is_number(t: &Type) -> bool {
    [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
    ]
    .contains(t)
}

fn is_time(t: &Type) -> bool {
    is_number(t) || [Type::TIMESTAMP, Type::TIMESTAMPTZ, Type::DATE].contains(t)
}

fn is_text(t: &Type) -> bool {
    [Type::TEXT, Type::VARCHAR].contains(t)
}

async fn until_logged(c: &tokio_postgres::Client, sql: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let got: i64 = c.query_one(sql, &[]).await.expect(sql).get(0);
        if got >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{sql} never reached {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_panel_runs_and_returns_its_shape() {
    let server = Server::start_with_demo();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE MODEL churn PREDICT churned USING gbdt \
             AS SELECT plan, tenure_months, monthly_charges, support_calls, churned FROM customers; \
         ALTER MODEL churn SET LOGGING (sample = 1, key = 'customer_id'); \
         ALTER MODEL churn SET OUTCOMES FROM \
             (SELECT customer_id AS key, churned AS actual, now() AS ts FROM customers); \
         CREATE MODEL demand FORECAST sales TIME day BY store WITH (horizon = 14) \
             AS SELECT day, store, sales FROM daily_sales; \
         RETRAIN MODEL churn",
    )
    .await
    .expect("models");
    let logged: i64 = c
        .query_one(
            "SELECT count(PREDICT('churn', plan, tenure_months, monthly_charges, support_calls)) \
             FROM customers",
            &[],
        )
        .await
        .expect("predict")
        .get(0);
    until_logged(&c, "SELECT count(*) FROM churn_predictions", logged).await;

    let d = dashboard("prognos-models.json");
    // A range that holds the demo data (2025) and the predictions just logged.
    let from = "2024-01-01T00:00:00Z";
    let to = (std::time::SystemTime::now() + Duration::from_secs(86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| {
            let secs = d.as_secs() as i64;
            datafusion::arrow::temporal_conversions::timestamp_s_to_datetime(secs)
                .expect("now")
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .expect("clock");
    // Variables: query variables must list something; the model ones are set to ours.
    let mut values = BTreeMap::new();
    let chosen = BTreeMap::from([("model", "churn"), ("forecast_model", "demand")]);
    for v in d["templating"]["list"].as_array().expect("variables") {
        let name = v["name"].as_str().expect("name");
        match v["type"].as_str() {
            Some("textbox") => {
                values.insert(name.to_string(), v["query"].as_str().expect("value").into());
            }
            Some("query") => {
                let rows = c
                    .simple_query(v["query"].as_str().expect("query"))
                    .await
                    .unwrap_or_else(|e| panic!("variable {name}: {e}"));
                let listed = prognos_e2e::rows_of(&rows);
                let want = chosen[name];
                assert!(
                    listed.iter().any(|r| r[0].as_deref() == Some(want)),
                    "variable {name} lists {listed:?}"
                );
                values.insert(name.to_string(), want.to_string());
            }
            _ => {}
        }
    }
    let mut ran = 0;
    for panel in d["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("title");
        for t in panel["targets"].as_array().expect("targets") {
            let raw = t["rawSql"].as_str().expect("rawSql");
            let sql = expand_macros(&expand_variables(raw, &values), from, &to);
            let stmt = c
                .prepare(&sql)
                .await
                .unwrap_or_else(|e| panic!("{title}: {sql}: {e:?}"));
            let rows = c
                .query(&stmt, &[])
                .await
                .unwrap_or_else(|e| panic!("{title}: {sql}: {e:?}"));
            assert!(!rows.is_empty(), "{title}: no rows from {sql}");
            let cols = stmt.columns();
            if t["format"] == "time_series" {
                // Grafana reads `time`, an optional `metric` naming the series, and numbers.
                assert_eq!(cols[0].name(), "time", "{title}");
                assert!(
                    is_time(cols[0].type_()),
                    "{title}: time is {}",
                    cols[0].type_()
                );
                for col in &cols[1..] {
                    if col.name() == "metric" {
                        assert!(is_text(col.type_()), "{title}: metric is {}", col.type_());
                    } else {
                        assert!(
                            is_number(col.type_()),
                            "{title}: {} is {}",
                            col.name(),
                            col.type_()
                        );
                    }
                }
            } else if panel["type"] == "bargauge" {
                assert!(cols.iter().any(|col| is_number(col.type_())), "{title}");
            }
            ran += 1;
        }
    }
    assert_eq!(ran, 10, "every query of the dashboard ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_prometheus_series_is_on_metrics() {
    let mut server = Server::start_with(
        false,
        vec![("PROGNOS__MODELS__RULE_CHECK_SECONDS".into(), "1".into())],
    );
    let c = server.connect().await;
    c.batch_execute(prognos_e2e::CHURN_SETUP)
        .await
        .expect("setup");
    c.batch_execute(
        "CREATE MODEL broken PREDICT churned USING logistic WITH (gate = 'none') \
             AS SELECT spend, visits, churned FROM customers; \
         ALTER MODEL broken SET FALLBACK 'churn'",
    )
    .await
    .expect("models");
    drop(c);
    // A model that fails (its artifact damaged) and a fallback that answers for it.
    let artifact = server.data_dir.join("models/broken/v0001/artifact.json");
    std::fs::write(&artifact, b"{\"garbage").expect("corrupt");
    server.restart();
    let c = server.connect().await;
    c.batch_execute(
        "SELECT PREDICT('broken', spend, visits) FROM customers; \
         ALTER MODEL churn SET CACHE (entries = 10); \
         SELECT PREDICT('churn', 1.0, 2.0); SELECT PREDICT('churn', 1.0, 2.0); \
         ALTER MODEL churn SET LOGGING (sample = 1, key = 'customer_id'); \
         ALTER MODEL churn SET OUTCOMES FROM \
             (SELECT customer_id AS key, churned AS actual FROM customers); \
         ALTER MODEL churn SET RETRAIN WHEN drift > 0.5; \
         SELECT max(PREDICT('churn', spend + 500, visits)) FROM customers",
    )
    .await
    .expect("activity");
    let d = dashboard("prognos-prometheus.json");
    let names = Regex::new(r"prognos_[a-z_]+").expect("regex");
    let mut wanted = std::collections::BTreeSet::new();
    for panel in d["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for m in names.find_iter(expr) {
                let n = m.as_str();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s))
                    .unwrap_or(n);
                wanted.insert(base.to_string());
            }
        }
    }
    assert!(wanted.len() >= 12, "{wanted:?}");
    // The alert and the retrain it starts come within a few monitor passes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = prognos_e2e::http_get(server.http, "/metrics");
        assert_eq!(status, 200);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|n| !text.contains(&format!("# TYPE {n} ")))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not on /metrics: {missing:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
