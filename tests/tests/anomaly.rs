//! ANOMALY(TABLE t, ...) through the real server on real NAB metrics (shared/data): the
//! labelled windows are found, alerts outside them are few, the server's scores are the model
//! crate's scores for the same values, several series run at once, and every bad input gets
//! its SQLSTATE.

use std::collections::HashMap;

use prognos_e2e::{Server, shared_data_dir, sqlstate};
use prognos_models::anomaly::{AnomalySpec, detect, season_phases};
use tokio_postgres::Client;

async fn rows(c: &Client, sql: &str) -> Vec<tokio_postgres::Row> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

/// (id, NAB file, rows): two five-minute metrics and the half-hourly NYC taxi demand, whose
/// windows (marathon, holidays, a blizzard) are only unusual for their time of day and week
/// (with the local level alone, 2 of its 5 windows alerted; its demand is multiplicative, so
/// its deviations are judged on the log scale).
const FILES: [(&str, &str, usize); 3] = [
    (
        "latency",
        "realKnownCause/ec2_request_latency_system_failure.csv",
        4032,
    ),
    (
        "rds",
        "realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv",
        4032,
    ),
    ("taxi", "realKnownCause/nyc_taxi.csv", 10320),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nab_metrics_are_scored_per_series() {
    let Some(shared) = shared_data_dir() else {
        eprintln!("shared/data not found: NAB e2e test skipped");
        return;
    };
    let nab = shared.join("anomaly/nab");
    let windows: HashMap<String, Vec<Vec<String>>> = serde_json::from_str(
        &std::fs::read_to_string(nab.join("labels/combined_windows.json")).expect("labels"),
    )
    .expect("labels json");
    let server = Server::start();
    let c = server.connect().await;
    let mut union = vec![];
    for (host, file, _) in FILES {
        c.batch_execute(&format!(
            "CREATE EXTERNAL TABLE {host}_raw (\"timestamp\" VARCHAR, value DOUBLE) STORED AS CSV \
             LOCATION '{}' OPTIONS ('format.has_header' 'true')",
            nab.join(file).display()
        ))
        .await
        .expect("nab table");
        union.push(format!(
            "SELECT '{host}' AS host, CAST(\"timestamp\" AS TIMESTAMP) AS ts, value FROM {host}_raw"
        ));
    }
    c.batch_execute(&format!(
        "CREATE VIEW metrics AS {}",
        union.join(" UNION ALL ")
    ))
    .await
    .expect("view");

    let got = rows(
        &c,
        "SELECT * FROM ANOMALY(TABLE metrics, time => 'ts', value => 'value', id => 'host') \
         ORDER BY host, ts, value",
    )
    .await;
    // Time first (Grafana plots it as is), then the id, the value and the scores.
    let names: Vec<&str> = got[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "ts",
            "host",
            "value",
            "expected",
            "lower",
            "upper",
            "score",
            "novelty",
            "is_anomaly"
        ]
    );
    for (host, file, len) in FILES {
        let series: Vec<&tokio_postgres::Row> = got
            .iter()
            .filter(|r| r.get::<_, String>(1) == host)
            .collect();
        assert_eq!(series.len(), len, "{host}: one output row per input row");
        let values: Vec<f64> = series.iter().map(|r| r.get(2)).collect();
        // The server's scores are the model crate's for the same values and the seasons their
        // timestamps suggest (daily and weekly where two of them fit).
        let epochs: Vec<i64> = rows(
            &c,
            &format!(
                "SELECT CAST(date_part('epoch', ts) AS BIGINT) FROM metrics \
                 WHERE host = '{host}' ORDER BY ts, value"
            ),
        )
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
        let seasons = season_phases(&epochs, 1_000_000_000, None);
        assert!(!seasons.is_empty(), "{host}: no daily season found");
        let expected = detect(&values, &seasons, &AnomalySpec::default());
        for (i, r) in series.iter().enumerate() {
            let score: f64 = r.get(6);
            assert!((0.0..=1.0).contains(&score));
            assert!((score - expected.score[i]).abs() < 1e-12, "{host} row {i}");
            let novelty: Option<f64> = r.get(7);
            match novelty {
                Some(n) => assert!(
                    n == expected.novelty[i] || (n - expected.novelty[i]).abs() < 1e-12,
                    "{host} row {i}"
                ),
                None => assert!(expected.novelty[i].is_nan(), "{host} row {i}"),
            }
            assert_eq!(
                r.get::<_, bool>(8),
                expected.is_anomaly[i],
                "{host} row {i}"
            );
        }
        if host == "latency" {
            // `season_length => 1` turns the seasons off: the local level alone.
            let plain = rows(
                &c,
                &format!(
                    "SELECT score FROM ANOMALY(TABLE metrics, time => 'ts', value => 'value', \
                     id => 'host', season_length => 1) WHERE host = '{host}' ORDER BY ts, value"
                ),
            )
            .await;
            let local = detect(&values, &[], &AnomalySpec::default());
            assert_eq!(plain.len(), len);
            for (i, r) in plain.iter().enumerate() {
                let score: f64 = r.get(0);
                assert!((score - local.score[i]).abs() < 1e-12, "{host} row {i}");
            }
        }
        // Alerts in the labelled windows, few outside them.
        let times: Vec<String> = rows(
            &c,
            &format!(
                "SELECT CAST(ts AS VARCHAR) FROM ANOMALY(TABLE metrics, time => 'ts', \
                 value => 'value', id => 'host') WHERE host = '{host}' ORDER BY ts, value"
            ),
        )
        .await
        .iter()
        .map(|r| r.get::<_, String>(0).replace('T', " "))
        .collect();
        let in_window = |t: &str| {
            windows[file]
                .iter()
                .any(|w| t >= &w[0][..19] && t <= &w[1][..19])
        };
        // Every labelled window gets an alert.
        for w in &windows[file] {
            let hit = series.iter().zip(&times).any(|(r, t)| {
                r.get::<_, bool>(8) && t.as_str() >= &w[0][..19] && t.as_str() <= &w[1][..19]
            });
            assert!(hit, "{host}: window {w:?} has no alert");
        }
        let outside = series
            .iter()
            .zip(&times)
            .filter(|(r, t)| r.get::<_, bool>(8) && !in_window(t))
            .count();
        assert!(
            outside <= 10,
            "{host}: {outside} alerts outside the windows"
        );
    }

    // A stricter sensitivity alerts no more often.
    let count = |s: &str| {
        format!(
            "SELECT count(*) FROM ANOMALY(TABLE metrics, time => 'ts', value => 'value', \
             id => 'host', sensitivity => {s}) WHERE is_anomaly"
        )
    };
    let loose: i64 = rows(&c, &count("0.99")).await[0].get(0);
    let strict: i64 = rows(&c, &count("0.99999")).await[0].get(0);
    assert!(strict <= loose, "{strict} > {loose}");
    // A shorter cooldown alerts no less often, and `cooldown => 0` alerts wherever the rule
    // holds (the model crate's alerts with that cooldown).
    let with_cooldown = |n: &str| {
        format!(
            "SELECT count(*) FROM ANOMALY(TABLE metrics, time => 'ts', value => 'value', \
             id => 'host', cooldown => {n}) WHERE is_anomaly"
        )
    };
    let default: i64 = rows(&c, &count("0.998")).await[0].get(0);
    let none: i64 = rows(&c, &with_cooldown("0")).await[0].get(0);
    let long: i64 = rows(&c, &with_cooldown("1000")).await[0].get(0);
    assert!(long <= default && default < none, "{long} {default} {none}");

    let cases = [
        (
            "ANOMALY(TABLE metrics, time => 'host', value => 'value')",
            "42804",
        ),
        (
            "ANOMALY(TABLE metrics, time => 'ts', value => 'host')",
            "42804",
        ),
        (
            "ANOMALY(TABLE metrics, time => 'ts', value => 'nope')",
            "42703",
        ),
        (
            "ANOMALY(TABLE metrics, time => 'ts', value => 'value', id => 'nope')",
            "42703",
        ),
        (
            "ANOMALY(TABLE metrics, time => 'ts', value => 'value', sensitivity => 1)",
            "22023",
        ),
        (
            "ANOMALY(TABLE metrics, time => 'ts', value => 'value', horizon => 3)",
            "22023",
        ),
        ("ANOMALY(TABLE metrics, value => 'value')", "22023"),
        (
            "ANOMALY(TABLE metrics, time => 'ts', value => 'value', season_length => -1)",
            "22023",
        ),
        (
            "ANOMALY(TABLE metrics, time => 'ts', value => 'value', season_length => 2.5)",
            "22023",
        ),
        (
            "ANOMALY(TABLE metrics, time => 'ts', value => 'value', season_length => 'day')",
            "22023",
        ),
        (
            "ANOMALY(TABLE metrics, time => 'ts', value => 'value', cooldown => -1)",
            "22023",
        ),
        (
            "ANOMALY(TABLE metrics, time => 'ts', value => 'value', cooldown => 1.5)",
            "22023",
        ),
        ("ANOMALY('some_model')", "42704"),
        ("ANOMALY('some_model', 1)", "42704"),
    ];
    for (from, code) in cases {
        let e = c
            .query(&format!("SELECT * FROM {from}"), &[])
            .await
            .expect_err(from);
        assert_eq!(sqlstate(&e), code, "{from}: {e}");
    }
    assert_eq!(rows(&c, "SELECT 1").await.len(), 1);
}

