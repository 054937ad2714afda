//! SCRAM-SHA-256 password verifiers (RFC 5802 / RFC 7677), stored as PostgreSQL stores them:
//!
//! ```text
//! SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>
//! ```
//!
//! A verifier lets the server check a SCRAM proof (and a cleartext password, for Flight SQL's
//! basic auth) without ever keeping the password. The primitives (PBKDF2, HMAC, SHA-256,
//! constant-time comparison) are `ring`'s; this module only composes them the way the RFC and
//! PostgreSQL's `pg_authid.rolpassword` do, so verifiers move between the two unchanged.

use std::fmt;
use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// Iterations of PBKDF2 for new verifiers: PostgreSQL's default (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

const PREFIX: &str = "SCRAM-SHA-256$";
const SALT_LEN: usize = 16;

/// A stored SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The random salt.
    pub salt: Vec<u8>,
    /// `SHA-256(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

/// Why a verifier string or a password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The text is not a `SCRAM-SHA-256$…` verifier.
    #[error("not a SCRAM-SHA-256 verifier")]
    Malformed,
    /// The system's random source failed.
    #[error("no random salt could be drawn")]
    Random,
}

impl fmt::Debug for ScramVerifier {
    /// Keys never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

impl std::str::FromStr for ScramVerifier {
    type Err = ScramError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(PREFIX).ok_or(ScramError::Malformed)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramError::Malformed)?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramError::Malformed)?;
        let (stored, server) = keys.split_once(':').ok_or(ScramError::Malformed)?;
        let decode = |t: &str| STANDARD.decode(t).map_err(|_| ScramError::Malformed);
        let verifier = ScramVerifier {
            iterations: iterations.parse().map_err(|_| ScramError::Malformed)?,
            salt: decode(salt)?,
            stored_key: decode(stored)?,
            server_key: decode(server)?,
        };
        let keys_ok = verifier.stored_key.len() == digest::SHA256_OUTPUT_LEN
            && verifier.server_key.len() == digest::SHA256_OUTPUT_LEN;
        if verifier.iterations == 0 || verifier.salt.is_empty() || !keys_ok {
            return Err(ScramError::Malformed);
        }
        Ok(verifier)
    }
}

impl ScramVerifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn derive(password: &str) -> Result<Self, ScramError> {
        let mut salt = vec![0u8; SALT_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| ScramError::Random)?;
        Ok(Self::derive_with(password, salt, DEFAULT_ITERATIONS))
    }

    /// A verifier for `password` with a given salt and iteration count.
    pub fn derive_with(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted_password(password, &salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        ScramVerifier {
            iterations,
            stored_key: digest::digest(&digest::SHA256, &client_key)
                .as_ref()
                .to_vec(),
            server_key: hmac_sha256(&salted, b"Server Key"),
            salt,
        }
    }

    /// Whether `password` is the one this verifier was made from (constant time in the keys).
    pub fn matches(&self, password: &str) -> bool {
        let candidate = Self::derive_with(password, self.salt.clone(), self.iterations);
        // An HMAC verify compares in constant time; the key is irrelevant to the result.
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.server_key);
        let tag = hmac::sign(&key, &self.stored_key);
        hmac::verify(&key, &candidate.stored_key, tag.as_ref()).is_ok()
    }
}

/// `Hi(SASLprep(password), salt, i)`. A password SASLprep refuses is used as it is, as
/// PostgreSQL does.
fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut out = vec![0u8; digest::SHA256_OUTPUT_LEN];
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        prepared.as_bytes(),
        &mut out,
    );
    out
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, message).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_verifier_made_by_postgresql() {
        // `CREATE ROLE r PASSWORD 'secret'` on PostgreSQL 15.18, then
        // `SELECT rolpassword FROM pg_authid WHERE rolname = 'r'`.
        let pg = "SCRAM-SHA-256$4096:39R5j2+FI18Zrbo0+iN1dQ==$reG+wiVFiU+RxBxwOzSwD94VHtCGuPuftTJyBkZPSts=:7iv/DIi23HLgb8KmLce+bGudANnGr8p/i6IFmMp5d5M=";
        let v: ScramVerifier = pg.parse().expect("parse");
        assert_eq!(v.to_string(), pg);
        assert_eq!(v.iterations, 4096);
        assert!(v.matches("secret"));
        assert!(!v.matches("Secret"));
        assert!(!v.matches(""));
        // The same for E'p\u00e4ss\u00adw\u00f6rd': SASLprep drops the soft hyphen.
        let pg = "SCRAM-SHA-256$4096:JmpM2PQyA0rduP3FAJFtpw==$u0wHdC4foFzu2asQ8iS2YWTjIs9RWa7SxD6voxPt7cc=:rKfA48Ai7AVzrC3AEr8IUYpuiNYNCA0l5iHNvPJ+7XY=";
        let v: ScramVerifier = pg.parse().expect("parse");
        assert!(v.matches("p\u{e4}ss\u{ad}w\u{f6}rd"));
        assert!(v.matches("p\u{e4}ssw\u{f6}rd"));
        assert!(!v.matches("passwort"));
    }

    #[test]
    fn derived_verifiers_round_trip_and_differ_by_salt() {
        let a = ScramVerifier::derive("pw").expect("derive");
        let b = ScramVerifier::derive("pw").expect("derive");
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        let back: ScramVerifier = a.to_string().parse().expect("parse");
        assert_eq!(back, a);
        assert!(back.matches("pw") && b.matches("pw"));
        assert!(!a.matches("pw "));
        assert!(!format!("{a:?}").contains(&STANDARD.encode(&a.stored_key)));
    }

    #[test]
    fn malformed_verifiers_are_refused() {
        for s in [
            "",
            "secret",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$x:c2FsdA==$K9kxo2ql1Q8t3vGSVG11uMJXDzqabuPiOvCwRjb1o7Q=:+iSOuMiq8Z2fN/oJ8ICzUfJN2Nro/F9BSijs0aBCbWY=",
            "md5abcdef",
        ] {
            assert_eq!(
                s.parse::<ScramVerifier>(),
                Err(ScramError::Malformed),
                "{s}"
            );
        }
    }
}
