//! The model statements DataFusion's parser does not know, parsed here:
//!
//! ```sql
//! CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name
//!   [PREDICT target] [USING algorithm] [WITH (key = value, ...)]
//!   AS <query>
//! CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name
//!   DETECT ANOMALIES [USING isolation_forest] [WITH (key = value, ...)] AS <query>
//! CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name
//!   DETECT ANOMALIES IN value TIME time [BY id [, ...]] [WITH (key = value, ...)] AS <query>
//! CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name
//!   FORECAST value TIME time [BY id [, ...]] [USING method] [WITH (key = value, ...)]
//!   AS <query>
//! CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name FROM 'model.onnx' | 's3://…'
//!   [WITH (task = …, labels = …, inputs = …, outputs = …, target = …, device = …)]
//! DROP MODEL [IF EXISTS] name [VERSION n]
//! ALTER MODEL name DEPLOY VERSION n | ROLLBACK | RETIRE VERSION n
//! ALTER MODEL name SET RETRAIN EVERY 'interval' [AT 'HH:MM'] | RESET RETRAIN
//! RETRAIN MODEL name
//! SHOW MODELS
//! DESCRIBE MODEL name          -- also DESC MODEL
//! EXPORT MODEL name [VERSION n] TO 'model.onnx' | 's3://...'
//! ```
//! They are read from the script's one token stream by [`crate::parser`]; the `AS` query is
//! kept as a syntax tree, with its source text for the registry.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{Ident, Query};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::parser::byte_offset;

use crate::error::{EngineError, EngineResult, StatusCode};

/// A parsed model statement.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatement {
    /// `CREATE [OR REPLACE] MODEL`.
    Create {
        /// Model name (unquoted names lower-cased, as Postgres does).
        name: String,
        /// `OR REPLACE`: add a version to an existing model.
        replace: bool,
        /// `IF NOT EXISTS`: do nothing when it exists.
        if_not_exists: bool,
        /// `PREDICT <column>`.
        target: Option<String>,
        /// `FORECAST <value> TIME <time> [BY <ids>]`, or with `detect_anomalies`
        /// `DETECT ANOMALIES IN <value> TIME <time> [BY <ids>]`: the model's series.
        series: Option<SeriesClause>,
        /// `DETECT ANOMALIES`.
        detect_anomalies: bool,
        /// `USING <algorithm>`.
        algorithm: Option<String>,
        /// `WITH (...)`, keys lower-cased.
        options: BTreeMap<String, String>,
        /// The training query.
        query: Box<Query>,
        /// The training query's source text (shown in `system.model_versions`).
        query_text: String,
    },
    /// `CREATE [OR REPLACE] MODEL name FROM 'source'`: import a model file.
    Import {
        /// Model name.
        name: String,
        /// `OR REPLACE`: add a version to an existing model.
        replace: bool,
        /// `IF NOT EXISTS`: do nothing when it exists.
        if_not_exists: bool,
        /// The file's path or URL, as written.
        source: String,
        /// `WITH (...)`, keys lower-cased.
        options: BTreeMap<String, String>,
    },
    /// `DROP MODEL`.
    Drop {
        /// Model name.
        name: String,
        /// `IF EXISTS`.
        if_exists: bool,
        /// `VERSION n`: drop that version only.
        version: Option<u32>,
    },
    /// `RETRAIN MODEL name`: run the deployed version's definition again on current data.
    Retrain {
        /// Model name.
        name: String,
    },
    /// `ALTER MODEL name …`: a lifecycle change.
    Alter {
        /// Model name.
        name: String,
        /// What changes.
        action: ModelAction,
    },
    /// `SHOW MODELS`.
    Show,
    /// `DESCRIBE MODEL`.
    Describe {
        /// Model name.
        name: String,
    },
    /// `EXPORT MODEL name [VERSION n] TO 'target'`.
    Export {
        /// Model name.
        name: String,
        /// `VERSION n`; `None` = the current version.
        version: Option<u32>,
        /// The file's path or URL, as written.
        target: String,
    },
}

