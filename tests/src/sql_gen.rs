//! A bounded, grammar-based generator of random SQL for the fuzz tests: the DataFusion subset
//! prognos serves plus every prognos statement and model function, with arguments that are
//! often wrong (unknown names, wrong types and counts, huge and hostile literals), and
//! mutations of well-formed statements (cut short, tokens repeated or swapped).
//!
//! Deterministic for a seed, so a failure names the seed and statement that reproduce it.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Tables the fuzz server holds (made by [`SETUP`]) and a few that do not exist.
const TABLES: &[&str] = &[
    "f_num",
    "f_txt",
    "f_ts",
    "nope",
    "system.models",
    "pg_catalog.pg_class",
];
/// Columns of the tables, and some that do not exist.
const COLUMNS: &[&str] = &["a", "b", "c", "s", "t", "y", "label", "missing", "\"A\""];
/// Models the fuzz server holds and some it does not.
const MODELS: &[&str] = &[
    "fm_reg", "fm_cls", "fm_fc", "fm_km", "no_model", "", "fm_reg@1",
];
const TYPES: &[&str] = &[
    "INT",
    "BIGINT",
    "DOUBLE",
    "REAL",
    "TEXT",
    "VARCHAR",
    "BOOLEAN",
    "DATE",
    "TIMESTAMP",
    "DECIMAL(10,2)",
    "BYTEA",
    "INT[]",
    "INTERVAL",
    "NUMERIC(40,0)",
];
const SCALAR_FUNCTIONS: &[&str] = &[
    "abs",
    "length",
    "upper",
    "lower",
    "substr",
    "repeat",
    "lpad",
    "rpad",
    "concat",
    "coalesce",
    "nullif",
    "round",
    "sqrt",
    "ln",
    "power",
    "to_timestamp",
    "date_trunc",
    "date_part",
    "split_part",
    "regexp_replace",
    "md5",
    "sha256",
    "array_length",
    "make_array",
    "random",
    "greatest",
    "least",
    "trim",
    "strpos",
    "to_char",
    "now",
    "generate_series",
];
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "string_agg",
    "array_agg",
    "stddev",
    "median",
    "approx_percentile_cont",
    "bool_and",
];
const MODEL_FUNCTIONS: &[&str] = &[
    "PREDICT",
    "PREDICT_PROBA",
    "EXPLAIN_PREDICT",
    "FORECAST",
    "ANOMALY",
    "EVALUATE",
    "feature_importance",
];

/// Statements that make the fuzz server's tables and models.
pub const SETUP: &[&str] = &[
    "CREATE TABLE f_num AS SELECT value AS a, value * 0.5 AS b, CAST(value % 3 AS BIGINT) AS c, \
     CAST(value % 2 AS BIGINT) AS label, value * 2.0 + 1 AS y FROM generate_series(1, 300)",
    "CREATE TABLE f_txt AS SELECT 'k' || value AS s, value AS a FROM generate_series(1, 100)",
    "CREATE TABLE f_ts AS SELECT to_timestamp(value * 3600) AS t, CAST(value % 24 AS DOUBLE) AS y \
     FROM generate_series(1, 200)",
    "CREATE MODEL fm_reg PREDICT y USING linear AS SELECT a, b, y FROM f_num",
    "CREATE MODEL fm_cls PREDICT label USING gbdt WITH (num_trees = 5) AS \
     SELECT a, b, c, label FROM f_num",
    "CREATE MODEL fm_fc FORECAST y TIME t USING ets WITH (horizon = 3) AS SELECT t, y FROM f_ts",
    "CREATE MODEL fm_km USING kmeans WITH (k = 3) AS SELECT a, b FROM f_num",
];

/// Random SQL, one statement at a time.
#[derive(Debug)]
pub struct SqlGen {
    rng: ChaCha8Rng,
}

