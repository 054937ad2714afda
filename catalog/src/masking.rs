//! Column masking: what a masking policy does to a column's values.
//!
//! A policy (`CREATE MASKING POLICY p ON t (c) USING …`) names one column of one table and a
//! method:
//!
//! * `redact` — every value becomes `***` (text) or NULL (other types; in a `NOT NULL`
//!   column, the type's zero value);
//! * `partial(k)` — text keeps its last `k` characters, the others become `*` (a value of at
//!   most `k` characters is starred whole), so `4111111111111111` shows `************1111`;
//! * `hash` — a keyed hash (HMAC-SHA-256 under the data dir's masking key): text becomes 32
//!   hex digits, integers an integer of the same type. Equal values hash equal in every table,
//!   so joins on a hashed column still match, and without the key a value cannot be
//!   recomputed from a guess.
//!
//! NULL stays NULL. The masked column keeps its type (it becomes nullable), so a query plans
//! the same for every role. Policies live with the privileges in `roles.json`
//! ([`crate::grants::Acl`]); the key lives in `masking.key` in the data dir.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int8Array, Int16Array, Int32Array, Int64Array, StringArray,
    UInt8Array, UInt16Array, UInt32Array, UInt64Array, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use serde::{Deserialize, Serialize};

/// How a policy masks its column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMethod {
    /// `***` or NULL.
    Redact,
    /// Keep the last `k` characters.
    Partial(usize),
    /// Keyed hash.
    Hash,
}

impl std::fmt::Display for MaskMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaskMethod::Redact => write!(f, "redact"),
            MaskMethod::Partial(k) => write!(f, "partial({k})"),
            MaskMethod::Hash => write!(f, "hash"),
        }
    }
}

/// One masking policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MaskPolicy {
    /// Policy name (unique in the data dir).
    pub name: String,
    /// The masked column.
    pub column: String,
    /// How.
    pub method: MaskMethod,
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

impl MaskMethod {
    /// Why the method cannot mask a column of type `t`, if it cannot.
    pub fn unsupported_for(&self, t: &DataType) -> Option<String> {
        match self {
            MaskMethod::Redact => None,
            MaskMethod::Partial(_) if is_text(t) => None,
            MaskMethod::Partial(_) => Some(format!("partial() masks text columns, not {t}")),
            MaskMethod::Hash if is_text(t) || is_integer(t) => None,
            MaskMethod::Hash => Some(format!("hash masks text and integer columns, not {t}")),
        }
    }
}

/// The secret the `hash` method is keyed with.
#[derive(Clone)]
pub struct MaskingKey(Arc<ring::hmac::Key>);

impl std::fmt::Debug for MaskingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskingKey(<secret>)")
    }
}

impl MaskingKey {
    /// The key of `data_dir` (`masking.key`), made on first use: 32 random bytes, readable by
    /// the server's user only.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("masking.key");
        let bytes = match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => b,
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a 32-byte key", path.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .map_err(|_| std::io::Error::other("no random numbers for the masking key"))?;
                prognos_storage::durable::write_atomically(&path, &key)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                }
                key
            }
            Err(e) => return Err(e),
        };
        Ok(Self(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &bytes,
        ))))
    }

    fn tag(&self, bytes: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::hmac::sign(&self.0, bytes).as_ref());
        out
    }
}