impl ModelStatement {
    /// For `CREATE MODEL`: the `CREATE OR REPLACE MODEL` statement that trains the same model
    /// again, which each version records so `RETRAIN MODEL` can run it on current data.
    pub(crate) fn definition(&self) -> Option<String> {
        let ModelStatement::Create {
            name,
            target,
            series,
            detect_anomalies,
            algorithm,
            options,
            query_text,
            ..
        } = self
        else {
            return None;
        };
        let mut sql = format!("CREATE OR REPLACE MODEL {}", ident_sql(name));
        if let Some(t) = target {
            sql.push_str(&format!(" PREDICT {}", ident_sql(t)));
        }
        if *detect_anomalies {
            sql.push_str(" DETECT ANOMALIES");
        }
        if let Some(f) = series {
            sql.push_str(&format!(
                " {} {} TIME {}",
                if *detect_anomalies { "IN" } else { "FORECAST" },
                ident_sql(&f.value),
                ident_sql(&f.time)
            ));
            if !f.ids.is_empty() {
                let ids: Vec<String> = f.ids.iter().map(|i| ident_sql(i)).collect();
                sql.push_str(&format!(" BY {}", ids.join(", ")));
            }
        }
        if let Some(a) = algorithm {
            sql.push_str(&format!(" USING {}", ident_sql(a)));
        }
        if !options.is_empty() {
            let o: Vec<String> = options
                .iter()
                .map(|(k, v)| format!("{} = '{}'", ident_sql(k), v.replace('\'', "''")))
                .collect();
            sql.push_str(&format!(" WITH ({})", o.join(", ")));
        }
        sql.push_str(" AS ");
        sql.push_str(query_text);
        Some(sql)
    }
}

/// A name as SQL writes it: bare when reading it back gives the same name, else quoted.
fn ident_sql(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// What `ALTER MODEL` changes.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelAction {
    /// `DEPLOY VERSION n`.
    Deploy(u32),
    /// `ROLLBACK`: back to the version deployed before.
    Rollback,
    /// `RETIRE VERSION n`.
    Retire(u32),
    /// `SET RETRAIN EVERY 'interval' [AT 'HH:MM']`.
    SetRetrain {
        /// The interval as written (`'1 day'`).
        every: String,
        /// The time of day runs align to.
        at: Option<String>,
    },
    /// `RESET RETRAIN`: no more scheduled retraining.
    ResetRetrain,
    /// `SET LOGGING (sample = 0.1, key = 'customer_id' [, table = 'name'] [, max_rows = n])`.
    SetLogging(BTreeMap<String, String>),
    /// `RESET LOGGING`: predictions are no longer logged (the log table stays).
    ResetLogging,
    /// `SET OUTCOMES FROM (SELECT key, actual [, ts] FROM …)`.
    SetOutcomes(Box<datafusion::sql::sqlparser::ast::Query>),
    /// `RESET OUTCOMES`.
    ResetOutcomes,
    /// `SET ROLLBACK | RETRAIN WHEN <rule on live metrics> [OVER 'interval']`.
    SetLiveRule {
        /// Which rule.
        kind: prognos_catalog::LiveRuleKind,
        /// The condition (`live_auc < 0.7`).
        rule: Box<datafusion::sql::sqlparser::ast::Expr>,
        /// The window the live metrics are computed over (`'1 day'` when not given).
        over: Option<String>,
    },
    /// `RESET ROLLBACK`: no automatic rollback.
    ResetRollback,
    /// `SET FALLBACK 'other'`: the model that answers when this one fails.
    SetFallback(String),
    /// `RESET FALLBACK`.
    ResetFallback,
    /// `SET CACHE (entries = n)`: cache answers to repeated identical inputs.
    SetCache(BTreeMap<String, String>),
    /// `RESET CACHE`.
    ResetCache,
    /// `OWNER TO role`.
    OwnerTo(String),
}

impl std::fmt::Display for ModelAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelAction::Deploy(v) => write!(f, "DEPLOY VERSION {v}"),
            ModelAction::Rollback => f.write_str("ROLLBACK"),
            ModelAction::Retire(v) => write!(f, "RETIRE VERSION {v}"),
            ModelAction::SetRetrain { every, at } => {
                write!(f, "SET RETRAIN EVERY '{}'", every.replace('\'', "''"))?;
                match at {
                    Some(at) => write!(f, " AT '{}'", at.replace('\'', "''")),
                    None => Ok(()),
                }
            }
            ModelAction::ResetRetrain => f.write_str("RESET RETRAIN"),
            ModelAction::SetLogging(options) => {
                let o: Vec<String> = options
                    .iter()
                    .map(|(k, v)| format!("{} = '{}'", ident_sql(k), v.replace('\'', "''")))
                    .collect();
                write!(f, "SET LOGGING ({})", o.join(", "))
            }
            ModelAction::ResetLogging => f.write_str("RESET LOGGING"),
            ModelAction::SetOutcomes(q) => write!(f, "SET OUTCOMES FROM ({q})"),
            ModelAction::ResetOutcomes => f.write_str("RESET OUTCOMES"),
            ModelAction::SetLiveRule { kind, rule, over } => {
                let what = match kind {
                    prognos_catalog::LiveRuleKind::Rollback => "ROLLBACK",
                    prognos_catalog::LiveRuleKind::Retrain => "RETRAIN",
                };
                write!(f, "SET {what} WHEN {rule}")?;
                match over {
                    Some(o) => write!(f, " OVER '{}'", o.replace('\'', "''")),
                    None => Ok(()),
                }
            }
            ModelAction::ResetRollback => f.write_str("RESET ROLLBACK"),
            ModelAction::SetFallback(m) => write!(f, "SET FALLBACK '{}'", m.replace('\'', "''")),
            ModelAction::ResetFallback => f.write_str("RESET FALLBACK"),
            ModelAction::SetCache(options) => {
                let o: Vec<String> = options
                    .iter()
                    .map(|(k, v)| format!("{} = '{}'", ident_sql(k), v.replace('\'', "''")))
                    .collect();
                write!(f, "SET CACHE ({})", o.join(", "))
            }
            ModelAction::ResetCache => f.write_str("RESET CACHE"),
            ModelAction::OwnerTo(r) => write!(f, "OWNER TO {}", ident_sql(r)),
        }
    }
}

