//! `prognos_single_value(list)`: the value of a scalar subquery as PostgreSQL defines it —
//! NULL for no row, the value of the one row, and an error (`21000`) for more than one.
//!
//! DataFusion plans a correlated scalar subquery only when it aggregates (`(SELECT max(v) …
//! WHERE t.id = o.id)`); PostgreSQL also takes `(SELECT v … WHERE t.id = o.id)` and fails at
//! run time if a key matches two rows. The engine rewrites such a subquery (on the statement
//! tree) to `prognos_single_value((SELECT array_agg(v) … WHERE t.id = o.id))`: the subquery
//! aggregates, so DataFusion decorrelates it into a join, and the check runs where the value
//! is used — for the outer rows that exist, as in PostgreSQL, not for every key of the inner
//! table.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, new_null_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// The function's name (not one a user would call).
pub const NAME: &str = "prognos_single_value";

/// PostgreSQL's message for a scalar subquery that returned more than one row.
pub const MORE_THAN_ONE_ROW: &str =
    "more than one row returned by a subquery used as an expression";

/// See the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SingleValue {
    signature: Signature,
}

impl Default for SingleValue {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SingleValue {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(DataType::List(f) | DataType::LargeList(f)) => Ok(f.data_type().clone()),
            Some(DataType::Null) => Ok(DataType::Null),
            other => exec_err!("{NAME} takes a list, not {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return exec_err!("{NAME} takes one argument");
        };
        let lists = arg.to_array(args.number_rows)?;
        let out_type = args.return_field.data_type().clone();
        if matches!(lists.data_type(), DataType::Null) {
            return Ok(ColumnarValue::Array(new_null_array(&out_type, lists.len())));
        }
        let lists = lists.as_list::<i32>();
        let null = new_null_array(&out_type, 1);
        let mut pieces: Vec<ArrayRef> = Vec::with_capacity(lists.len());
        for i in 0..lists.len() {
            if lists.is_null(i) {
                pieces.push(Arc::clone(&null));
                continue;
            }
            let values = lists.value(i);
            match values.len() {
                0 => pieces.push(Arc::clone(&null)),
                1 => pieces.push(values),
                _ => return exec_err!("{MORE_THAN_ONE_ROW}"),
            }
        }
        let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
        Ok(ColumnarValue::Array(if refs.is_empty() {
            new_null_array(&out_type, 0)
        } else {
            concat(&refs)?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, ListArray};
    use datafusion::arrow::datatypes::{Field, Int64Type};
    use datafusion::config::ConfigOptions;

    fn call(list: ListArray) -> Result<ArrayRef> {
        let n = list.len();
        let args = ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(Arc::new(list))],
            arg_fields: vec![Arc::new(Field::new(
                "l",
                DataType::new_list(DataType::Int64, true),
                true,
            ))],
            number_rows: n,
            return_field: Arc::new(Field::new("v", DataType::Int64, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        match SingleValue::default().invoke_with_args(args)? {
            ColumnarValue::Array(a) => Ok(a),
            ColumnarValue::Scalar(s) => s.to_array(),
        }
    }

    #[test]
    fn no_row_is_null_one_row_is_its_value_two_rows_fail() {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            None,
            Some(vec![]),
            Some(vec![Some(7)]),
            Some(vec![None]),
        ]);
        let out = call(list).expect("values");
        let out = out.as_any().downcast_ref::<Int64Array>().expect("int64");
        assert!(out.is_null(0) && out.is_null(1) && out.is_null(3));
        assert_eq!(out.value(2), 7);
        let two =
            ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![Some(1), Some(2)])]);
        let err = call(two).expect_err("two rows");
        assert!(err.to_string().contains(MORE_THAN_ONE_ROW), "{err}");
    }
}