/// `CREATE MODEL ... DETECT ANOMALIES` (isolation forest) on the telco customers, with two
/// implausible customers added: scored row-wise by `ANOMALY('m', ...)` and `FROM ANOMALY('m',
/// TABLE t)`, kept across a restart, and misuse rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_forest_scores_rows() {
    let mut server = Server::start();
    let c = server.connect().await;
    c.batch_execute(&format!(
        "CREATE EXTERNAL TABLE telco STORED AS CSV LOCATION '{}' \
         OPTIONS ('format.has_header' 'true'); \
         CREATE TABLE customers AS SELECT \"customerID\" AS id, tenure, \
           \"MonthlyCharges\" AS monthly, \"Contract\" AS contract FROM telco; \
         INSERT INTO customers VALUES ('odd-1', 700, 9000.0, 'Month-to-month'), \
           ('odd-2', 0, 5000.0, 'Two year');",
        prognos_e2e::repo_data("telco_customer_churn.csv").display()
    ))
    .await
    .expect("tables");
    c.batch_execute(
        "CREATE MODEL odd DETECT ANOMALIES WITH (num_trees = 200) \
         AS SELECT tenure, monthly, contract FROM customers",
    )
    .await
    .expect("train");
    let m = rows(
        &c,
        "SELECT task, algorithm, train_rows FROM system.models WHERE name = 'odd'",
    )
    .await;
    assert_eq!(m[0].get::<_, String>(0), "anomaly_detection");
    assert_eq!(m[0].get::<_, String>(1), "isolation_forest");
    assert_eq!(m[0].get::<_, i64>(2), 7045);

    let top = rows(
        &c,
        "SELECT id, ANOMALY('odd', tenure, monthly, contract) AS score FROM customers \
         ORDER BY score DESC LIMIT 2",
    )
    .await;
    let mut ids: Vec<String> = top.iter().map(|r| r.get(0)).collect();
    ids.sort();
    assert_eq!(ids, ["odd-1", "odd-2"], "the added customers score highest");
    let range = rows(
        &c,
        "SELECT min(s), max(s), avg(s) FROM (SELECT ANOMALY('odd', tenure, monthly, contract) \
         AS s FROM customers) AS t",
    )
    .await;
    let (lo, hi, mean): (f64, f64, f64) = (range[0].get(0), range[0].get(1), range[0].get(2));
    assert!(
        lo > 0.0 && hi <= 1.0 && (0.3..0.6).contains(&mean),
        "{lo} {hi} {mean}"
    );
    let rel = rows(
        &c,
        "SELECT id, anomaly_score FROM ANOMALY('odd', TABLE customers) ORDER BY anomaly_score DESC LIMIT 1",
    )
    .await;
    assert!(rel[0].get::<_, String>(0).starts_with("odd-"));

    c.batch_execute(
        "CREATE MODEL churn_like PREDICT monthly USING linear AS SELECT tenure, monthly FROM customers",
    )
    .await
    .expect("tabular model");
    let cases = [
        ("SELECT ANOMALY('odd', tenure) FROM customers", "22023"),
        (
            "SELECT ANOMALY('odd', contract, tenure, monthly) FROM customers",
            "42804",
        ),
        (
            "SELECT ANOMALY('churn_like', tenure) FROM customers",
            "22023",
        ),
        (
            "SELECT * FROM ANOMALY('churn_like', TABLE customers)",
            "22023",
        ),
        ("SELECT ANOMALY('nope', tenure) FROM customers", "42704"),
        (
            "CREATE MODEL bad DETECT ANOMALIES USING gbdt AS SELECT tenure FROM customers",
            "22023",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES PREDICT tenure AS SELECT tenure FROM customers",
            "42601",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES AS SELECT tenure FROM customers WHERE false",
            "22000",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES AS SELECT tenure FROM customers LIMIT 1",
            "22000",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES WITH (sample_size = 1) AS SELECT tenure FROM customers",
            "22023",
        ),
        (
            "CREATE MODEL bad USING isolation_forest AS SELECT tenure FROM customers",
            "22023",
        ),
    ];
    for (sql, code) in cases {
        let e = c.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql}: {e}");
    }
    drop(c);
    server.restart();
    let c = server.connect().await;
    let again = rows(
        &c,
        "SELECT id FROM customers ORDER BY ANOMALY('odd', tenure, monthly, contract) DESC LIMIT 1",
    )
    .await;
    assert!(again[0].get::<_, String>(0).starts_with("odd-"));
}

