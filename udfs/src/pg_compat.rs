//! Postgres-compatibility functions.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, NullArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::PG_SERVER_VERSION;

/// `version()`: `PostgreSQL 16.0 (prognos 0.1.0, Apache DataFusion …)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Version {
    signature: Signature,
}

impl ScalarUDFImpl for Version {
    fn name(&self) -> &str {
        "version"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            version_string(),
        ))))
    }
}

/// The text `version()` returns.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {PG_SERVER_VERSION} (prognos {}, Apache DataFusion {}) on x86_64-pc-linux-gnu, 64-bit",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    )
}

/// The `version()` UDF.
pub fn version_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Version {
        signature: Signature::exact(vec![], Volatility::Stable),
    })
}

/// `pg_sleep(seconds)`: waits without blocking a thread, so a cancel request stops it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgSleep {
    signature: Signature,
}

/// Longest sleep accepted, to keep a typo from pinning a connection for days.
const MAX_SLEEP_SECS: f64 = 3600.0;

impl ScalarUDFImpl for PgSleep {
    fn name(&self) -> &str {
        "pg_sleep"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Null)
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("pg_sleep can only be called asynchronously")
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for PgSleep {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let secs = match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => match s.cast_to(&DataType::Float64)? {
                ScalarValue::Float64(Some(v)) => v,
                _ => 0.0,
            },
            Some(ColumnarValue::Array(a)) => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Float64)?;
                let a = a.as_primitive::<Float64Type>();
                (0..a.len())
                    .filter(|i| a.is_valid(*i))
                    .map(|i| a.value(i))
                    .sum()
            }
            None => 0.0,
        };
        if !(0.0..=MAX_SLEEP_SECS).contains(&secs) && secs.is_finite() && secs > 0.0 {
            return exec_err!("pg_sleep: at most {MAX_SLEEP_SECS} seconds");
        }
        if secs.is_finite() && secs > 0.0 {
            tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
        }
        Ok(ColumnarValue::Array(Arc::new(NullArray::new(
            args.number_rows.max(1),
        ))))
    }
}

/// The `pg_sleep(seconds)` UDF.
pub fn pg_sleep_udf() -> ScalarUDF {
    AsyncScalarUDF::new(Arc::new(PgSleep {
        signature: Signature::numeric(1, Volatility::Volatile),
    }))
    .into_scalar_udf()
}

/// A catalog helper that returns the same value for every row (`pg_function_is_visible(oid)` is
/// always true: prognos has one search path and no shadowing; function signatures are not
/// tracked, so `pg_get_function_result` / `…_arguments` return empty text).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConstHelper {
    name: &'static str,
    signature: Signature,
    value: ScalarValue,
}

impl ScalarUDFImpl for ConstHelper {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.value.data_type())
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// The constant catalog helpers psql's `\df`, `\dT` and friends call.
pub fn const_helpers() -> Vec<ScalarUDF> {
    let helper = |name: &'static str, value: ScalarValue| {
        ScalarUDF::new_from_impl(ConstHelper {
            name,
            signature: Signature::variadic_any(Volatility::Stable),
            value,
        })
    };
    vec![
        helper("pg_function_is_visible", ScalarValue::Boolean(Some(true))),
        helper("pg_type_is_visible", ScalarValue::Boolean(Some(true))),
        helper(
            "pg_get_function_result",
            ScalarValue::Utf8(Some(String::new())),
        ),
        helper(
            "pg_get_function_arguments",
            ScalarValue::Utf8(Some(String::new())),
        ),
        helper(
            "pg_get_function_identity_arguments",
            ScalarValue::Utf8(Some(String::new())),
        ),
        // prognos has no sequences: no column is backed by one (SQLAlchemy's reflection asks).
        helper("pg_get_serial_sequence", ScalarValue::Utf8(None)),
        // …nor temporary schemas (dbt's catalog query skips other sessions' ones).
        helper("pg_is_other_temp_schema", ScalarValue::Boolean(Some(false))),
        // …nor indexes: PostgreSQL answers NULL for an oid that is not an index's.
        helper("pg_get_indexdef", ScalarValue::Utf8(None)),
    ]
}

