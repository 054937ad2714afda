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

/// Functions that replace datafusion-pg-catalog's: register them after its set-up.
pub fn catalog_overrides() -> Vec<ScalarUDF> {
    vec![ScalarUDF::new_from_impl(PgGetExpr {
        signature: Signature::one_of(
            vec![
                datafusion::logical_expr::TypeSignature::Any(2),
                datafusion::logical_expr::TypeSignature::Any(3),
            ],
            Volatility::Stable,
        ),
    })]
}
