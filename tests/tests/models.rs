//! CREATE MODEL / PREDICT through the real server over the Postgres wire protocol, on real
//! data: quality floors, persistence, corrupted artifacts, cancellation and bad input.

use std::time::Duration;

use prognos_e2e::{Server, repo_data, rows_of, shared_data_dir};
use tokio_postgres::Client;

async fn query(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    rows_of(
        &c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    )
}

async fn scalar(c: &Client, sql: &str) -> String {
    query(c, sql)
        .await
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_else(|| panic!("{sql}: no value"))
}

async fn sqlstate_of(c: &Client, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(_) => panic!("{sql}: expected an error"),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| format!("no sqlstate: {e}")),
    }
}

/// Features of the telco data, `TotalCharges` parsed as the dataset's README says.
const TELCO_FEATURES: &str = "gender, \"SeniorCitizen\", \"Partner\", \"Dependents\", tenure, \
    \"PhoneService\", \"MultipleLines\", \"InternetService\", \"OnlineSecurity\", \"OnlineBackup\", \
    \"DeviceProtection\", \"TechSupport\", \"StreamingTV\", \"StreamingMovies\", \"Contract\", \
    \"PaperlessBilling\", \"PaymentMethod\", \"MonthlyCharges\", \
    CAST(NULLIF(TRIM(\"TotalCharges\"), '') AS DOUBLE) AS total_charges";

async fn create_telco(c: &Client) {
    let path = repo_data("telco_customer_churn.csv");
    c.batch_execute(&format!(
        "CREATE EXTERNAL TABLE telco STORED AS CSV LOCATION '{}' \
         OPTIONS ('format.has_header' 'true')",
        path.display()
    ))
    .await
    .expect("telco table");
    c.batch_execute(&format!(
        "CREATE VIEW telco_features AS SELECT \"customerID\" AS id, {TELCO_FEATURES}, \
         \"Churn\" AS churn FROM telco"
    ))
    .await
    .expect("view");
}

/// The feature argument list for PREDICT over `telco_features`.
const ARGS: &str = "gender, \"SeniorCitizen\", \"Partner\", \"Dependents\", tenure, \
    \"PhoneService\", \"MultipleLines\", \"InternetService\", \"OnlineSecurity\", \"OnlineBackup\", \
    \"DeviceProtection\", \"TechSupport\", \"StreamingTV\", \"StreamingMovies\", \"Contract\", \
    \"PaperlessBilling\", \"PaymentMethod\", \"MonthlyCharges\", total_charges";