/// Integer times have no clock: a weekly pattern is only followed when `season_length` names
/// it. A Saturday-level value on a Wednesday is unusual for its day but not for the series.
/// (Daily data: the cooldown is 12 days rather than the default 100 points.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn season_length_names_the_season_of_integer_times() {
    let server = Server::start();
    let c = server.connect().await;
    // 40 weeks of daily counts: weekdays about 100, weekends about 30, small wobble.
    let values: Vec<String> = (0..280)
        .map(|t| {
            let base = if t % 7 >= 5 { 30.0 } else { 100.0 };
            let wobble = ((t * 37 % 11) as f64 - 5.0) * 0.6;
            let v = if t == 233 { 30.0 } else { base + wobble };
            format!("({t}, {v})")
        })
        .collect();
    c.batch_execute(&format!(
        "CREATE TABLE visits AS SELECT column1 AS day, column2 AS n FROM (VALUES {})",
        values.join(", ")
    ))
    .await
    .expect("table");
    let alerts = |extra: &str| {
        format!(
            "SELECT day, expected, score FROM ANOMALY(TABLE visits, time => 'day', \
             value => 'n', cooldown => 12{extra}) WHERE is_anomaly ORDER BY day"
        )
    };
    let weekly = rows(&c, &alerts(", season_length => 7")).await;
    let days: Vec<i64> = weekly.iter().map(|r| r.get(0)).collect();
    assert!(days.contains(&233), "weekly: {days:?}");
    let at: &tokio_postgres::Row = weekly
        .iter()
        .find(|r| r.get::<_, i64>(0) == 233)
        .expect("day 233");
    let expected: f64 = at.get(1);
    assert!((expected - 100.0).abs() < 5.0, "expected {expected}");
    assert!(days.len() <= 3, "weekly alerts: {days:?}");
    // Without a season the weekends' drops are the norm and day 233 is one more of them.
    let plain: Vec<i64> = rows(&c, &alerts(""))
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!plain.contains(&233), "no season: {plain:?}");
}