/// The series of a forecasting model or a series detector.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesClause {
    /// `FORECAST <value>` / `DETECT ANOMALIES IN <value>`.
    pub value: String,
    /// `TIME <column>`.
    pub time: String,
    /// `BY <column>, ...`.
    pub ids: Vec<String>,
}

fn syntax(msg: impl Into<String>) -> EngineError {
    EngineError::statement(StatusCode::SyntaxError, msg)
}

/// An identifier as a name: unquoted ones lower-cased, as PostgreSQL folds them.
pub(crate) fn ident_name(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

pub(crate) fn expect_word(p: &mut Parser<'_>, w: &str) -> EngineResult<()> {
    let t = p.next_token();
    if is_word(&t.token, w) {
        Ok(())
    } else {
        Err(syntax(format!(
            "syntax error at or near \"{}\": expected {}",
            t.token,
            w.to_ascii_uppercase()
        )))
    }
}

fn parse_err(e: impl std::fmt::Display) -> EngineError {
    syntax(e.to_string())
}

/// Parse the model statement at the parser; `sql` is the script the parser reads.
pub(crate) fn parse(p: &mut Parser<'_>, sql: &str) -> EngineResult<ModelStatement> {
    let first = p.next_token();
    if is_word(&first.token, "show") {
        expect_word(p, "models")?;
        return finish(p, ModelStatement::Show);
    }
    if is_word(&first.token, "describe") || is_word(&first.token, "desc") {
        expect_word(p, "model")?;
        let name = ident_name(&p.parse_identifier().map_err(parse_err)?);
        return finish(p, ModelStatement::Describe { name });
    }
    if is_word(&first.token, "alter") {
        expect_word(p, "model")?;
        let name = ident_name(&p.parse_identifier().map_err(parse_err)?);
        let t = p.next_token();
        let action = if is_word(&t.token, "deploy") {
            expect_word(p, "version")?;
            ModelAction::Deploy(version_number(p)?)
        } else if is_word(&t.token, "rollback") {
            ModelAction::Rollback
        } else if is_word(&t.token, "owner") {
            p.expect_keyword(Keyword::TO).map_err(parse_err)?;
            ModelAction::OwnerTo(ident_name(&p.parse_identifier().map_err(parse_err)?))
        } else if is_word(&t.token, "retire") {
            expect_word(p, "version")?;
            ModelAction::Retire(version_number(p)?)
        } else if p_is_set(&t.token) && is_word(&p.peek_token().token, "logging") {
            p.next_token();
            ModelAction::SetLogging(parse_options(p)?)
        } else if p_is_set(&t.token) && is_word(&p.peek_token().token, "outcomes") {
            p.next_token();
            if !p.parse_keyword(Keyword::FROM) {
                return Err(syntax(format!(
                    "syntax error at or near \"{}\": expected FROM (SELECT key, actual, ts \
                     FROM ...)",
                    p.peek_token().token
                )));
            }
            p.expect_token(&Token::LParen).map_err(parse_err)?;
            let query = p.parse_query().map_err(parse_err)?;
            p.expect_token(&Token::RParen).map_err(parse_err)?;
            ModelAction::SetOutcomes(query)
        } else if p_is_set(&t.token) && is_word(&p.peek_token().token, "fallback") {
            p.next_token();
            ModelAction::SetFallback(quoted_string(
                p,
                "SET FALLBACK takes the other model's name as a string ('churn_v1')",
            )?)
        } else if p_is_set(&t.token) && is_word(&p.peek_token().token, "cache") {
            p.next_token();
            ModelAction::SetCache(parse_options(p)?)
        } else if p_is_set(&t.token)
            && let Some(kind) = live_rule_kind(p)
        {
            let rule = p.parse_expr().map_err(parse_err)?;
            let over = if p.parse_keyword(Keyword::OVER) {
                Some(quoted_string(
                    p,
                    "OVER takes the window as a string ('1 day')",
                )?)
            } else {
                None
            };
            ModelAction::SetLiveRule {
                kind,
                rule: Box::new(rule),
                over,
            }
        } else if p_is_set(&t.token) {
            expect_word(p, "retrain")?;
            expect_word(p, "every")?;
            let every = quoted_string(
                p,
                "SET RETRAIN EVERY takes the interval as a string ('1 day')",
            )?;
            let at = if is_word(&p.peek_token().token, "at") {
                p.next_token();
                Some(quoted_string(
                    p,
                    "AT takes a time of day as a string ('02:00')",
                )?)
            } else {
                None
            };
            ModelAction::SetRetrain { every, at }
        } else if is_word(&t.token, "reset") {
            let what = p.next_token();
            if is_word(&what.token, "retrain") {
                ModelAction::ResetRetrain
            } else if is_word(&what.token, "logging") {
                ModelAction::ResetLogging
            } else if is_word(&what.token, "outcomes") {
                ModelAction::ResetOutcomes
            } else if is_word(&what.token, "rollback") {
                ModelAction::ResetRollback
            } else if is_word(&what.token, "fallback") {
                ModelAction::ResetFallback
            } else if is_word(&what.token, "cache") {
                ModelAction::ResetCache
            } else {
                return Err(syntax(format!(
                    "syntax error at or near \"{}\": expected RETRAIN, ROLLBACK, LOGGING, \
                     OUTCOMES, FALLBACK or CACHE",
                    what.token
                )));
            }
        } else {
            return Err(syntax(format!(
                "syntax error at or near \"{}\": expected DEPLOY VERSION n, ROLLBACK, \
                 RETIRE VERSION n, SET RETRAIN EVERY '...', SET LOGGING (...), SET OUTCOMES \
                 FROM (...), SET ROLLBACK | RETRAIN WHEN ..., SET FALLBACK '...', SET CACHE \
                 (...) or RESET RETRAIN | ROLLBACK | LOGGING | OUTCOMES | FALLBACK | CACHE",
                t.token
            )));
        };
        return finish(p, ModelStatement::Alter { name, action });
    }
    if is_word(&first.token, "retrain") {
        expect_word(p, "model")?;
        let name = ident_name(&p.parse_identifier().map_err(parse_err)?);
        return finish(p, ModelStatement::Retrain { name });
    }
    if is_word(&first.token, "export") {
        expect_word(p, "model")?;
        let name = ident_name(&p.parse_identifier().map_err(parse_err)?);
        let version = optional_version(p)?;
        if !p.parse_keyword(Keyword::TO) {
            return Err(syntax(format!(
                "syntax error at or near \"{}\": expected TO 'file.onnx'",
                p.peek_token().token
            )));
        }
        let target = quoted_string(
            p,
            "EXPORT MODEL ... TO takes the file as a quoted path or URL",
        )?;
        return finish(
            p,
            ModelStatement::Export {
                name,
                version,
                target,
            },
        );
    }
    if is_word(&first.token, "drop") {
        expect_word(p, "model")?;
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = ident_name(&p.parse_identifier().map_err(parse_err)?);
        let version = optional_version(p)?;
        return finish(
            p,
            ModelStatement::Drop {
                name,
                if_exists,
                version,
            },
        );
    }
    // CREATE [OR REPLACE] MODEL
    let replace = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
    expect_word(p, "model")?;
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = ident_name(&p.parse_identifier().map_err(parse_err)?);
    if p.parse_keyword(Keyword::FROM) {
        let source = quoted_string(
            p,
            "CREATE MODEL ... FROM takes the model file as a quoted path or URL",
        )?;
        let options = if p.parse_keyword(Keyword::WITH) {
            parse_options(p)?
        } else {
            BTreeMap::new()
        };
        return finish(
            p,
            ModelStatement::Import {
                name,
                replace,
                if_not_exists,
                source,
                options,
            },
        );
    }
    let (mut target, mut algorithm, mut options) = (None, None, BTreeMap::new());
    let (mut value, mut time, mut ids) = (None, None, vec![]);
    let (mut detect_anomalies, mut forecast) = (false, false);
    loop {
        let t = p.peek_token();
        if is_word(&t.token, "detect") {
            p.next_token();
            expect_word(p, "anomalies")?;
            detect_anomalies = true;
            if p.parse_keyword(Keyword::IN) {
                value = Some(ident_name(&p.parse_identifier().map_err(parse_err)?));
            }
        } else if is_word(&t.token, "predict") {
            p.next_token();
            target = Some(ident_name(&p.parse_identifier().map_err(parse_err)?));
        } else if is_word(&t.token, "forecast") {
            p.next_token();
            forecast = true;
            value = Some(ident_name(&p.parse_identifier().map_err(parse_err)?));
        } else if is_word(&t.token, "time") {
            p.next_token();
            time = Some(ident_name(&p.parse_identifier().map_err(parse_err)?));
        } else if p.parse_keyword(Keyword::BY) {
            loop {
                ids.push(ident_name(&p.parse_identifier().map_err(parse_err)?));
                if !p.consume_token(&Token::Comma) {
                    break;
                }
            }
        } else if p.parse_keyword(Keyword::USING) {
            algorithm = Some(ident_name(&p.parse_identifier().map_err(parse_err)?));
        } else if p.parse_keyword(Keyword::WITH) {
            options = parse_options(p)?;
        } else if p.parse_keyword(Keyword::AS) {
            break;
        } else {
            return Err(syntax(format!(
                "syntax error at or near \"{}\": expected PREDICT, FORECAST, TIME, BY, DETECT \
                 ANOMALIES, USING, WITH or AS",
                t.token
            )));
        }
    }
    let start = p.peek_token_ref().span.start;
    if matches!(p.peek_token_ref().token, Token::EOF | Token::SemiColon) {
        return Err(syntax("CREATE MODEL needs a training query after AS"));
    }
    let query = p.parse_query().map_err(parse_err)?;
    let end = p.get_current_token().span.end;
    let query_text = sql[byte_offset(sql, start)..byte_offset(sql, end)].to_string();
    if !matches!(p.peek_token_ref().token, Token::EOF | Token::SemiColon) {
        return Err(syntax(format!(
            "syntax error at or near \"{}\": CREATE MODEL ... AS takes one query",
            p.peek_token_ref().token
        )));
    }
    if detect_anomalies && (target.is_some() || forecast) {
        return Err(syntax(
            "DETECT ANOMALIES models score rows without a target: drop PREDICT / FORECAST",
        ));
    }
    let series = match (value, time) {
        (Some(value), Some(time)) => {
            if target.is_some() {
                return Err(syntax(
                    "a model either predicts a column (PREDICT) or forecasts one (FORECAST), \
                     not both",
                ));
            }
            Some(SeriesClause { value, time, ids })
        }
        (Some(_), None) if detect_anomalies => {
            return Err(syntax(
                "CREATE MODEL ... DETECT ANOMALIES IN value needs the time column: DETECT \
                 ANOMALIES IN value TIME t",
            ));
        }
        (Some(_), None) => {
            return Err(syntax(
                "CREATE MODEL ... FORECAST needs the time column: FORECAST value TIME t",
            ));
        }
        (None, Some(_)) => {
            return Err(syntax(
                "TIME belongs to CREATE MODEL ... FORECAST value TIME t or DETECT ANOMALIES IN \
                 value TIME t",
            ));
        }
        (None, None) if !ids.is_empty() => {
            return Err(syntax(
                "BY belongs to CREATE MODEL ... FORECAST or DETECT ANOMALIES IN value TIME t",
            ));
        }
        (None, None) => None,
    };
    Ok(ModelStatement::Create {
        name,
        replace,
        if_not_exists,
        target,
        series,
        detect_anomalies,
        algorithm,
        options,
        query,
        query_text,
    })
}

/// After `SET`: `ROLLBACK WHEN` or `RETRAIN WHEN`, consumed, as the rule's kind; anything
/// else is left to be read.
fn live_rule_kind(p: &mut Parser<'_>) -> Option<prognos_catalog::LiveRuleKind> {
    let kind = match &p.peek_token().token {
        t if is_word(t, "rollback") => prognos_catalog::LiveRuleKind::Rollback,
        t if is_word(t, "retrain") => prognos_catalog::LiveRuleKind::Retrain,
        _ => return None,
    };
    if !is_word(&p.peek_nth_token(1).token, "when") {
        return None;
    }
    p.next_token();
    p.next_token();
    Some(kind)
}

fn p_is_set(t: &Token) -> bool {
    matches!(t, Token::Word(w) if w.keyword == Keyword::SET)
}

/// A version number (`VERSION` already read).
fn version_number(p: &mut Parser<'_>) -> EngineResult<u32> {
    let n = p.parse_literal_uint().map_err(parse_err)?;
    match u32::try_from(n) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(syntax(format!("version {n} is out of range"))),
    }
}

