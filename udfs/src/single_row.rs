//! `prognos_single_row(x)`: the value of a scalar subquery as PostgreSQL defines it — NULL
//! for no row, the value of the one row, and an error (`21000`) for more than one.
//!
//! DataFusion plans a correlated scalar subquery only when it aggregates (`(SELECT max(v) …
//! WHERE t.id = o.id)`); PostgreSQL also takes `(SELECT v … WHERE t.id = o.id)` and fails at
//! run time if a key matches two rows. The engine wraps the select item of such subqueries in
//! this aggregate (on the statement tree), which keeps PostgreSQL's meaning and lets
//! DataFusion decorrelate them into joins like any aggregated subquery.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

/// The aggregate's name (not one a user would call).
pub const NAME: &str = "prognos_single_row";

/// PostgreSQL's message for a scalar subquery that returned more than one row.
pub const MORE_THAN_ONE_ROW: &str =
    "more than one row returned by a subquery used as an expression";

/// See the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SingleRow {
    signature: Signature,
}

impl Default for SingleRow {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for SingleRow {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(t) => Ok(t.clone()),
            None => exec_err!("{NAME} takes one argument"),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SingleRowAccumulator {
            value: ScalarValue::try_from(args.return_field.data_type())?,
            rows: 0,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(
                args.return_field
                    .as_ref()
                    .clone()
                    .with_name("value")
                    .with_nullable(true),
            ),
            Arc::new(Field::new("rows", DataType::UInt64, false)),
        ])
    }
}

/// The value seen and how many rows carried one.
#[derive(Debug)]
struct SingleRowAccumulator {
    value: ScalarValue,
    rows: u64,
}

impl SingleRowAccumulator {
    fn add(&mut self, value: ScalarValue, rows: u64) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        self.rows += rows;
        if self.rows > 1 {
            return exec_err!("{MORE_THAN_ONE_ROW}");
        }
        self.value = value;
        Ok(())
    }
}

impl Accumulator for SingleRowAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(array) = values.first() else {
            return Ok(());
        };
        match array.len() {
            0 => Ok(()),
            1 => self.add(ScalarValue::try_from_array(array, 0)?, 1),
            _ => exec_err!("{MORE_THAN_ONE_ROW}"),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (Some(values), Some(rows)) = (states.first(), states.get(1)) else {
            return exec_err!("{NAME}: malformed state");
        };
        let rows = rows.as_primitive::<UInt64Type>();
        for i in 0..rows.len() {
            if rows.is_valid(i) {
                self.add(ScalarValue::try_from_array(values, i)?, rows.value(i))?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            self.value.clone(),
            ScalarValue::UInt64(Some(self.rows)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.value.size() - std::mem::size_of_val(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn acc() -> SingleRowAccumulator {
        SingleRowAccumulator {
            value: ScalarValue::Int64(None),
            rows: 0,
        }
    }

    #[test]
    fn no_row_is_null_one_row_is_its_value_two_rows_fail() {
        let mut a = acc();
        assert_eq!(a.evaluate().expect("eval"), ScalarValue::Int64(None));
        let one: ArrayRef = Arc::new(Int64Array::from(vec![7]));
        a.update_batch(std::slice::from_ref(&one)).expect("one row");
        assert_eq!(a.evaluate().expect("eval"), ScalarValue::Int64(Some(7)));
        let err = a.update_batch(&[one]).expect_err("second row");
        assert!(err.to_string().contains(MORE_THAN_ONE_ROW), "{err}");
        let two: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        assert!(acc().update_batch(&[two]).is_err());
        // A NULL value is still a row.
        let null: ArrayRef = Arc::new(Int64Array::from(vec![None::<i64>]));
        let mut a = acc();
        a.update_batch(std::slice::from_ref(&null))
            .expect("null row");
        assert!(a.update_batch(&[null]).is_err());
    }
}