/// `DETECT ANOMALIES ... WITH (labels = 'col')`: 2 000 ordinary rows and 40 far-off ones; 20 of
/// the far-off and 200 ordinary rows are labelled, the rest NULL. The labels column is not a
/// feature; the threshold chosen on the labelled rows flags the unlabelled far-off rows too,
/// `FROM ANOMALY('m', TABLE t)` gains `is_anomaly`, and bad labels are clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_rows_choose_the_anomaly_threshold() {
    let server = Server::start();
    let (c, notices) = server.connect_with_notices().await;
    // Pseudo-random in [0, 1): the fractional part of a large sine.
    let u = |k: u32| {
        format!(
            "(abs(sin(v * {k}.9898)) * 43758.5453 - floor(abs(sin(v * {k}.9898)) * 43758.5453))"
        )
    };
    c.batch_execute(&format!(
        "CREATE TABLE events AS \
         SELECT v, CASE WHEN v >= 2000 THEN 4.0 + {a} ELSE {a} END AS x, \
                CASE WHEN v >= 2000 THEN -3.0 - {b} ELSE {b} END AS y, \
                CASE WHEN v >= 2000 AND v < 2020 THEN 1 WHEN v < 200 THEN 0 ELSE NULL END AS lab \
         FROM generate_series(0, 2039) AS t(v)",
        a = u(12),
        b = u(78)
    ))
    .await
    .expect("events");
    c.batch_execute(
        "CREATE MODEL flagged DETECT ANOMALIES WITH (labels = 'lab') AS SELECT x, y, lab FROM events",
    )
    .await
    .expect("train with labels");
    let said: Vec<String> = notices.take().into_iter().map(|n| n.1).collect();
    assert!(
        said.iter()
            .any(|m| m.contains("labels: 220 labelled row(s), 20 of them anomalies")),
        "{said:?}"
    );
    let metrics = rows(
        &c,
        "SELECT metrics, features FROM system.model_versions WHERE name = 'flagged'",
    )
    .await;
    let m: serde_json::Value = serde_json::from_str(&metrics[0].get::<_, String>(0)).expect("json");
    assert!(m["f1"].as_f64().expect("f1") > 0.95, "{m}");
    let threshold = m["threshold"].as_f64().expect("threshold");
    assert!(
        !metrics[0].get::<_, String>(1).contains("lab"),
        "labels are not a feature"
    );
    // The unlabelled far-off rows are flagged; few ordinary ones are.
    let flagged = rows(
        &c,
        "SELECT v >= 2000 AS far, count(*) FROM ANOMALY('flagged', TABLE events) \
         WHERE is_anomaly GROUP BY v >= 2000 ORDER BY far",
    )
    .await;
    let count = |far: bool| {
        flagged
            .iter()
            .find(|r| r.get::<_, bool>(0) == far)
            .map_or(0, |r| r.get::<_, i64>(1))
    };
    assert_eq!(count(true), 40, "threshold {threshold}");
    assert!(count(false) <= 20, "{} ordinary rows flagged", count(false));
    // The scalar form reads the features only, and scores as the relation does.
    let scalar = rows(
        &c,
        "SELECT count(*) FROM events WHERE ANOMALY('flagged', x, y) >= (SELECT min(anomaly_score) \
         FROM ANOMALY('flagged', TABLE events) WHERE is_anomaly)",
    )
    .await;
    assert_eq!(scalar[0].get::<_, i64>(0), 40 + count(false));
    // A model without labels has no threshold, so no is_anomaly.
    c.batch_execute("CREATE MODEL plain DETECT ANOMALIES AS SELECT x, y FROM events")
        .await
        .expect("plain");
    let e = c
        .query("SELECT is_anomaly FROM ANOMALY('plain', TABLE events)", &[])
        .await
        .expect_err("no is_anomaly");
    assert_eq!(sqlstate(&e), "42703", "{e}");

    for (sql, code) in [
        // No such column.
        (
            "CREATE MODEL bad DETECT ANOMALIES WITH (labels = 'nope') AS SELECT x, y FROM events",
            "42703",
        ),
        // Text labels.
        (
            "CREATE MODEL bad DETECT ANOMALIES WITH (labels = 'l') AS SELECT x, y, 'yes' AS l FROM events",
            "42804",
        ),
        // No labelled anomaly.
        (
            "CREATE MODEL bad DETECT ANOMALIES WITH (labels = 'lab') AS SELECT x, y, lab FROM events WHERE v < 2000",
            "22000",
        ),
        // Labels only.
        (
            "CREATE MODEL bad DETECT ANOMALIES WITH (labels = 'lab') AS SELECT lab FROM events",
            "22000",
        ),
        // A PREDICT model learns from its target.
        (
            "CREATE MODEL bad PREDICT y WITH (labels = 'lab') AS SELECT x, y, lab FROM events",
            "22023",
        ),
    ] {
        let e = c.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql}: {e}");
    }
}