/// `pg_get_expr(expr, relation [, pretty])`: the text of a stored expression (a column
/// default, an index predicate), NULL for NULL as in PostgreSQL, where the function is strict.
/// It replaces datafusion-pg-catalog's, which answers `''` for every row — also for the NULLs
/// of the `LEFT JOIN pg_attrdef` with which pgjdbc's `getColumns` reads column defaults.
/// prognos stores expressions as text, so the text is the answer.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgGetExpr {
    signature: Signature,
}

impl ScalarUDFImpl for PgGetExpr {
    fn name(&self) -> &str {
        "pg_get_expr"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(expr) = args.args.first() else {
            return exec_err!("pg_get_expr needs an expression");
        };
        match expr {
            ColumnarValue::Scalar(s) => Ok(ColumnarValue::Scalar(s.cast_to(&DataType::Utf8)?)),
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(datafusion::arrow::compute::cast(
                a,
                &DataType::Utf8,
            )?)),
        }
    }
}

/// `parse_ident(text [, strict])`: a qualified name split into its identifiers as PostgreSQL
/// splits it — unquoted parts folded to lower case, quoted parts kept (`""` is a quote),
/// whitespace around the dots ignored (`"public" . "t"`, as the ADBC driver writes it). It
/// replaces datafusion-pg-catalog's, which keeps that whitespace in the parts, so
/// `'"public" . "t"'::regclass` found nothing.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ParseIdent {
    signature: Signature,
}

/// The identifiers of `name` (see [`ParseIdent`]); `strict` rejects text after the name.
pub fn parse_ident(name: &str, strict: bool) -> std::result::Result<Vec<String>, String> {
    let invalid = || format!("string is not a valid identifier: \"{name}\"");
    let chars: Vec<char> = name.chars().collect();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let mut parts = vec![];
    skip_space(&mut i);
    loop {
        if i < chars.len() && chars[i] == '"' {
            let mut part = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(invalid()),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        part.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        part.push(*c);
                        i += 1;
                    }
                }
            }
            if part.is_empty() {
                return Err(invalid());
            }
            parts.push(part);
        } else {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            if i == start {
                return Err(invalid());
            }
            parts.push(chars[start..i].iter().collect::<String>().to_lowercase());
        }
        skip_space(&mut i);
        match chars.get(i) {
            Some('.') => {
                i += 1;
                skip_space(&mut i);
            }
            None => break,
            Some(_) if strict => return Err(invalid()),
            Some(_) => break,
        }
    }
    Ok(parts)
}

impl ScalarUDFImpl for ParseIdent {
    fn name(&self) -> &str {
        "parse_ident"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::new_list(DataType::Utf8, true))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let Some(names) = args.args.first() else {
            return exec_err!("parse_ident needs a name");
        };
        let names = datafusion::arrow::compute::cast(&names.to_array(n)?, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let strict = match args.args.get(1) {
            Some(s) => Some(datafusion::arrow::compute::cast(
                &s.to_array(n)?,
                &DataType::Boolean,
            )?),
            None => None,
        };
        let mut out = datafusion::arrow::array::ListBuilder::new(
            datafusion::arrow::array::StringBuilder::new(),
        );
        for i in 0..names.len() {
            if names.is_null(i) {
                out.append_null();
                continue;
            }
            let strict = strict
                .as_ref()
                .map(|s| s.as_boolean().is_valid(i) && s.as_boolean().value(i))
                .unwrap_or(true);
            match parse_ident(names.value(i), strict) {
                Ok(parts) => {
                    for p in parts {
                        out.values().append_value(p);
                    }
                    out.append(true);
                }
                Err(e) => return exec_err!("{e}"),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Functions that replace datafusion-pg-catalog's: register them after its set-up.
pub fn catalog_overrides() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(ParseIdent {
            signature: Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Any(1),
                    datafusion::logical_expr::TypeSignature::Any(2),
                ],
                Volatility::Immutable,
            ),
        }),
        ScalarUDF::new_from_impl(PgGetExpr {
            signature: Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Any(2),
                    datafusion::logical_expr::TypeSignature::Any(3),
                ],
                Volatility::Stable,
            ),
        }),
    ]
}