fn stars(s: &str, keep: usize) -> String {
    let n = s.chars().count();
    if n <= keep {
        return "*".repeat(n);
    }
    let mut out = "*".repeat(n - keep);
    out.extend(s.chars().skip(n - keep));
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `values` masked by `method` (same type and length; see the module docs); `nullable`: whether
/// the column may hold NULL.
pub fn mask(
    method: &MaskMethod,
    key: &MaskingKey,
    values: &ArrayRef,
    nullable: bool,
) -> Result<ArrayRef, ArrowError> {
    let t = values.data_type().clone();
    if let Some(why) = method.unsupported_for(&t) {
        return Err(ArrowError::InvalidArgumentError(why));
    }
    if is_text(&t) {
        let text = cast(values, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let out: StringArray = text
            .iter()
            .map(|v| {
                v.map(|s| match method {
                    MaskMethod::Redact => "***".to_string(),
                    MaskMethod::Partial(k) => stars(s, *k),
                    MaskMethod::Hash => hex(&key.tag(s.as_bytes())[..16]),
                })
            })
            .collect();
        return cast(&(Arc::new(out) as ArrayRef), &t);
    }
    if *method == MaskMethod::Redact {
        if nullable {
            return Ok(new_null_array(&t, values.len()));
        }
        return datafusion::common::ScalarValue::new_default(&t)
            .and_then(|zero| zero.to_array_of_size(values.len()))
            .map_err(|e| ArrowError::InvalidArgumentError(e.to_string()));
    }
    // Integers: the hash of the value's decimal text (so 42 hashes alike in every integer
    // type), folded into the type's range.
    let as_i64 = cast(values, &DataType::Int64).ok();
    let as_u64 = cast(values, &DataType::UInt64).ok();
    let word = |i: usize| -> Option<u64> {
        if values.is_null(i) {
            return None;
        }
        let text = match (&as_i64, &as_u64) {
            (Some(a), _) if a.is_valid(i) => a
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(i)
                .to_string(),
            (_, Some(a)) => a
                .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
                .value(i)
                .to_string(),
            _ => return None,
        };
        let tag = key.tag(text.as_bytes());
        let mut w = [0u8; 8];
        w.copy_from_slice(&tag[..8]);
        Some(u64::from_le_bytes(w))
    };
    let n = values.len();
    let out: ArrayRef = match t {
        DataType::Int8 => Arc::new(
            (0..n)
                .map(|i| word(i).map(|w| w as i8))
                .collect::<Int8Array>(),
        ),
        DataType::Int16 => Arc::new(
            (0..n)
                .map(|i| word(i).map(|w| w as i16))
                .collect::<Int16Array>(),
        ),
        DataType::Int32 => Arc::new(
            (0..n)
                .map(|i| word(i).map(|w| w as i32))
                .collect::<Int32Array>(),
        ),
        DataType::Int64 => Arc::new(
            (0..n)
                .map(|i| word(i).map(|w| w as i64))
                .collect::<Int64Array>(),
        ),
        DataType::UInt8 => Arc::new(
            (0..n)
                .map(|i| word(i).map(|w| w as u8))
                .collect::<UInt8Array>(),
        ),
        DataType::UInt16 => Arc::new(
            (0..n)
                .map(|i| word(i).map(|w| w as u16))
                .collect::<UInt16Array>(),
        ),
        DataType::UInt32 => Arc::new(
            (0..n)
                .map(|i| word(i).map(|w| w as u32))
                .collect::<UInt32Array>(),
        ),
        DataType::UInt64 => Arc::new((0..n).map(word).collect::<UInt64Array>()),
        other => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "hash masks text and integer columns, not {other}"
            )));
        }
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_mask_text_and_integers_keeping_types() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = MaskingKey::open(dir.path()).expect("key");
        let again = MaskingKey::open(dir.path()).expect("same key");
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("4111111111111111"),
            None,
            Some("ab"),
        ]));
        let p = mask(&MaskMethod::Partial(4), &key, &text, true).expect("partial");
        let p = p.as_string::<i32>();
        assert_eq!(p.value(0), "************1111");
        assert!(p.is_null(1));
        assert_eq!(p.value(2), "**");
        let r = mask(&MaskMethod::Redact, &key, &text, true).expect("redact");
        assert_eq!(r.as_string::<i32>().value(0), "***");
        let h1 = mask(&MaskMethod::Hash, &key, &text, true).expect("hash");
        let h2 = mask(&MaskMethod::Hash, &again, &text, true).expect("hash");
        let h1 = h1.as_string::<i32>();
        assert_eq!(h1.value(0).len(), 32);
        assert_eq!(
            h1.value(0),
            h2.as_string::<i32>().value(0),
            "same key, same hash"
        );
        assert_ne!(h1.value(0), h1.value(2));

        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(42), None, Some(7)]));
        let longs: ArrayRef = Arc::new(Int64Array::from(vec![Some(42)]));
        let hi = mask(&MaskMethod::Hash, &key, &ints, true).expect("hash ints");
        assert_eq!(hi.data_type(), &DataType::Int32);
        assert!(hi.is_null(1));
        let hl = mask(&MaskMethod::Hash, &key, &longs, true).expect("hash longs");
        assert_eq!(
            hi.as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                .value(0),
            hl.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0) as i32,
            "one value hashes alike in both widths"
        );
        let ri = mask(&MaskMethod::Redact, &key, &ints, true).expect("redact ints");
        assert_eq!(ri.null_count(), 3);
        let zeros = mask(&MaskMethod::Redact, &key, &longs, false).expect("NOT NULL");
        assert_eq!(zeros.null_count(), 0);
        assert_eq!(
            zeros
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0),
            0
        );
        assert!(mask(&MaskMethod::Partial(2), &key, &ints, true).is_err());

        let other = tempfile::tempdir().expect("tmp");
        let stranger = MaskingKey::open(other.path()).expect("key");
        let h3 = mask(&MaskMethod::Hash, &stranger, &text, true).expect("hash");
        assert_ne!(h1.value(0), h3.as_string::<i32>().value(0), "keyed");
    }
}