/// Each `explain_predict` row over `telco_features` (id, 19 features, churn, 19 contributions,
/// base_value) adds up to the log-odds of the same row's `PREDICT_PROBA` (column 2 of
/// `scored`, rows in the same order) within `tolerance`.
fn assert_contributions_add_up(
    explained: &[Vec<Option<String>>],
    scored: &[Vec<Option<String>>],
    tolerance: f64,
) {
    for (r, row) in explained.iter().enumerate() {
        let sum: f64 = row[21..]
            .iter()
            .map(|v| {
                v.as_deref()
                    .expect("contribution")
                    .parse::<f64>()
                    .expect("f")
            })
            .sum();
        let p: f64 = scored[r][2].as_deref().expect("p").parse().expect("p");
        let logit = (p / (1.0 - p)).ln();
        assert!((sum - logit).abs() < tolerance, "row {r}: {sum} vs {logit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_models_train_predict_persist_and_survive_a_corrupted_neighbour() {
    let mut server = Server::start();
    let c = server.connect().await;
    create_telco(&c).await;
    let train_sql = format!("SELECT {ARGS}, churn FROM telco_features");
    c.batch_execute(&format!(
        "CREATE MODEL churn PREDICT churn USING gbdt AS {train_sql}"
    ))
    .await
    .expect("create gbdt");
    c.batch_execute(&format!(
        "CREATE MODEL churn_lr PREDICT churn USING logistic AS {train_sql}"
    ))
    .await
    .expect("create logistic");

    // Validation AUC floor: LightGBM reaches 0.831 (5-fold CV 0.832 ± 0.011) on this data.
    let models = query(
        &c,
        "SELECT name, task, algorithm, metric, metric_value, train_rows, validation_rows \
         FROM system.models ORDER BY name",
    )
    .await;
    assert_eq!(models.len(), 2, "{models:?}");
    for m in &models {
        assert_eq!(m[1].as_deref(), Some("classification"));
        assert_eq!(m[3].as_deref(), Some("auc"));
        let auc: f64 = m[4].as_deref().expect("auc").parse().expect("number");
        assert!(auc >= 0.82, "{m:?}");
        assert_eq!(m[5].as_deref(), Some("5634"));
        assert_eq!(m[6].as_deref(), Some("1409"));
    }

    // PREDICT returns the target's type (text Yes/No); PREDICT_PROBA P(Yes); both agree.
    let sql = format!(
        "SELECT id, PREDICT('churn', {ARGS}) AS label, PREDICT_PROBA('churn', {ARGS}) AS p \
         FROM telco_features ORDER BY id"
    );
    let before = query(&c, &sql).await;
    assert_eq!(before.len(), 7043);
    for r in &before {
        let p: f64 = r[2].as_deref().expect("p").parse().expect("float");
        assert!((0.0..=1.0).contains(&p));
        let label = r[1].as_deref().expect("label");
        assert_eq!(label, if p >= 0.5 { "Yes" } else { "No" }, "{r:?}");
    }
    // Composable: in WHERE, GROUP BY, ORDER BY, CTAS and a join.
    let high = scalar(
        &c,
        &format!("SELECT count(*) FROM telco_features WHERE PREDICT_PROBA('churn', {ARGS}) > 0.5"),
    )
    .await;
    let by_label = query(
        &c,
        &format!(
            "SELECT PREDICT('churn', {ARGS}) AS l, count(*) FROM telco_features GROUP BY 1 ORDER BY 1"
        ),
    )
    .await;
    assert_eq!(by_label.len(), 2);
    assert_eq!(by_label[1][1].as_deref(), Some(high.as_str()));
    c.batch_execute(&format!(
        "CREATE TABLE scored AS SELECT id, PREDICT_PROBA('churn', {ARGS}) AS p FROM telco_features"
    ))
    .await
    .expect("ctas");
    let joined = scalar(
        &c,
        "SELECT count(*) FROM scored s JOIN telco_features t ON s.id = t.id WHERE s.p > 0.5",
    )
    .await;
    assert_eq!(joined, high);
    // COPY TO a file: the rows written are the scored rows.
    let out = tempfile::tempdir().expect("tempdir");
    let csv = out.path().join("scored.csv");
    c.batch_execute(&format!(
        "COPY (SELECT id, PREDICT('churn', {ARGS}) AS label FROM telco_features ORDER BY id) \
         TO '{}' (FORMAT csv, HEADER true)",
        csv.display()
    ))
    .await
    .expect("copy to");
    let written = std::fs::read_to_string(&csv).expect("read copy");
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines[0], "id,label");
    let yes = lines[1..].iter().filter(|l| l.ends_with(",Yes")).count();
    assert_eq!(yes.to_string(), high);

    // The relation forms: PREDICT(model, TABLE t) adds columns matched by name;
    // EVALUATE(model, TABLE t) gives one row per metric.
    let table_form = query(
        &c,
        "SELECT id, predicted_churn, probability FROM predict('churn', TABLE telco_features) \
         ORDER BY id",
    )
    .await;
    assert_eq!(table_form, before);
    let eval = query(
        &c,
        "SELECT metric, value FROM evaluate('churn', TABLE telco_features)",
    )
    .await;
    let metric = |name: &str| -> f64 {
        eval.iter()
            .find(|r| r[0].as_deref() == Some(name))
            .and_then(|r| r[1].as_deref())
            .unwrap_or_else(|| panic!("{name} in {eval:?}"))
            .parse()
            .expect("number")
    };
    assert_eq!(metric("rows"), 7043.0);
    assert!(metric("auc") > 0.84, "{eval:?}");
    let yes = scalar(
        &c,
        "SELECT count(*) FROM predict('churn', (SELECT * FROM telco_features WHERE tenure < 12)) AS p \
         WHERE p.predicted_churn = 'Yes'",
    )
    .await;
    assert!(yes.parse::<u32>().expect("count") > 0);

    // EXPLAIN_PREDICT: per-feature contributions plus a base value add up to the log-odds.
    let explained = query(
        &c,
        "SELECT * FROM explain_predict('churn', (SELECT * FROM telco_features ORDER BY id LIMIT 50))",
    )
    .await;
    assert_eq!(explained.len(), 50);
    // id, 19 features, churn, 19 contributions, base_value.
    assert_eq!(explained[0].len(), 1 + 19 + 1 + 19 + 1);
    assert_contributions_add_up(&explained, &before, 1e-3);

    // Importance and the trials table.
    let imp = query(
        &c,
        "SELECT feature, importance FROM feature_importance('churn')",
    )
    .await;
    assert_eq!(imp.len(), 19);
    let total: f64 = imp
        .iter()
        .map(|r| r[1].as_deref().expect("v").parse::<f64>().expect("f"))
        .sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM system.model_trials WHERE chosen").await,
        "2"
    );

    // A new version with OR REPLACE; the old one stays listed.
    c.batch_execute(&format!(
        "CREATE OR REPLACE MODEL churn PREDICT churn USING gbdt WITH (num_trees = 40, seed = 3, gate = 'none') AS {train_sql}"
    ))
    .await
    .expect("replace");
    assert_eq!(
        query(&c, "SELECT version, is_current FROM system.model_versions WHERE name = 'churn' ORDER BY version").await,
        vec![
            vec![Some("1".into()), Some("f".into())],
            vec![Some("2".into()), Some("t".into())]
        ]
    );
    let v2 = query(&c, &sql).await;
    // Floats are sent in their shortest exact form: equal text is equal bits.
    let lr_sql =
        format!("SELECT id, PREDICT_PROBA('churn_lr', {ARGS}) FROM telco_features ORDER BY id");
    let lr = query(&c, &lr_sql).await;
    drop(c);

    // Restart: models, versions and predictions survive, bit for bit (the artifacts' floats
    // round-trip exactly through JSON).
    server.restart();
    let c = server.connect().await;
    assert_eq!(query(&c, &sql).await, v2);
    assert_eq!(query(&c, &lr_sql).await, lr);
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM system.model_versions").await,
        "3"
    );
    let described = query(&c, "DESCRIBE MODEL churn").await;
    assert!(
        described
            .iter()
            .any(|r| r[0].as_deref() == Some("feature 19")
                && r[1].as_deref() == Some("total_charges Float64"))
    );
    drop(c);

    // Corrupt the logistic model's artifact: it fails alone, with XX001.
    let artifact = server.data_dir.join("models/churn_lr/v0001/artifact.json");
    std::fs::write(&artifact, b"{\"format_version\": 1, \"garbage").expect("corrupt");
    server.restart();
    let c = server.connect().await;
    assert_eq!(
        sqlstate_of(
            &c,
            &format!("SELECT PREDICT('churn_lr', {ARGS}) FROM telco_features")
        )
        .await,
        "XX001"
    );
    assert_eq!(query(&c, &sql).await, v2);
    assert_eq!(scalar(&c, "SELECT count(*) FROM system.models").await, "2");
    // Replacing the broken model repairs it.
    c.batch_execute(&format!(
        "CREATE OR REPLACE MODEL churn_lr PREDICT churn USING logistic AS {train_sql}"
    ))
    .await
    .expect("replace broken");
    let n = scalar(
        &c,
        &format!("SELECT count(PREDICT('churn_lr', {ARGS})) FROM telco_features"),
    )
    .await;
    assert_eq!(n, "7043");
    c.batch_execute("DROP MODEL churn_lr").await.expect("drop");
    assert!(!server.data_dir.join("models/churn_lr").exists());
    assert_eq!(
        sqlstate_of(
            &c,
            &format!("SELECT PREDICT('churn_lr', {ARGS}) FROM telco_features")
        )
        .await,
        "42704"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_model_statements_get_sqlstates_and_leave_the_registry_intact() {
    let server = Server::start();
    let c = server.connect().await;
    create_telco(&c).await;
    c.batch_execute(
        "CREATE MODEL ok PREDICT churn WITH (num_trees = 10) AS \
         SELECT tenure, \"Contract\", churn FROM telco_features",
    )
    .await
    .expect("create");
    let cases: &[(&str, &str)] = &[
        ("SELECT PREDICT('nope', 1)", "42704"),
        ("SELECT PREDICT('ok', 1) FROM telco_features", "22023"),
        (
            "SELECT PREDICT('ok', 'x', 'y') FROM telco_features",
            "42804",
        ),
        ("SELECT PREDICT(tenure, 1) FROM telco_features", "22023"),
        ("SELECT * FROM feature_importance('nope')", "42704"),
        ("DROP MODEL nope", "42704"),
        ("DESCRIBE MODEL nope", "42704"),
        (
            "CREATE MODEL ok PREDICT churn AS SELECT tenure, churn FROM telco_features",
            "42710",
        ),
        (
            "CREATE MODEL m PREDICT missing AS SELECT tenure, churn FROM telco_features",
            "42703",
        ),
        (
            "CREATE MODEL m PREDICT churn AS SELECT tenure, churn FROM telco_features WHERE false",
            "22000",
        ),
        (
            "CREATE MODEL m PREDICT churn AS SELECT tenure, churn FROM telco_features \
             WHERE churn = 'Yes'",
            "22000",
        ),
        (
            "CREATE MODEL m PREDICT y AS SELECT tenure, CAST(NULL AS VARCHAR) AS y FROM telco_features",
            "22000",
        ),
        (
            "CREATE MODEL m PREDICT churn WITH (task = regression) AS \
             SELECT tenure, churn FROM telco_features",
            "22023",
        ),
        (
            "CREATE MODEL m PREDICT churn WITH (no_such_option = 1) AS \
             SELECT tenure, churn FROM telco_features",
            "22023",
        ),
        (
            "CREATE MODEL m PREDICT churn USING magic AS SELECT tenure, churn FROM telco_features",
            "22023",
        ),
        (
            "CREATE MODEL m PREDICT churn WITH (max_trials = 0) AS \
             SELECT tenure, churn FROM telco_features",
            "22023",
        ),
        (
            "CREATE MODEL m PREDICT churn WITH (learning_rate = -1) AS \
             SELECT tenure, churn FROM telco_features",
            "22023",
        ),
        (
            "CREATE MODEL m PREDICT churn AS SELECT churn FROM telco_features",
            "22023",
        ),
        ("CREATE MODEL m PREDICT churn AS SELECT FROM", "42601"),
        (
            "SELECT * FROM predict('nope', TABLE telco_features)",
            "42704",
        ),
        ("SELECT * FROM predict('ok')", "22023"),
        (
            "SELECT * FROM evaluate('ok', (SELECT tenure FROM telco_features))",
            "42703",
        ),
        ("CREATE MODEL m PREDICT churn", "42601"),
        (
            "CREATE MODEL m PREDICT churn AS SELECT tenure, churn FROM no_such_table",
            "42P01",
        ),
    ];
    for (sql, state) in cases {
        assert_eq!(&sqlstate_of(&c, sql).await, state, "{sql}");
    }
    assert_eq!(
        query(&c, "SELECT name, version FROM system.model_versions").await,
        vec![vec![Some("ok".into()), Some("1".into())]]
    );
    assert_eq!(
        scalar(
            &c,
            "SELECT count(PREDICT('ok', tenure, \"Contract\")) FROM telco_features"
        )
        .await,
        "7043"
    );
}

/// Run `sql`, cancelled from another connection after 1.5 s: its error and how long it ran.
async fn cancelled_after_1500ms(c: &Client, sql: &str) -> (tokio_postgres::Error, Duration) {
    let token = c.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let started = std::time::Instant::now();
    let err = c.batch_execute(sql).await.expect_err("cancelled");
    canceller.await.expect("join").expect("cancel sent");
    (err, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_training_and_registers_nothing() {
    let server = Server::start();
    let c = server.connect().await;
    create_telco(&c).await;
    let (err, took) = cancelled_after_1500ms(
        &c,
        &format!(
            "CREATE MODEL slow PREDICT churn USING gbdt \
             WITH (num_trees = 1000000, learning_rate = 0.001, early_stopping_rounds = 0, \
                   validation_fraction = 0) AS SELECT {ARGS}, churn FROM telco_features"
        ),
    )
    .await;
    assert_eq!(err.code().map(|s| s.code()), Some("57014"), "{err}");
    assert!(took < Duration::from_secs(60));
    assert_eq!(scalar(&c, "SELECT count(*) FROM system.models").await, "0");
    // The training thread stopped: a new model trains at normal speed right after.
    c.batch_execute(
        "CREATE MODEL quick PREDICT churn WITH (num_trees = 5) AS \
         SELECT tenure, churn FROM telco_features",
    )
    .await
    .expect("create after cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_marketing_and_california_housing_reach_lightgbm_floors() {
    let Some(dir) = shared_data_dir() else {
        eprintln!("shared datasets not found; skipping bank / california quality floors");
        return;
    };
    let server = Server::start();
    let c = server.connect().await;
    c.batch_execute(&format!(
        "CREATE EXTERNAL TABLE bank STORED AS CSV LOCATION '{}' \
         OPTIONS ('format.has_header' 'true', 'format.delimiter' ';', \
         'format.schema_infer_max_rec' '100000')",
        dir.join("classification/bank_additional_full.csv")
            .display()
    ))
    .await
    .expect("bank");
    // Without the leaky `duration` column. LightGBM: AUC 0.8103 (80/20), 0.798 ± 0.005 (CV).
    c.batch_execute(
        "CREATE MODEL bank PREDICT y USING gbdt AS SELECT age, job, marital, education, \
         \"default\", housing, loan, contact, month, day_of_week, campaign, pdays, previous, \
         poutcome, \"emp.var.rate\", \"cons.price.idx\", \"cons.conf.idx\", euribor3m, \
         \"nr.employed\", y FROM bank",
    )
    .await
    .expect("bank model");
    let auc: f64 = scalar(
        &c,
        "SELECT metric_value FROM system.models WHERE name = 'bank'",
    )
    .await
    .parse()
    .expect("auc");
    assert!(auc >= 0.78, "bank AUC {auc}");

    c.batch_execute(&format!(
        "CREATE EXTERNAL TABLE housing STORED AS CSV LOCATION '{}' \
         OPTIONS ('format.has_header' 'true')",
        dir.join("regression/california_housing.csv").display()
    ))
    .await
    .expect("housing");
    // LightGBM (500 trees, lr 0.05): R² 0.846, RMSE 46,176 on an 80/20 split.
    c.batch_execute(
        "CREATE MODEL house PREDICT median_house_value USING gbdt \
         WITH (num_trees = 1000, learning_rate = 0.05) AS SELECT * FROM housing",
    )
    .await
    .expect("housing model");
    let metrics = scalar(
        &c,
        "SELECT metrics FROM system.model_versions WHERE name = 'house'",
    )
    .await;
    let m: serde_json::Value = serde_json::from_str(&metrics).expect("json");
    let r2 = m["r2"].as_f64().expect("r2");
    assert!(r2 >= 0.80, "housing R² {r2} ({metrics})");
    let pred: f64 = scalar(
        &c,
        "SELECT avg(PREDICT('house', longitude, latitude, housing_median_age, total_rooms, \
         total_bedrooms, population, households, median_income, ocean_proximity)) FROM housing",
    )
    .await
    .parse()
    .expect("avg");
    assert!((150_000.0..260_000.0).contains(&pred), "{pred}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_is_bounded_by_the_memory_limit() {
    let server = Server::start_with(
        false,
        vec![("PROGNOS__ENGINE__MEMORY_LIMIT_MB".into(), "2".into())],
    );
    let c = server.connect().await;
    create_telco(&c).await;
    let err = c
        .batch_execute(&format!(
            "CREATE MODEL big PREDICT churn AS SELECT {ARGS}, churn FROM telco_features"
        ))
        .await
        .expect_err("over the memory limit");
    assert_eq!(err.code().map(|s| s.code()), Some("53200"), "{err}");
    let msg = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("memory limit"), "{msg}");
    // Small models still fit; the server keeps serving.
    c.batch_execute(
        "CREATE MODEL small PREDICT churn WITH (num_trees = 5) AS \
         SELECT tenure, churn FROM telco_features LIMIT 2000",
    )
    .await
    .expect("small model");
    assert_eq!(scalar(&c, "SELECT count(*) FROM system.models").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiclass_regression_and_auto_models() {
    let server = Server::start();
    let c = server.connect().await;
    create_telco(&c).await;
    // Multiclass: the contract type (3 classes) from usage and charges.
    c.batch_execute(
        "CREATE MODEL contract PREDICT \"Contract\" USING gbdt AS SELECT tenure, \"MonthlyCharges\", \
         total_charges, \"InternetService\", \"PaymentMethod\", \"Contract\" FROM telco_features",
    )
    .await
    .expect("multiclass");
    let rows = query(
        &c,
        "SELECT PREDICT('contract', tenure, \"MonthlyCharges\", total_charges, \"InternetService\", \
         \"PaymentMethod\") AS c, \
         array_length(PREDICT_PROBA('contract', tenure, \"MonthlyCharges\", total_charges, \
         \"InternetService\", \"PaymentMethod\"), 1) AS k, \
         array_sum(PREDICT_PROBA('contract', tenure, \"MonthlyCharges\", total_charges, \
         \"InternetService\", \"PaymentMethod\")) AS s FROM telco_features LIMIT 200",
    )
    .await;
    for r in &rows {
        assert!(
            ["Month-to-month", "One year", "Two year"].contains(&r[0].as_deref().expect("class")),
            "{r:?}"
        );
        assert_eq!(r[1].as_deref(), Some("3"));
        let s: f64 = r[2].as_deref().expect("sum").parse().expect("f");
        assert!((s - 1.0).abs() < 1e-4, "{r:?}");
    }
    let eval = query(
        &c,
        "SELECT metric, value FROM evaluate('contract', TABLE telco_features) \
         WHERE metric IN ('accuracy', 'rows') ORDER BY metric",
    )
    .await;
    let accuracy: f64 = eval[0][1].as_deref().expect("acc").parse().expect("f");
    // The majority class (month-to-month) is 55 %; tenure and charges separate the contracts.
    assert!(accuracy > 0.70, "{eval:?}");
    assert_eq!(eval[1][1].as_deref(), Some("7043"));

    // Regression: monthly charges from the services a customer has.
    c.batch_execute(
        "CREATE MODEL charges PREDICT \"MonthlyCharges\" USING gbdt AS SELECT \"PhoneService\", \
         \"MultipleLines\", \"InternetService\", \"OnlineSecurity\", \"OnlineBackup\", \
         \"DeviceProtection\", \"TechSupport\", \"StreamingTV\", \"StreamingMovies\", \
         \"MonthlyCharges\" FROM telco_features",
    )
    .await
    .expect("regression");
    let metrics = scalar(
        &c,
        "SELECT metrics FROM system.model_versions WHERE name = 'charges'",
    )
    .await;
    let m: serde_json::Value = serde_json::from_str(&metrics).expect("json");
    // Charges are close to a sum of per-service prices: R² near 1.
    assert!(m["r2"].as_f64().expect("r2") > 0.95, "{metrics}");
    assert!(m["rmse"].as_f64().expect("rmse") < 5.0, "{metrics}");
    let avg: f64 = scalar(
        &c,
        "SELECT avg(\"predicted_MonthlyCharges\" - \"MonthlyCharges\") FROM predict('charges', TABLE telco_features)",
    )
    .await
    .parse()
    .expect("avg");
    assert!(avg.abs() < 1.0, "mean residual {avg}");

    // auto records every candidate and keeps the best one by validation AUC: the five fixed
    // candidates, then random GBDT settings up to max_trials.
    c.batch_execute(
        "CREATE MODEL auto_churn PREDICT churn WITH (time_budget = '120s', max_trials = 8) AS \
         SELECT tenure, \"Contract\", \"MonthlyCharges\", \"InternetService\", churn FROM telco_features",
    )
    .await
    .expect("auto");
    let trials = query(
        &c,
        "SELECT algorithm, value, chosen FROM system.model_trials WHERE name = 'auto_churn' ORDER BY trial",
    )
    .await;
    assert_eq!(trials.len(), 8, "{trials:?}");
    assert!(
        trials
            .iter()
            .any(|t| t[0].as_deref() == Some("random_forest")),
        "{trials:?}"
    );
    let best = trials
        .iter()
        .map(|t| t[1].as_deref().expect("v").parse::<f64>().expect("f"))
        .fold(f64::MIN, f64::max);
    let chosen: Vec<_> = trials
        .iter()
        .filter(|t| t[2].as_deref() == Some("t"))
        .collect();
    assert_eq!(chosen.len(), 1);
    assert_eq!(
        chosen[0][1]
            .as_deref()
            .expect("v")
            .parse::<f64>()
            .expect("f"),
        best
    );
    assert_eq!(
        scalar(
            &c,
            "SELECT algorithm FROM system.models WHERE name = 'auto_churn'"
        )
        .await,
        chosen[0][0].clone().expect("algorithm")
    );
}

/// PREDICT through the server equals the model crate's own prediction on the same rows, read
/// from the artifact the server stored (requirement: identical results over the wire and
/// in-process; pgwire against Flight SQL is compared in `tests/python/test_models.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_predictions_equal_in_process_predictions() {
    use datafusion::arrow::array::{Array, Float64Array};
    use datafusion::prelude::{CsvReadOptions, SessionContext};

    let server = Server::start();
    let c = server.connect().await;
    create_telco(&c).await;
    c.batch_execute(&format!(
        "CREATE MODEL churn PREDICT churn USING gbdt WITH (num_trees = 60) AS \
         SELECT {ARGS}, churn FROM telco_features"
    ))
    .await
    .expect("create");
    let over_wire: Vec<f64> = query(
        &c,
        &format!("SELECT PREDICT_PROBA('churn', {ARGS}) FROM telco_features ORDER BY id"),
    )
    .await
    .iter()
    .map(|r| r[0].as_deref().expect("p").parse().expect("f64"))
    .collect();

    let bytes =
        std::fs::read(server.data_dir.join("models/churn/v0001/artifact.json")).expect("artifact");
    let model = prognos_models::ModelArtifact::from_bytes(&bytes).expect("load artifact");
    let ctx = SessionContext::new();
    ctx.register_csv(
        "telco",
        repo_data("telco_customer_churn.csv")
            .to_str()
            .expect("path"),
        CsvReadOptions::new(),
    )
    .await
    .expect("csv");
    let batches = ctx
        .sql(&format!(
            "SELECT {ARGS} FROM (SELECT \"customerID\" AS id, {TELCO_FEATURES} FROM telco) \
             ORDER BY id"
        ))
        .await
        .expect("sql")
        .collect()
        .await
        .expect("collect");
    let columns: Vec<_> = (0..batches[0].num_columns())
        .map(|i| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            datafusion::arrow::compute::concat(&parts).expect("concat")
        })
        .collect();
    let in_process = model.predict_proba(&columns).expect("predict");
    let in_process = in_process
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("f64");
    assert_eq!(over_wire.len(), in_process.len());
    for (i, p) in over_wire.iter().enumerate() {
        assert_eq!(*p, in_process.value(i), "row {i}");
    }

    // The scan runs ahead of the model: a read-ahead sits right under the operator that
    // scores, and only there; a LIMIT still stops the query early.
    let scored = physical_plan(
        &c,
        &format!("SELECT id, PREDICT_PROBA('churn', {ARGS}) FROM telco_features"),
    )
    .await;
    let lines: Vec<&str> = scored.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("ProjectionExec") && l.contains("predict_proba"))
        .unwrap_or_else(|| panic!("no scoring projection:\n{scored}"));
    assert!(
        lines
            .get(at + 1)
            .is_some_and(|l| l.starts_with("ReadAheadExec")),
        "no read-ahead under the scoring projection:\n{scored}"
    );
    assert_eq!(scored.matches("ReadAheadExec").count(), 1, "{scored}");
    let plain = physical_plan(&c, "SELECT id, tenure FROM telco_features WHERE tenure > 3").await;
    assert!(!plain.contains("ReadAheadExec"), "{plain}");
    let first = query(
        &c,
        &format!("SELECT PREDICT_PROBA('churn', {ARGS}) FROM telco_features ORDER BY id LIMIT 3"),
    )
    .await;
    assert_eq!(first.len(), 3);
    for (row, p) in first.iter().zip(&over_wire) {
        assert_eq!(row[0].as_deref().map(str::parse::<f64>), Some(Ok(*p)));
    }
}

/// The physical plan of `sql`, one operator a line.
async fn physical_plan(c: &Client, sql: &str) -> String {
    c.batch_execute("SET datafusion.explain.physical_plan_only = true")
        .await
        .expect("set");
    let rows = query(c, &format!("EXPLAIN {sql}")).await;
    c.batch_execute("RESET datafusion.explain.physical_plan_only")
        .await
        .expect("reset");
    rows.iter()
        .filter_map(|r| r.get(1).cloned().flatten())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `USING mlp` through the server: a seeded network on the churn data trains to LightGBM's
/// AUC floor, retrains to identical predictions, explains itself by integrated gradients,
/// keeps its weights as a safetensors payload across a restart, and a damaged payload fails
/// with XX001 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlp_models_train_retrain_identically_explain_and_persist() {
    let mut server = Server::start();
    let (c, notices) = server.connect_with_notices().await;
    create_telco(&c).await;
    let train_sql = format!("SELECT {ARGS}, churn FROM telco_features");
    for name in ["churn_mlp", "churn_mlp_again"] {
        c.batch_execute(&format!(
            "CREATE MODEL {name} PREDICT churn USING mlp WITH (seed = 7) AS {train_sql}"
        ))
        .await
        .expect("create mlp");
    }
    let said = notices.take();
    assert!(
        said.iter()
            .any(|(_, m)| m.starts_with("mlp: epoch 1, validation loss")),
        "{said:?}"
    );
    let model = query(
        &c,
        "SELECT algorithm, metric, metric_value FROM system.models WHERE name = 'churn_mlp'",
    )
    .await;
    assert_eq!(model[0][0].as_deref(), Some("mlp"));
    assert_eq!(model[0][1].as_deref(), Some("auc"));
    let auc: f64 = model[0][2].as_deref().expect("auc").parse().expect("f");
    assert!(auc >= 0.82, "validation AUC {auc}");
    let weights = server
        .data_dir
        .join("models/churn_mlp/v0001/weights.safetensors");
    assert!(weights.is_file(), "{}", weights.display());

    let sql = |m: &str| {
        format!(
            "SELECT id, PREDICT('{m}', {ARGS}), PREDICT_PROBA('{m}', {ARGS}) FROM telco_features \
             ORDER BY id"
        )
    };
    let before = query(&c, &sql("churn_mlp")).await;
    assert_eq!(before.len(), 7043);
    for r in &before {
        let p: f64 = r[2].as_deref().expect("p").parse().expect("float");
        assert_eq!(
            r[1].as_deref(),
            Some(if p >= 0.5 { "Yes" } else { "No" }),
            "{r:?}"
        );
    }
    // Same seed, same rows: the same network, bit for bit.
    assert_eq!(query(&c, &sql("churn_mlp_again")).await, before);
    let evaluated = query(
        &c,
        "SELECT metric, value FROM evaluate('churn_mlp', (SELECT * FROM telco_features)) \
         WHERE metric = 'auc'",
    )
    .await;
    let auc_all: f64 = evaluated[0][1].as_deref().expect("auc").parse().expect("f");
    assert!(auc_all >= 0.82, "{evaluated:?}");

    // Integrated gradients: contributions and the base add up to the log-odds.
    let explained = query(
        &c,
        "SELECT * FROM explain_predict('churn_mlp', (SELECT * FROM telco_features ORDER BY id LIMIT 20))",
    )
    .await;
    assert_eq!(explained.len(), 20);
    assert_contributions_add_up(&explained, &before, 2e-3);
    let imp = query(&c, "SELECT importance FROM feature_importance('churn_mlp')").await;
    let total: f64 = imp
        .iter()
        .map(|r| r[0].as_deref().expect("v").parse::<f64>().expect("f"))
        .sum();
    assert_eq!(imp.len(), 19);
    assert!((total - 1.0).abs() < 1e-6, "{total}");

    // Multiclass and regression networks.
    c.batch_execute(
        "CREATE MODEL contract_mlp PREDICT \"Contract\" USING mlp WITH (hidden_layers = '32') AS \
         SELECT tenure, \"MonthlyCharges\", \"InternetService\", \"PaymentMethod\", \"Contract\" \
         FROM telco_features",
    )
    .await
    .expect("multiclass mlp");
    let sums = query(
        &c,
        "SELECT array_sum(PREDICT_PROBA('contract_mlp', tenure, \"MonthlyCharges\", \
         \"InternetService\", \"PaymentMethod\")) FROM telco_features LIMIT 50",
    )
    .await;
    for s in sums {
        let s: f64 = s[0].as_deref().expect("sum").parse().expect("f");
        assert!((s - 1.0).abs() < 1e-5, "{s}");
    }
    c.batch_execute(
        "CREATE MODEL charges_mlp PREDICT \"MonthlyCharges\" USING mlp AS SELECT \
         \"InternetService\", \"PhoneService\", \"MultipleLines\", \"StreamingTV\", \
         \"StreamingMovies\", \"OnlineSecurity\", \"TechSupport\", \"MonthlyCharges\" \
         FROM telco_features",
    )
    .await
    .expect("regression mlp");
    // MonthlyCharges is nearly a sum of the services taken.
    let rmse: f64 = scalar(
        &c,
        "SELECT metric_value FROM system.models WHERE name = 'charges_mlp'",
    )
    .await
    .parse()
    .expect("rmse");
    assert!(
        rmse < 5.0,
        "validation RMSE {rmse} (the target's deviation is 30)"
    );

    // Bad input: too few rows names the minimum; a bad option names itself.
    let err = c
        .batch_execute(
            "CREATE MODEL tiny PREDICT tenure USING mlp WITH (validation_fraction = 0) AS \
             SELECT \"MonthlyCharges\", tenure FROM telco_features ORDER BY id LIMIT 12",
        )
        .await
        .expect_err("too few rows");
    let message = err.as_db_error().map(|e| e.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("at least 20")),
        "{message:?}"
    );
    assert_eq!(err.code().map(|c| c.code()), Some("22000"));
    assert_eq!(
        sqlstate_of(
            &c,
            &format!(
                "CREATE MODEL bad PREDICT churn USING mlp WITH (hidden_layers = 'wide') AS {train_sql}"
            )
        )
        .await,
        "22023"
    );
    drop(c);

    // Restart: the weights are read back from the payload, predictions unchanged.
    server.restart();
    let c = server.connect().await;
    assert_eq!(query(&c, &sql("churn_mlp")).await, before);
    drop(c);

    // A damaged payload: that model fails with XX001, its twin still answers.
    let bytes = std::fs::read(&weights).expect("weights");
    std::fs::write(&weights, &bytes[..bytes.len() / 3]).expect("truncate");
    server.restart();
    let c = server.connect().await;
    assert_eq!(sqlstate_of(&c, &sql("churn_mlp")).await, "XX001");
    assert_eq!(query(&c, &sql("churn_mlp_again")).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlp_devices_memory_limit_and_cancellation() {
    let server = Server::start_with(
        false,
        vec![("PROGNOS__ENGINE__MEMORY_LIMIT_MB".into(), "256".into())],
    );
    let (c, notices) = server.connect_with_notices().await;
    create_telco(&c).await;
    let columns = "tenure, \"MonthlyCharges\", \"Contract\", churn";

    // A CUDA device this build cannot use: the network trains on the CPU, and says so.
    c.batch_execute(&format!(
        "CREATE MODEL gpu_nn PREDICT churn USING mlp WITH (device = 'cuda:1', epochs = 3) AS \
         SELECT {columns} FROM telco_features"
    ))
    .await
    .expect("mlp on cuda:1");
    let said = notices.take();
    assert!(
        said.iter().any(|(severity, m)| severity == "NOTICE"
            && m.contains("device cuda:1 is not available to USING mlp")),
        "{said:?}"
    );
    assert_eq!(
        query(
            &c,
            "SELECT device, effective_device FROM system.models WHERE name = 'gpu_nn'"
        )
        .await,
        vec![vec![Some("cuda:1".into()), Some("cpu".into())]]
    );
    assert_eq!(
        sqlstate_of(
            &c,
            &format!(
                "CREATE MODEL bad PREDICT churn USING mlp WITH (device = 'tpu') AS \
                 SELECT {columns} FROM telco_features"
            )
        )
        .await,
        "22023"
    );
    // A session asking for another device scores on the device it gets.
    let predict = "SELECT count(PREDICT('gpu_nn', tenure, \"MonthlyCharges\", \"Contract\")) \
                   FROM telco_features";
    c.batch_execute("SET prognos.device = 'cpu'")
        .await
        .expect("set cpu");
    assert_eq!(scalar(&c, predict).await, "7043");
    c.batch_execute("SET prognos.device = 'cuda'")
        .await
        .expect("set cuda");
    assert_eq!(scalar(&c, predict).await, "7043");

    // Batches of 65 536 rows through two 4096-wide layers need gigabytes: refused before
    // training starts.
    let err = c
        .batch_execute(&format!(
            "CREATE MODEL huge PREDICT churn USING mlp \
             WITH (hidden_layers = '4096,4096', batch_size = 65536) AS \
             SELECT {columns} FROM telco_features"
        ))
        .await
        .expect_err("over the memory limit");
    assert_eq!(err.code().map(|s| s.code()), Some("53200"), "{err}");
    let msg = err.as_db_error().map(|d| d.message().to_string());
    assert!(
        msg.as_deref().is_some_and(|m| m.contains("memory limit")),
        "{msg:?}"
    );

    // Cancelled inside its only epoch (thousands of single-row steps through 1024-wide
    // layers): the query ends with 57014 and nothing is registered.
    let (err, took) = cancelled_after_1500ms(
        &c,
        &format!(
            "CREATE MODEL slow_nn PREDICT churn USING mlp \
             WITH (hidden_layers = '1024,1024', batch_size = 1, epochs = 1) AS \
             SELECT {columns} FROM telco_features"
        ),
    )
    .await;
    assert_eq!(err.code().map(|s| s.code()), Some("57014"), "{err}");
    assert!(took < Duration::from_secs(30));
    assert_eq!(
        query(&c, "SELECT name FROM system.models ORDER BY name").await,
        vec![vec![Some("gpu_nn".into())]]
    );
}