/// `prognos_pg_type_name(text)`: the `pg_type.typname` a type name means, as PostgreSQL's
/// type-name input reads it: SQL spellings (`integer`, `double precision`, `character
/// varying(10)`), a `pg_catalog.` qualifier, double quotes and `[]` (the array type,
/// `_int4`). `to_regtype(x)` is planned as a `pg_type` lookup by this name.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeName {
    signature: Signature,
}

/// SQL spellings of built-in types and their `typname`.
const TYPE_SPELLINGS: &[(&str, &str)] = &[
    ("integer", "int4"),
    ("int", "int4"),
    ("smallint", "int2"),
    ("bigint", "int8"),
    ("real", "float4"),
    ("float", "float8"),
    ("double precision", "float8"),
    ("boolean", "bool"),
    ("character varying", "varchar"),
    ("character", "bpchar"),
    ("char", "bpchar"),
    ("decimal", "numeric"),
    ("timestamp without time zone", "timestamp"),
    ("timestamp with time zone", "timestamptz"),
    ("time without time zone", "time"),
    ("time with time zone", "timetz"),
];

/// The `typname` of a type name (see [`PgTypeName`]).
pub fn pg_type_name(name: &str) -> String {
    let mut n = name.trim().to_string();
    let mut array = false;
    while let Some(inner) = n.strip_suffix("[]") {
        n = inner.trim_end().to_string();
        array = true;
    }
    let n = n.strip_prefix("pg_catalog.").unwrap_or(&n);
    let quoted = n.len() >= 2 && n.starts_with('"') && n.ends_with('"');
    let base = if quoted {
        n[1..n.len() - 1].to_string()
    } else {
        // A type modifier does not change the type: `varchar(10)`, `numeric(10, 2)`.
        let bare = n.split('(').next().unwrap_or(n).trim().to_lowercase();
        TYPE_SPELLINGS
            .iter()
            .find(|(spelling, _)| *spelling == bare)
            .map(|(_, typname)| typname.to_string())
            .unwrap_or(bare)
    };
    if array { format!("_{base}") } else { base }
}