/// `[VERSION n]`.
fn optional_version(p: &mut Parser<'_>) -> EngineResult<Option<u32>> {
    if is_word(&p.peek_token().token, "version") {
        p.next_token();
        version_number(p).map(Some)
    } else {
        Ok(None)
    }
}

/// A quoted string literal (not a bare word, which the parser would also read as one).
fn quoted_string(p: &mut Parser<'_>, what: &str) -> EngineResult<String> {
    let text = match p.next_token().token {
        Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s) => s,
        Token::DollarQuotedString(d) => d.value,
        other => {
            return Err(syntax(format!(
                "syntax error at or near \"{other}\": {what}"
            )));
        }
    };
    if text.is_empty() {
        return Err(syntax(format!("{what}, not an empty string")));
    }
    Ok(text)
}

/// `(key = value, ...)` after `WITH`; keys lower-cased, quoted values unquoted.
fn parse_options(p: &mut Parser<'_>) -> EngineResult<BTreeMap<String, String>> {
    let mut options = BTreeMap::new();
    p.expect_token(&Token::LParen).map_err(parse_err)?;
    loop {
        let key = ident_name(&p.parse_identifier().map_err(parse_err)?);
        p.expect_token(&Token::Eq).map_err(parse_err)?;
        let v = p.parse_expr().map_err(parse_err)?;
        let value = match v {
            datafusion::sql::sqlparser::ast::Expr::Value(v) => match v.value {
                datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s) => s,
                other => other.to_string(),
            },
            datafusion::sql::sqlparser::ast::Expr::Identifier(i) => i.value,
            other => other.to_string(),
        };
        options.insert(key, value);
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen).map_err(parse_err)?;
    Ok(options)
}