/// `CREATE MODEL m DETECT ANOMALIES IN v TIME ts BY host WITH (labels = 'col')`: two hosts of
/// minute data; host `a` has eight labelled spikes in pairs 30 minutes apart. With the default
/// settings (a 100-point cooldown; the second spike of a pair repeats the first) half of them
/// alert; the settings chosen on the labels find all eight without a false alarm, and
/// `ANOMALY('m', TABLE t)` scores new rows with them, as the model crate does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_incidents_choose_a_series_detectors_settings() {
    let server = Server::start();
    let (c, notices) = server.connect_with_notices().await;
    let spikes = "host = 'a' AND t >= 800 AND (t - 800) % 800 IN (0, 30)";
    c.batch_execute(&format!(
        "CREATE TABLE minutes AS \
         SELECT host, to_timestamp(t * 60) AS ts, \
                50.0 + (abs(sin(t * 12.9898 + length(host))) * 43758.5453 \
                        - floor(abs(sin(t * 12.9898 + length(host))) * 43758.5453)) \
                     + CASE WHEN {spikes} THEN 8.0 + (t / 400) ELSE 0.0 END AS v, \
                host = 'a' AND t >= 800 AND (t - 800) % 800 IN (0, 1, 2, 30, 31, 32) AS incident \
         FROM generate_series(0, 3999) AS g(t) CROSS JOIN (VALUES ('a'), ('bb')) AS h(host)"
    ))
    .await
    .expect("minutes");
    c.batch_execute(
        "CREATE MODEL spikes DETECT ANOMALIES IN v TIME ts BY host \
         WITH (labels = 'incident', season_length = 1) \
         AS SELECT host, ts, v, incident FROM minutes",
    )
    .await
    .expect("train the detector");
    let said: Vec<String> = notices.take().into_iter().map(|n| n.1).collect();
    assert!(
        said.iter().any(|m| m.contains("labels: 8 incident(s)")),
        "{said:?}"
    );
    let version = rows(
        &c,
        "SELECT metrics, algorithm FROM system.model_versions WHERE name = 'spikes'",
    )
    .await;
    let m: serde_json::Value = serde_json::from_str(&version[0].get::<_, String>(0)).expect("json");
    assert_eq!(version[0].get::<_, String>(1), "series_detector");
    assert_eq!(m["found"].as_f64(), Some(8.0), "{m}");
    assert_eq!(m["false_alarms"].as_f64(), Some(0.0), "{m}");
    assert!(m["default_f1"].as_f64().expect("default_f1") < 0.9, "{m}");
    // DESCRIBE MODEL shows the columns and the chosen settings.
    let described: HashMap<String, String> = rows(&c, "DESCRIBE MODEL spikes")
        .await
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, Option<String>>(1).unwrap_or_default(),
            )
        })
        .collect();
    let setting = |k: &str| -> f64 {
        described
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {described:?}"))
    };
    assert_eq!(
        described.get("season_length").map(String::as_str),
        Some("none")
    );
    assert!(setting("cooldown") < 30.0, "{described:?}");
    assert!(
        described.values().any(|v| v == "host (id)"),
        "{described:?}"
    );
    let spec = AnomalySpec {
        sensitivity: setting("sensitivity"),
        novelty_window: setting("novelty_window") as usize,
        novelty_gate: setting("novelty_gate"),
        cooldown: setting("cooldown") as usize,
        ..AnomalySpec::default()
    };

    // Scoring with the model: its columns, ids and settings.
    let scored = rows(
        &c,
        "SELECT host, CAST(extract(epoch FROM ts) AS BIGINT) / 60, v, is_anomaly \
         FROM ANOMALY('spikes', TABLE minutes) ORDER BY host, ts",
    )
    .await;
    assert_eq!(scored.len(), 8000);
    let alerts_at = |host: &str| -> Vec<i64> {
        scored
            .iter()
            .filter(|r| r.get::<_, String>(0) == host && r.get::<_, bool>(3))
            .map(|r| r.get(1))
            .collect()
    };
    let spike_minutes: Vec<i64> = (1..5).flat_map(|k| [800 * k, 800 * k + 30]).collect();
    assert_eq!(alerts_at("a"), spike_minutes);
    assert!(alerts_at("bb").len() <= 1, "{:?}", alerts_at("bb"));
    // The model crate, given the same values and settings, alerts at the same rows.
    let y: Vec<f64> = scored
        .iter()
        .filter(|r| r.get::<_, String>(0) == "a")
        .map(|r| r.get(2))
        .collect();
    let crate_alerts: Vec<i64> = detect(&y, &[], &spec)
        .is_anomaly
        .iter()
        .enumerate()
        .filter(|(_, a)| **a)
        .map(|(t, _)| t as i64)
        .collect();
    assert_eq!(crate_alerts, spike_minutes);
    // The ad hoc function, with the default settings, finds fewer.
    let adhoc: Vec<i64> = rows(
        &c,
        "SELECT CAST(extract(epoch FROM ts) AS BIGINT) / 60 FROM ANOMALY(TABLE minutes, \
         time => 'ts', value => 'v', id => 'host', season_length => 1) \
         WHERE host = 'a' AND is_anomaly",
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect();
    let found = adhoc.iter().filter(|t| spike_minutes.contains(t)).count();
    assert!(found <= 5, "defaults found {found}: {adhoc:?}");

    // A new version without labels keeps the given settings, and the query follows it.
    c.batch_execute(
        "CREATE OR REPLACE MODEL spikes DETECT ANOMALIES IN v TIME ts BY host \
         WITH (cooldown = 100, season_length = 1) AS SELECT host, ts, v FROM minutes",
    )
    .await
    .expect("version 2");
    let v2 = rows(
        &c,
        "SELECT count(*) FROM ANOMALY('spikes', TABLE minutes) WHERE host = 'a' AND is_anomaly",
    )
    .await;
    assert!(v2[0].get::<_, i64>(0) < 8, "{}", v2[0].get::<_, i64>(0));
    // RETRAIN MODEL runs the version's definition again: the same settings.
    c.batch_execute("RETRAIN MODEL spikes")
        .await
        .expect("retrain");
    let v3 = rows(
        &c,
        "SELECT version, metrics FROM system.model_versions WHERE name = 'spikes' ORDER BY version",
    )
    .await;
    assert_eq!(v3.len(), 3);
    assert_eq!(v3[2].get::<_, String>(1), v3[1].get::<_, String>(1));

    for (sql, code) in [
        (
            "CREATE MODEL bad DETECT ANOMALIES IN nope TIME ts AS SELECT ts, v FROM minutes",
            "42703",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES IN host TIME ts AS SELECT ts, host FROM minutes",
            "42804",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES IN v TIME ts USING isolation_forest \
             AS SELECT ts, v FROM minutes",
            "22023",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES IN v TIME ts WITH (horizon = 3) \
             AS SELECT ts, v FROM minutes",
            "22023",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES IN v TIME ts WITH (cooldown = -1) \
             AS SELECT ts, v FROM minutes",
            "22023",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES IN v TIME ts BY host \
             WITH (labels = 'incident', objective = 'auc') AS SELECT * FROM minutes",
            "22023",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES IN v TIME ts WITH (labels = 'incident') \
             AS SELECT ts, v, incident FROM minutes WHERE host = 'bb'",
            "22000",
        ),
        (
            "CREATE MODEL bad DETECT ANOMALIES IN v AS SELECT v FROM minutes",
            "42601",
        ),
        (
            "SELECT * FROM ANOMALY('spikes', TABLE minutes, sensitivity => 0.9)",
            "22023",
        ),
        ("SELECT ANOMALY('spikes', v) FROM minutes", "22023"),
        ("SELECT * FROM PREDICT('spikes', TABLE minutes)", "22023"),
        ("EXPORT MODEL spikes TO 'spikes.onnx'", "22023"),
        (
            "SELECT * FROM ANOMALY('spikes', (SELECT ts, v FROM minutes))",
            "42703",
        ),
        // The objective is checked with the other options, labels or not.
        (
            "CREATE MODEL bad DETECT ANOMALIES IN v TIME ts WITH (objective = 'auc') \
             AS SELECT ts, v FROM minutes",
            "22023",
        ),
    ] {
        let e = c.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql}: {e}");
    }
    // The same connection goes on serving, and no failed statement left a model behind.
    let after = rows(
        &c,
        "SELECT count(*) FROM ANOMALY('spikes', TABLE minutes) WHERE host = 'a'",
    )
    .await;
    assert_eq!(after[0].get::<_, i64>(0), 4000);
    let bad = rows(&c, "SELECT count(*) FROM system.models WHERE name = 'bad'").await;
    assert_eq!(bad[0].get::<_, i64>(0), 0);
}