impl ScalarUDFImpl for PgTypeName {
    fn name(&self) -> &str {
        "prognos_pg_type_name"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return exec_err!("prognos_pg_type_name needs a type name");
        };
        let names = arg.to_array(args.number_rows)?;
        let names = datafusion::arrow::compute::cast(&names, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let out: datafusion::arrow::array::StringArray = (0..names.len())
            .map(|i| names.is_valid(i).then(|| pg_type_name(names.value(i))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The `prognos_pg_type_name` UDF.
pub fn pg_type_name_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(PgTypeName {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

/// `prognos_catalog_array(x)`: a catalog vector column as an array. PostgreSQL's `int2vector`
/// / `oidvector` columns (`pg_index.indkey`, …) are arrays there, and `unnest` /
/// `generate_subscripts` take them; the catalog here stores them as text (`1 2`, or `{1,2}`
/// for `int2[]`). Text becomes a list of integers; a list passes through.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CatalogArray {
    signature: Signature,
}

/// The integers of a catalog vector's text form (`1 2`, `{1,2}`); `None` when one is not an
/// integer.
pub fn catalog_vector(text: &str) -> Option<Vec<i64>> {
    text.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<i64>().ok())
        .collect()
}

impl ScalarUDFImpl for CatalogArray {
    fn name(&self) -> &str {
        "prognos_catalog_array"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(match arg_types.first() {
            Some(
                t @ (DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)),
            ) => t.clone(),
            _ => DataType::new_list(DataType::Int64, true),
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return exec_err!("prognos_catalog_array needs an argument");
        };
        let values = arg.to_array(args.number_rows)?;
        if matches!(
            values.data_type(),
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
        ) {
            return Ok(ColumnarValue::Array(values));
        }
        let text = datafusion::arrow::compute::cast(&values, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let mut out = datafusion::arrow::array::ListBuilder::new(
            datafusion::arrow::array::Int64Builder::new(),
        );
        for i in 0..text.len() {
            if text.is_null(i) {
                out.append_null();
                continue;
            }
            let Some(items) = catalog_vector(text.value(i)) else {
                return exec_err!("not an integer vector: {}", text.value(i));
            };
            out.values().append_slice(&items);
            out.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The `prognos_catalog_array` UDF.
pub fn catalog_array_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(CatalogArray {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

/// `prognos_like_escape(pattern, escape)`: a LIKE pattern written with `ESCAPE 'c'` rewritten
/// with backslash escapes, the only escape character DataFusion's LIKE takes (SQLAlchemy
/// writes `NOT LIKE 'pg/_%' ESCAPE '/'`). `c` followed by a character makes that character
/// literal; a backslash that is not the escape character is literal.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LikeEscape {
    signature: Signature,
}

/// The pattern `pattern` (escape character `escape`) with backslash escapes.
pub fn like_escape(pattern: &str, escape: char) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == escape {
            match chars.next() {
                Some(n @ ('%' | '_' | '\\')) => {
                    out.push('\\');
                    out.push(n);
                }
                Some(n) => out.push(n),
                None => {}
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

impl ScalarUDFImpl for LikeEscape {
    fn name(&self) -> &str {
        "prognos_like_escape"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [pattern, escape] = args.args.as_slice() else {
            return exec_err!("prognos_like_escape takes a pattern and an escape character");
        };
        let escape = match escape {
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Utf8)? {
                ScalarValue::Utf8(Some(e)) => e,
                _ => return exec_err!("ESCAPE must be a non-NULL character"),
            },
            ColumnarValue::Array(_) => return exec_err!("ESCAPE must be a constant"),
        };
        let mut it = escape.chars();
        let (Some(escape), None) = (it.next(), it.next()) else {
            return exec_err!("invalid escape string: ESCAPE must be one character");
        };
        let patterns = pattern.to_array(args.number_rows)?;
        let patterns = datafusion::arrow::compute::cast(&patterns, &DataType::Utf8)?;
        let patterns = patterns.as_string::<i32>();
        let out: datafusion::arrow::array::StringArray = (0..patterns.len())
            .map(|i| {
                patterns
                    .is_valid(i)
                    .then(|| like_escape(patterns.value(i), escape))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The `prognos_like_escape` UDF.
pub fn like_escape_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(LikeEscape {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

#[cfg(test)]
mod tests {
    use super::{catalog_vector, like_escape, parse_ident, pg_type_name};

    #[test]
    fn identifiers_split_as_postgres_splits_them() {
        let ok = |s: &str| parse_ident(s, true).expect(s);
        assert_eq!(ok("\"public\" . \"T\""), vec!["public", "T"]);
        assert_eq!(ok("Public.Sales"), vec!["public", "sales"]);
        assert_eq!(ok("  a.\"b\"\"c\" "), vec!["a", "b\"c"]);
        assert!(parse_ident("a.", true).is_err());
        assert!(parse_ident("\"\"", true).is_err());
        assert!(parse_ident("a b", true).is_err());
        assert_eq!(parse_ident("a b", false).expect("lenient"), vec!["a"]);
    }

    #[test]
    fn like_patterns_with_another_escape_character() {
        assert_eq!(like_escape("pg/_%", '/'), "pg\\_%");
        assert_eq!(like_escape("a//b", '/'), "a/b");
        assert_eq!(like_escape("50/%", '/'), "50\\%");
        assert_eq!(like_escape("c:\\x%", '/'), "c:\\\\x%");
    }

    #[test]
    fn catalog_vectors_read_both_text_forms() {
        assert_eq!(catalog_vector("1 2"), Some(vec![1, 2]));
        assert_eq!(catalog_vector("{3,-4}"), Some(vec![3, -4]));
        assert_eq!(catalog_vector(""), Some(vec![]));
        assert_eq!(catalog_vector("1 x"), None);
    }

    #[test]
    fn type_names_read_as_postgres_reads_them() {
        for (input, typname) in [
            ("int4", "int4"),
            ("integer", "int4"),
            ("Double Precision", "float8"),
            ("pg_catalog.timestamptz", "timestamptz"),
            ("character varying(10)", "varchar"),
            ("text[]", "_text"),
            ("\"MyType\"", "MyType"),
            ("hstore", "hstore"),
        ] {
            assert_eq!(pg_type_name(input), typname, "{input}");
        }
    }
}
