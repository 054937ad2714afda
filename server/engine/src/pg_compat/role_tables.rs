//! `pg_roles` and `pg_auth_members` from prognos's roles, as psql's `\du` and drivers read
//! them (datafusion-pg-catalog's own `pg_roles` gives every role oid 0, so memberships could
//! not be joined, and its `pg_auth_members` is empty).
//!
//! Role oids are stable: PostgreSQL's for the bootstrap superuser (10) and the predefined
//! roles, a hash of the name for the others.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int32Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::Int32Type;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use prognos_catalog::RoleStore;
use prognos_catalog::grants::{
    PREDEFINED_ROLES, READ_ALL_DATA, READ_SERVER_FILES, WRITE_ALL_DATA, WRITE_SERVER_FILES,
};

/// The catalog tables this module serves.
pub(crate) const ROLE_TABLES: [&str; 2] = ["pg_roles", "pg_auth_members"];

/// The oid of a role.
pub(crate) fn role_oid(name: &str, bootstrap: &str) -> i32 {
    match name {
        n if n == bootstrap => 10,
        READ_ALL_DATA => 6181,
        WRITE_ALL_DATA => 6182,
        READ_SERVER_FILES => 4569,
        WRITE_SERVER_FILES => 4570,
        // FNV-1a, folded into the range PostgreSQL gives user objects (16384 and up).
        other => {
            let mut h: u32 = 0x811c_9dc5;
            for b in other.bytes() {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
            16384 + (h % 0x3fff_0000) as i32
        }
    }
}

/// `pg_get_userbyid(oid)`: the name of the role with that oid (the library's answers
/// `postgres` for every oid), `unknown (OID=n)` for none, as PostgreSQL says.
pub(crate) fn user_by_id(roles: Arc<RoleStore>, bootstrap: String) -> ScalarUDF {
    let name_of = move |args: &[ColumnarValue]| -> DfResult<ColumnarValue> {
        let names: HashMap<i32, String> = PREDEFINED_ROLES
            .iter()
            .map(|r| r.to_string())
            .chain(roles.list().into_iter().map(|r| r.name))
            .chain(std::iter::once(bootstrap.clone()))
            .map(|n| (role_oid(&n, &bootstrap), n))
            .collect();
        let [oids] = args else {
            return exec_err!("pg_get_userbyid takes one argument");
        };
        let oids = oids.to_array(1)?;
        let oids = cast(&oids, &DataType::Int32)?;
        let out: StringArray = oids
            .as_primitive::<Int32Type>()
            .iter()
            .map(|oid| {
                oid.map(|oid| match names.get(&oid) {
                    Some(name) => name.clone(),
                    None => format!("unknown (OID={oid})"),
                })
            })
            .collect();
        let scalar = matches!(args, [ColumnarValue::Scalar(_)]);
        let out: ArrayRef = Arc::new(out);
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    };
    create_udf(
        "pg_get_userbyid",
        vec![DataType::Int32],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(name_of),
    )
}

fn bools(v: Vec<bool>) -> ArrayRef {
    Arc::new(BooleanArray::from(v))
}

/// `table` (one of [`ROLE_TABLES`]) as the roles are now.
pub(crate) fn role_table(
    roles: &RoleStore,
    bootstrap: &str,
    table: &str,
) -> DfResult<Option<Arc<dyn TableProvider>>> {
    let batch = match table {
        "pg_roles" => pg_roles(roles, bootstrap)?,
        "pg_auth_members" => pg_auth_members(roles, bootstrap)?,
        _ => return Ok(None),
    };
    Ok(Some(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?)))
}

fn pg_roles(roles: &RoleStore, bootstrap: &str) -> DfResult<RecordBatch> {
    // (name, superuser, login, has password)
    let mut rows: Vec<(String, bool, bool, bool)> = PREDEFINED_ROLES
        .iter()
        .map(|r| (r.to_string(), false, false, false))
        .collect();
    rows.extend(
        roles
            .list()
            .into_iter()
            .map(|r| (r.name, r.superuser, r.login, r.password.is_some())),
    );
    let n = rows.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new("rolname", DataType::Utf8, false),
        Field::new("rolsuper", DataType::Boolean, false),
        Field::new("rolinherit", DataType::Boolean, false),
        Field::new("rolcreaterole", DataType::Boolean, false),
        Field::new("rolcreatedb", DataType::Boolean, false),
        Field::new("rolcanlogin", DataType::Boolean, false),
        Field::new("rolreplication", DataType::Boolean, false),
        Field::new("rolconnlimit", DataType::Int32, false),
        Field::new("rolpassword", DataType::Utf8, true),
        Field::new(
            "rolvaliduntil",
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            true,
        ),
        Field::new("rolbypassrls", DataType::Boolean, false),
        Field::new(
            "rolconfig",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new("oid", DataType::Int32, false),
    ]));
    let mut config = ListBuilder::new(StringBuilder::new());
    for _ in 0..n {
        config.append_null();
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
        bools(rows.iter().map(|r| r.1).collect()),
        bools(vec![true; n]),
        // Superusers create roles; no role has CREATEDB or REPLICATION.
        bools(rows.iter().map(|r| r.1).collect()),
        bools(vec![false; n]),
        bools(rows.iter().map(|r| r.2).collect()),
        bools(vec![false; n]),
        Arc::new(Int32Array::from(vec![-1; n])),
        // As in PostgreSQL, the view never shows a password.
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.3.then_some("********")),
        )),
        Arc::new(TimestampMicrosecondArray::from(vec![None::<i64>; n]).with_timezone("UTC")),
        bools(rows.iter().map(|r| r.1).collect()),
        Arc::new(config.finish()),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| role_oid(&r.0, bootstrap)),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn pg_auth_members(roles: &RoleStore, bootstrap: &str) -> DfResult<RecordBatch> {
    let memberships = roles.acl().memberships();
    let n = memberships.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new("oid", DataType::Int32, false),
        Field::new("roleid", DataType::Int32, false),
        Field::new("member", DataType::Int32, false),
        Field::new("grantor", DataType::Int32, false),
        Field::new("admin_option", DataType::Boolean, false),
        Field::new("inherit_option", DataType::Boolean, false),
        Field::new("set_option", DataType::Boolean, false),
    ]));
    let oid = |i: usize| 20000 + i as i32;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values((0..n).map(oid))),
        Arc::new(Int32Array::from_iter_values(
            memberships.iter().map(|(r, _)| role_oid(r, bootstrap)),
        )),
        Arc::new(Int32Array::from_iter_values(
            memberships.iter().map(|(_, m)| role_oid(m, bootstrap)),
        )),
        Arc::new(Int32Array::from(vec![10; n])),
        bools(vec![false; n]),
        bools(vec![true; n]),
        bools(vec![true; n]),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_are_stable_and_postgres_like() {
        assert_eq!(role_oid("prognos", "prognos"), 10);
        assert_eq!(role_oid(READ_SERVER_FILES, "prognos"), 4569);
        let a = role_oid("alice", "prognos");
        assert_eq!(a, role_oid("alice", "prognos"));
        assert!(a >= 16384);
        assert_ne!(a, role_oid("bob", "prognos"));
    }
}