impl SqlGen {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from.choose(&mut self.rng).copied().unwrap_or("")
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// The next statement.
    pub fn statement(&mut self) -> String {
        let sql = match self.rng.random_range(0..20) {
            0..=7 => self.query(0),
            8 => self.insert(),
            9 => self.update_or_delete(),
            10 => self.create_model(),
            11 => self.model_statement(),
            12 => self.ddl(),
            13 => self.security(),
            14 => self.session_statement(),
            15 => format!("EXPLAIN {}", self.query(1)),
            16 => self.copy(),
            _ => {
                let base = self.query(1);
                self.mutate(&base)
            }
        };
        if self.chance(0.1) {
            self.mutate(&sql)
        } else {
            sql
        }
    }

    fn literal(&mut self) -> String {
        match self.rng.random_range(0..16) {
            0 => "NULL".into(),
            1 => self.rng.random_range(-5..100).to_string(),
            2 => "9223372036854775807".into(),
            3 => "-9223372036854775808".into(),
            4 => "1e308".into(),
            5 => "'NaN'".into(),
            6 => format!("{:.3}", self.rng.random_range(-1e6..1e6)),
            7 => "''".into(),
            8 => "'it''s'".into(),
            9 => "'ünï€ødé 🎉'".into(),
            10 => "'2024-02-30'".into(),
            11 => "TRUE".into(),
            12 => "'\\x00'".into(),
            13 => "ARRAY[1, 2, 3]".into(),
            14 => "INTERVAL '1 day'".into(),
            _ => format!("'{}'", "x".repeat(self.rng.random_range(0..50))),
        }
    }