fn finish(p: &mut Parser<'_>, s: ModelStatement) -> EngineResult<ModelStatement> {
    let t = p.peek_token();
    if matches!(t.token, Token::EOF | Token::SemiColon) {
        Ok(s)
    } else {
        Err(syntax(format!("syntax error at or near \"{}\"", t.token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::PrognosDialect;

    fn parse_model_statement(sql: &str) -> EngineResult<ModelStatement> {
        let dialect = PrognosDialect::default();
        let mut p = Parser::new(&dialect).try_with_sql(sql).map_err(parse_err)?;
        parse(&mut p, sql)
    }

    #[test]
    fn a_definition_parses_back_to_the_same_statement_with_or_replace() {
        for sql in [
            "CREATE MODEL \"Churn\" PREDICT \"Left\" USING gbdt \
             WITH (num_trees = 50, gate = 'auc >= 0.8', note = 'it''s') AS SELECT a, \"B\" FROM t",
            "CREATE MODEL demand FORECAST amount TIME day BY store, region USING ets \
             WITH (horizon = 14) AS SELECT day, store, region, amount FROM sales",
            "CREATE MODEL odd DETECT ANOMALIES AS SELECT * FROM metrics",
            "CREATE MODEL alerts DETECT ANOMALIES IN \"Latency\" TIME ts BY host, dc \
             WITH (labels = 'incident') AS SELECT * FROM metrics",
        ] {
            let original = parse_model_statement(sql).expect(sql);
            let definition = original.definition().expect("a definition");
            let again = parse_model_statement(&definition).expect(&definition);
            let (ModelStatement::Create { replace, query, .. }, ModelStatement::Create { .. }) =
                (&again, &original)
            else {
                panic!("{definition}");
            };
            assert!(replace, "{definition}");
            assert_eq!(again.definition(), Some(definition.clone()));
            let strip = |m: &ModelStatement| match m.clone() {
                ModelStatement::Create {
                    name,
                    target,
                    series,
                    detect_anomalies,
                    algorithm,
                    options,
                    query_text,
                    ..
                } => (
                    name,
                    target,
                    series,
                    detect_anomalies,
                    algorithm,
                    options,
                    query_text,
                ),
                _ => unreachable!(),
            };
            assert_eq!(strip(&again), strip(&original), "{definition}");
            assert!(!query.body.to_string().is_empty());
        }
    }

    #[test]
    fn create_model_keeps_query_text() {
        let s = parse_model_statement(
            "CREATE OR REPLACE MODEL Churn PREDICT churned USING gbdt \
             WITH (num_trees = 50, time_budget = '10s', task = classification)\n  AS SELECT a, \"B\" FROM t WHERE x = 'é;'",
        )
        .expect("parse");
        let ModelStatement::Create {
            name,
            replace,
            target,
            algorithm,
            options,
            query_text,
            ..
        } = s
        else {
            panic!("not create: {s:?}")
        };
        assert_eq!(name, "churn");
        assert!(replace);
        assert_eq!(target.as_deref(), Some("churned"));
        assert_eq!(algorithm.as_deref(), Some("gbdt"));
        assert_eq!(options["num_trees"], "50");
        assert_eq!(options["time_budget"], "10s");
        assert_eq!(options["task"], "classification");
        assert_eq!(query_text, "SELECT a, \"B\" FROM t WHERE x = 'é;'");
    }

    #[test]
    fn create_series_detector_reads_its_series() {
        let s = parse_model_statement(
            "CREATE MODEL alerts DETECT ANOMALIES IN latency TIME ts BY host \
             WITH (labels = 'incident') AS SELECT * FROM t",
        )
        .expect("parse");
        let ModelStatement::Create {
            series: Some(f),
            detect_anomalies: true,
            algorithm: None,
            ..
        } = s
        else {
            panic!("not a series detector: {s:?}")
        };
        assert_eq!((f.value.as_str(), f.time.as_str()), ("latency", "ts"));
        assert_eq!(f.ids, vec!["host".to_string()]);
    }

    #[test]
    fn create_forecast_model_reads_its_series() {
        let s = parse_model_statement(
            "CREATE MODEL demand FORECAST Sales TIME day BY store, \"Region\" USING ets \
             WITH (horizon = 28) AS SELECT * FROM t",
        )
        .expect("parse");
        let ModelStatement::Create {
            series: Some(f),
            algorithm,
            options,
            ..
        } = s
        else {
            panic!("not a forecast model: {s:?}")
        };
        assert_eq!(f.value, "sales");
        assert_eq!(f.time, "day");
        assert_eq!(f.ids, vec!["store".to_string(), "Region".to_string()]);
        assert_eq!(algorithm.as_deref(), Some("ets"));
        assert_eq!(options["horizon"], "28");
    }

    #[test]
    fn create_model_from_a_file_reads_source_and_options() {
        let s = parse_model_statement(
            "CREATE OR REPLACE MODEL Iris FROM 's3://b/k/iris.onnx' \
             WITH (labels = 'setosa, versicolor', task = classification)",
        )
        .expect("parse");
        let ModelStatement::Import {
            name,
            replace,
            source,
            options,
            ..
        } = s
        else {
            panic!("not an import: {s:?}")
        };
        assert_eq!(name, "iris");
        assert!(replace);
        assert_eq!(source, "s3://b/k/iris.onnx");
        assert_eq!(options["labels"], "setosa, versicolor");
        assert_eq!(options["task"], "classification");
    }

    #[test]
    fn alter_model_reads_logging_and_outcomes() {
        let s = parse_model_statement(
            "ALTER MODEL Churn SET LOGGING (sample = 0.1, key = 'customer_id')",
        )
        .expect("parse");
        let ModelStatement::Alter {
            name,
            action: ModelAction::SetLogging(options),
        } = &s
        else {
            panic!("not SET LOGGING: {s:?}")
        };
        assert_eq!(name, "churn");
        assert_eq!(options["sample"], "0.1");
        assert_eq!(options["key"], "customer_id");
        let s = parse_model_statement(
            "ALTER MODEL m SET OUTCOMES FROM (SELECT id AS key, y AS actual FROM t)",
        )
        .expect("parse");
        let ModelStatement::Alter {
            action: action @ ModelAction::SetOutcomes(q),
            ..
        } = &s
        else {
            panic!("not SET OUTCOMES: {s:?}")
        };
        assert_eq!(q.to_string(), "SELECT id AS key, y AS actual FROM t");
        assert_eq!(
            action.to_string(),
            "SET OUTCOMES FROM (SELECT id AS key, y AS actual FROM t)"
        );
        for (sql, action) in [
            ("ALTER MODEL m RESET LOGGING", ModelAction::ResetLogging),
            ("ALTER MODEL m RESET OUTCOMES", ModelAction::ResetOutcomes),
            ("ALTER MODEL m RESET RETRAIN", ModelAction::ResetRetrain),
            ("ALTER MODEL m RESET ROLLBACK", ModelAction::ResetRollback),
        ] {
            let s = parse_model_statement(sql).expect(sql);
            assert_eq!(
                s,
                ModelStatement::Alter {
                    name: "m".into(),
                    action
                }
            );
        }
        let s = parse_model_statement(
            "ALTER MODEL m SET ROLLBACK WHEN live_auc < 0.7 AND live_rows >= 200 OVER '6 hours'",
        )
        .expect("parse");
        let ModelStatement::Alter {
            action: action @ ModelAction::SetLiveRule { rule, over, .. },
            ..
        } = &s
        else {
            panic!("not SET ROLLBACK WHEN: {s:?}")
        };
        assert_eq!(rule.to_string(), "live_auc < 0.7 AND live_rows >= 200");
        assert_eq!(over.as_deref(), Some("6 hours"));
        assert_eq!(
            action.to_string(),
            "SET ROLLBACK WHEN live_auc < 0.7 AND live_rows >= 200 OVER '6 hours'"
        );
        let s =
            parse_model_statement("ALTER MODEL m SET RETRAIN WHEN live_rmse > 3").expect("parse");
        assert!(matches!(
            s,
            ModelStatement::Alter {
                action: ModelAction::SetLiveRule {
                    kind: prognos_catalog::LiveRuleKind::Retrain,
                    over: None,
                    ..
                },
                ..
            }
        ));
        for sql in [
            "ALTER MODEL m SET LOGGING",
            "ALTER MODEL m SET LOGGING sample = 1",
            "ALTER MODEL m SET OUTCOMES (SELECT 1)",
            "ALTER MODEL m SET OUTCOMES FROM SELECT 1",
            "ALTER MODEL m SET OUTCOMES FROM (SELECT 1",
            "ALTER MODEL m RESET EVERYTHING",
            "ALTER MODEL m SET ROLLBACK WHEN",
            "ALTER MODEL m SET ROLLBACK WHEN live_auc < 0.7 OVER 1",
            "ALTER MODEL m SET ROLLBACK live_auc < 0.7",
        ] {
            let e = parse_model_statement(sql).expect_err(sql);
            assert_eq!(e.status(), StatusCode::SyntaxError, "{sql}");
        }
    }

    #[test]
    fn export_model_reads_version_and_target() {
        let s = parse_model_statement("EXPORT MODEL Churn VERSION 3 TO 's3://b/churn.onnx'")
            .expect("parse");
        assert_eq!(
            s,
            ModelStatement::Export {
                name: "churn".into(),
                version: Some(3),
                target: "s3://b/churn.onnx".into()
            }
        );
        let s = parse_model_statement("EXPORT MODEL m TO '/tmp/m.onnx'").expect("parse");
        assert!(matches!(s, ModelStatement::Export { version: None, .. }));
    }

    #[test]
    fn bad_model_statements_are_syntax_errors() {
        for sql in [
            "CREATE MODEL m PREDICT",
            "CREATE MODEL m USING gbdt",
            "CREATE MODEL m FOO AS SELECT 1",
            "DROP MODEL",
            "SHOW MODELS extra",
            "CREATE MODEL m FORECAST v AS SELECT 1",
            "CREATE MODEL m TIME t AS SELECT 1",
            "CREATE MODEL m BY s AS SELECT 1",
            "CREATE MODEL m PREDICT y FORECAST v TIME t AS SELECT 1",
            "CREATE MODEL m DETECT AS SELECT 1",
            "CREATE MODEL m DETECT ANOMALIES PREDICT y AS SELECT 1",
            "CREATE MODEL m DETECT ANOMALIES IN v AS SELECT 1",
            "CREATE MODEL m DETECT ANOMALIES IN v TIME t FORECAST v AS SELECT 1",
            "CREATE MODEL m DETECT ANOMALIES IN AS SELECT 1",
            "CREATE MODEL m AS",
            "CREATE MODEL m AS SELECT 1 SELECT 2",
            "CREATE MODEL m FROM model.onnx",
            "CREATE MODEL m FROM 'm.onnx' AS SELECT 1",
            "CREATE MODEL m FROM 'm.onnx' WITH (task)",
            "EXPORT MODEL m",
            "EXPORT MODEL m TO x.onnx",
            "EXPORT MODEL m VERSION TO 'x.onnx'",
            "EXPORT MODEL m TO 'x.onnx' extra",
            "EXPORT MODEL m TO nowhere",
            "EXPORT MODEL m TO ''",
            "CREATE MODEL m FROM somewhere",
        ] {
            let e = parse_model_statement(sql).expect_err(sql);
            assert_eq!(e.status(), StatusCode::SyntaxError, "{sql}");
        }
    }
}
