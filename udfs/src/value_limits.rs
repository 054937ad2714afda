//! A bound on the values that functions build: `repeat`, `lpad` and `rpad` refuse, before
//! they allocate anything, to make a value — or a batch of values — larger than the
//! configured `engine.max_value_mb` (PostgreSQL refuses values over 1 GB the same way, with
//! `54000`). Without it `SELECT length(repeat('x', 2000000000))` allocates 2 GB.
//!
//! Each is DataFusion's own function, wrapped: the wrapper checks the sizes its arguments ask
//! for and hands the call on unchanged.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// A function was asked to build a value over the limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "{function}: the result would take {bytes} bytes, more than the largest value allowed ({limit} bytes, engine.max_value_mb)"
)]
pub struct ValueTooLarge {
    /// The function.
    pub function: &'static str,
    /// The bytes it would have built.
    pub bytes: u64,
    /// The limit.
    pub limit: u64,
}

/// Which function, and how its result size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Builder {
    /// `repeat(text, n)`: `len(text) × n`.
    Repeat,
    /// `lpad` / `rpad(text, n [, fill])`: `n` characters, up to 4 bytes each.
    Pad(&'static str),
}

impl Builder {
    fn name(self) -> &'static str {
        match self {
            Builder::Repeat => "repeat",
            Builder::Pad(name) => name,
        }
    }
}

#[derive(Debug)]
struct Limited {
    inner: Arc<ScalarUDF>,
    builder: Builder,
    limit: u64,
}

impl PartialEq for Limited {
    fn eq(&self, other: &Self) -> bool {
        self.builder == other.builder && self.limit == other.limit && self.inner == other.inner
    }
}
impl Eq for Limited {}
impl Hash for Limited {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.builder.hash(state);
        self.limit.hash(state);
    }
}

/// The values of an integer argument, row by row (`None`: NULL).
fn counts(arg: &ColumnarValue, rows: usize) -> Result<Vec<Option<i64>>> {
    let array = arg.to_array(rows)?;
    let array = datafusion::arrow::compute::cast(&array, &DataType::Int64)?;
    Ok(array.as_primitive::<Int64Type>().iter().collect())
}

/// The byte lengths of a text argument, row by row.
fn lengths(arg: &ColumnarValue, rows: usize) -> Result<Vec<u64>> {
    let array = arg.to_array(rows)?;
    let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
    let text = array.as_string::<i32>();
    Ok((0..text.len())
        .map(|i| {
            if text.is_null(i) {
                0
            } else {
                text.value(i).len() as u64
            }
        })
        .collect())
}

impl Limited {
    /// The bytes the call would build, summed over its rows.
    fn wanted(&self, args: &ScalarFunctionArgs) -> Result<u64> {
        let rows = args.number_rows;
        let mut total: u64 = 0;
        match self.builder {
            Builder::Repeat => {
                let (Some(text), Some(n)) = (args.args.first(), args.args.get(1)) else {
                    return Ok(0);
                };
                let lens = lengths(text, rows)?;
                for (len, n) in lens.iter().zip(counts(n, rows)?) {
                    let n = n.unwrap_or(0).max(0) as u64;
                    total = total.saturating_add(len.saturating_mul(n));
                }
            }
            Builder::Pad(_) => {
                let Some(n) = args.args.get(1) else {
                    return Ok(0);
                };
                for n in counts(n, rows)? {
                    total = total.saturating_add(n.unwrap_or(0).max(0) as u64);
                }
            }
        }
        Ok(total)
    }
}

impl ScalarUDFImpl for Limited {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.wanted(&args)?;
        if bytes > self.limit {
            return Err(DataFusionError::External(Box::new(ValueTooLarge {
                function: self.builder.name(),
                bytes,
                limit: self.limit,
            })));
        }
        self.inner.invoke_with_args(args)
    }
}

/// Replace the context's `repeat`, `lpad` and `rpad` with bounded ones (`limit` bytes).
pub fn bound_value_builders(ctx: &SessionContext, limit: u64) {
    for builder in [Builder::Repeat, Builder::Pad("lpad"), Builder::Pad("rpad")] {
        if let Ok(inner) = ctx.udf(builder.name()) {
            ctx.register_udf(ScalarUDF::new_from_impl(Limited {
                inner,
                builder,
                limit,
            }));
        }
    }
}