    fn expr(&mut self, depth: u32) -> String {
        if depth > 3 {
            return if self.chance(0.5) {
                self.literal()
            } else {
                self.pick(COLUMNS).to_string()
            };
        }
        match self.rng.random_range(0..14) {
            0 | 1 => self.literal(),
            2 | 3 => self.pick(COLUMNS).to_string(),
            4 => {
                let op = self.pick(&[
                    "+", "-", "*", "/", "%", "||", "=", "<", ">=", "<>", "AND", "OR", "LIKE",
                ]);
                format!("({} {op} {})", self.expr(depth + 1), self.expr(depth + 1))
            }
            5 | 6 => {
                let f = self.pick(SCALAR_FUNCTIONS);
                let args = self.args(depth);
                format!("{f}({args})")
            }
            7 => {
                let f = self.pick(MODEL_FUNCTIONS);
                let model = self.pick(MODELS);
                let rest = if self.chance(0.3) {
                    format!(", TABLE {}", self.pick(TABLES))
                } else {
                    let a = self.args(depth);
                    if a.is_empty() { a } else { format!(", {a}") }
                };
                format!("{f}('{model}'{rest})")
            }
            8 => format!("CAST({} AS {})", self.expr(depth + 1), self.pick(TYPES)),
            9 => format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                self.expr(depth + 1),
                self.expr(depth + 1),
                self.expr(depth + 1)
            ),
            10 => format!("{} IN ({})", self.expr(depth + 1), self.args(depth)),
            11 => format!("({})", self.query(depth + 1)),
            12 => format!("{} IS NOT NULL", self.expr(depth + 1)),
            _ => format!("-{}", self.expr(depth + 1)),
        }
    }

    fn args(&mut self, depth: u32) -> String {
        let n = self.rng.random_range(0..4);
        (0..n)
            .map(|_| self.expr(depth + 1))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn query(&mut self, depth: u32) -> String {
        if depth > 2 {
            return "SELECT 1".into();
        }
        let mut items: Vec<String> = (0..self.rng.random_range(1..4))
            .map(|_| self.expr(depth))
            .collect();
        if self.chance(0.2) {
            let agg = self.pick(AGGREGATES);
            let arg = if agg == "count" && self.chance(0.5) {
                "*".to_string()
            } else {
                self.args(depth)
            };
            items.push(format!("{agg}({arg})"));
        }
        let mut sql = format!("SELECT {}", items.join(", "));
        if self.chance(0.8) {
            sql.push_str(&format!(" FROM {}", self.from(depth)));
        }
        if self.chance(0.4) {
            sql.push_str(&format!(" WHERE {}", self.expr(depth + 1)));
        }
        if self.chance(0.2) {
            sql.push_str(&format!(" GROUP BY {}", self.pick(COLUMNS)));
        }
        if self.chance(0.3) {
            sql.push_str(&format!(" ORDER BY {}", self.expr(depth + 1)));
        }
        if self.chance(0.3) {
            sql.push_str(&format!(" LIMIT {}", self.rng.random_range(-1..1000)));
        }
        if self.chance(0.1) {
            let op = self.pick(&["UNION", "UNION ALL", "EXCEPT", "INTERSECT"]);
            sql = format!("{sql} {op} {}", self.query(depth + 1));
        }
        if self.chance(0.1) {
            sql = format!("WITH w AS ({}) SELECT * FROM w", self.query(depth + 1));
        }
        sql
    }

    fn from(&mut self, depth: u32) -> String {
        match self.rng.random_range(0..6) {
            0 => format!("({}) AS sub", self.query(depth + 1)),
            1 => format!(
                "{} JOIN {} ON {}",
                self.pick(TABLES),
                self.pick(TABLES),
                self.expr(depth + 2)
            ),
            2 => format!("generate_series({}, {})", self.literal(), self.literal()),
            _ => self.pick(TABLES).to_string(),
        }
    }

    fn insert(&mut self) -> String {
        let table = self.pick(TABLES);
        if self.chance(0.5) {
            let values: Vec<String> = (0..self.rng.random_range(1..4))
                .map(|_| self.literal())
                .collect();
            format!("INSERT INTO {table} VALUES ({})", values.join(", "))
        } else {
            format!("INSERT INTO {table} {}", self.query(1))
        }
    }

    fn update_or_delete(&mut self) -> String {
        let table = self.pick(TABLES);
        if self.chance(0.5) {
            format!(
                "UPDATE {table} SET {} = {} WHERE {}",
                self.pick(COLUMNS),
                self.expr(1),
                self.expr(1)
            )
        } else {
            format!("DELETE FROM {table} WHERE {}", self.expr(1))
        }
    }

    fn create_model(&mut self) -> String {
        let name = self.pick(&["fz_a", "fz_b", "fm_reg", "bad name", "x@y"]);
        let replace = if self.chance(0.5) { "OR REPLACE " } else { "" };
        let algo = self.pick(&[
            "auto",
            "gbdt",
            "random_forest",
            "linear",
            "logistic",
            "kmeans",
            "isolation_forest",
            "nope",
            "ets",
            "theta",
            "arima",
            "mstl",
            "gbdt_lag",
        ]);
        let option = self.pick(&[
            "num_trees",
            "learning_rate",
            "horizon",
            "k",
            "seed",
            "validation_fraction",
            "num_leaves",
            "level",
            "bogus",
            "max_depth",
        ]);
        let value = self.literal();
        let body = self.query(1);
        if self.chance(0.3) {
            format!(
                "CREATE {replace}MODEL {name} FORECAST {} TIME {} USING {algo} WITH ({option} = {value}) AS {body}",
                self.pick(COLUMNS),
                self.pick(COLUMNS)
            )
        } else {
            format!(
                "CREATE {replace}MODEL {name} PREDICT {} USING {algo} WITH ({option} = {value}) AS {body}",
                self.pick(COLUMNS)
            )
        }
    }

    fn model_statement(&mut self) -> String {
        let m = self.pick(MODELS);
        match self.rng.random_range(0..7) {
            0 => format!("DESCRIBE MODEL {m}"),
            1 => "SHOW MODELS".into(),
            2 => format!("DROP MODEL IF EXISTS fz_{}", self.rng.random_range(0..3)),
            3 => format!(
                "EXPORT MODEL {m} TO 'fuzz_{}.onnx'",
                self.rng.random_range(0..3)
            ),
            4 => format!(
                "CREATE MODEL fz_imp FROM '{}'",
                self.pick(&[
                    "missing.onnx",
                    "../x.onnx",
                    "/etc/passwd",
                    "s3://nobucket/x.onnx"
                ])
            ),
            5 => format!(
                "EXPORT MODEL {m} VERSION {} TO '/etc/fuzz.onnx'",
                self.literal()
            ),
            _ => "SELECT * FROM system.model_versions".into(),
        }
    }

    fn ddl(&mut self) -> String {
        let n = self.rng.random_range(0..3);
        match self.rng.random_range(0..6) {
            0 => format!("CREATE TABLE IF NOT EXISTS fz_t{n} (a BIGINT, s TEXT)"),
            1 => format!("DROP TABLE IF EXISTS fz_t{n}"),
            2 => format!("CREATE OR REPLACE VIEW fz_v{n} AS {}", self.query(1)),
            3 => format!(
                "ALTER TABLE fz_t{n} RENAME TO fz_t{}",
                self.rng.random_range(0..3)
            ),
            4 => format!(
                "CREATE EXTERNAL TABLE fz_e{n} STORED AS CSV LOCATION '{}'",
                self.pick(&["/etc/", "../../", "file:///proc/self/", "nofile.csv"])
            ),
            _ => format!(
                "CREATE TABLE fz_t{n} ({} {})",
                self.pick(COLUMNS),
                self.pick(TYPES)
            ),
        }
    }

    fn security(&mut self) -> String {
        let r = self.pick(&["fz_role", "prognos", "public", "nobody"]);
        match self.rng.random_range(0..6) {
            0 => format!("CREATE ROLE {r} LOGIN PASSWORD {}", self.literal()),
            1 => format!("GRANT SELECT ON {} TO {r}", self.pick(TABLES)),
            2 => format!("REVOKE ALL ON {} FROM {r}", self.pick(TABLES)),
            3 => format!("GRANT USAGE ON MODEL {} TO {r}", self.pick(MODELS)),
            4 => format!(
                "CREATE MASKING POLICY fz_p ON {} ({}) USING {}",
                self.pick(TABLES),
                self.pick(COLUMNS),
                self.pick(&["redact", "hash", "partial(2)", "partial(-1)", "nope"])
            ),
            _ => "DROP MASKING POLICY IF EXISTS fz_p".into(),
        }
    }

    fn session_statement(&mut self) -> String {
        match self.rng.random_range(0..6) {
            0 => "BEGIN".into(),
            1 => "COMMIT".into(),
            2 => "ROLLBACK".into(),
            3 => format!(
                "SET statement_timeout = {}",
                self.pick(&["'2s'", "'-1'", "-1", "'abc'", "2000"])
            ),
            4 => "SHOW ALL".into(),
            _ => format!(
                "SET {} = {}",
                self.pick(&["datestyle", "search_path", "bogus.setting", "TimeZone"]),
                self.literal()
            ),
        }
    }

    fn copy(&mut self) -> String {
        match self.rng.random_range(0..3) {
            0 => format!("COPY ({}) TO 'fuzz_out.csv'", self.query(1)),
            1 => format!("COPY {} TO '/tmp/../etc/fuzz.csv'", self.pick(TABLES)),
            _ => format!(
                "COPY {} TO 'fuzz_out.parquet' (FORMAT {})",
                self.pick(TABLES),
                self.pick(&["parquet", "csv", "json", "nope"])
            ),
        }
    }

    /// A statement broken: cut short, a token repeated, two tokens swapped, or a quote or
    /// bracket dropped in.
    fn mutate(&mut self, sql: &str) -> String {
        let mut tokens: Vec<String> = sql.split_whitespace().map(str::to_string).collect();
        if tokens.is_empty() {
            return sql.to_string();
        }
        let i = self.rng.random_range(0..tokens.len());
        match self.rng.random_range(0..5) {
            0 => tokens.truncate(i.max(1)),
            1 => {
                let t = tokens[i].clone();
                tokens.insert(i, t);
            }
            2 => {
                let j = self.rng.random_range(0..tokens.len());
                tokens.swap(i, j);
            }
            3 => {
                let junk = self.pick(&["'", "(", ")", ",", ";", "$1", "::", "--", "/*", "\\"]);
                tokens.insert(i, junk.to_string());
            }
            _ => {
                tokens.remove(i);
            }
        }
        tokens.join(" ")
    }
}
