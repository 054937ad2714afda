//! Who may connect: the one authentication policy both data frontends apply.
//!
//! * `auth = "scram-sha-256"`: pgwire clients log in with SCRAM-SHA-256 (the password never
//!   crosses the wire), Flight SQL clients with a basic-auth handshake that returns an
//!   expiring bearer token. A role without a password cannot log in.
//! * `auth = "none"`: every connection is trusted as the role it names (pgwire) or as the
//!   bootstrap superuser (Flight SQL without credentials). Written in the config, it is the
//!   operator's choice, and allowed on any address.
//! * Unset: passwords when the bootstrap superuser has one configured (`superuser_password`,
//!   `PROGNOS_PASSWORD`); otherwise trust, but only while every data frontend listens on a
//!   loopback address — on any other address the server refuses to start.
//!
//! A role that does not exist or is `NOLOGIN` is refused with `28000`, a wrong password with
//! `28P01`, in both modes and both protocols.

use std::net::SocketAddr;

use tracing::warn;

use crate::config::{AuthMethod, Config};
use crate::error::{EngineError, StatusCode};

/// How connections are authenticated, as resolved at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Passwords are required.
    Password,
    /// Connections are trusted as the role they name.
    Trust,
}

impl Policy {
    /// Resolve the policy for `config`, whose data frontends listen on `data_addrs`.
    /// Refuses trust on a non-loopback address unless `auth = "none"` is written.
    pub fn resolve(config: &Config, data_addrs: &[SocketAddr]) -> Result<Policy, EngineError> {
        match config.auth {
            Some(AuthMethod::ScramSha256) => Ok(Policy::Password),
            Some(AuthMethod::None) => {
                if let Some(a) = data_addrs.iter().find(|a| !a.ip().is_loopback()) {
                    warn!(address = %a, "authentication is off (auth = \"none\") on a non-loopback address: anyone who reaches it is trusted");
                }
                Ok(Policy::Trust)
            }
            None if config.superuser_password.is_some() => Ok(Policy::Password),
            None => match data_addrs.iter().find(|a| !a.ip().is_loopback()) {
                Some(a) => Err(EngineError::statement(
                    StatusCode::ConfigFileError,
                    format!(
                        "refusing to listen on {a} without authentication: set a password for the superuser \"{}\" (PROGNOS_PASSWORD or superuser_password) or write auth = \"none\" in the config",
                        config.superuser
                    ),
                )),
                None => Ok(Policy::Trust),
            },
        }
    }

    /// The line the server logs first about authentication.
    pub fn describe(self, config: &Config) -> String {
        match self {
            Policy::Password => format!(
                "authentication: passwords required (SCRAM-SHA-256 over pgwire, basic auth over Flight SQL); bootstrap superuser \"{}\"",
                config.superuser
            ),
            Policy::Trust if config.auth == Some(AuthMethod::None) => {
                "authentication is off (auth = \"none\"): every connection is trusted as the role it names".into()
            }
            Policy::Trust => format!(
                "authentication is off: listening on loopback only, every connection is trusted as the role it names; set PROGNOS_PASSWORD to require passwords (superuser \"{}\")",
                config.superuser
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prognos_engine::config::Secret;

    fn addrs(s: &[&str]) -> Vec<SocketAddr> {
        s.iter().filter_map(|a| a.parse().ok()).collect()
    }

    #[test]
    fn trust_needs_loopback_unless_written() {
        let mut c = Config::default();
        let local = addrs(&["127.0.0.1:5432", "[::1]:50051"]);
        let open = addrs(&["0.0.0.0:5432", "127.0.0.1:50051"]);
        assert_eq!(Policy::resolve(&c, &local).ok(), Some(Policy::Trust));
        let e = Policy::resolve(&c, &open).expect_err("refused");
        assert_eq!(e.status(), StatusCode::ConfigFileError);
        assert!(e.to_string().contains("0.0.0.0:5432"), "{e}");
        c.auth = Some(AuthMethod::None);
        assert_eq!(Policy::resolve(&c, &open).ok(), Some(Policy::Trust));
        c.auth = None;
        c.superuser_password = Some(Secret::new("pw"));
        assert_eq!(Policy::resolve(&c, &open).ok(), Some(Policy::Password));
        assert_eq!(Policy::resolve(&c, &local).ok(), Some(Policy::Password));
        c.superuser_password = None;
        c.auth = Some(AuthMethod::ScramSha256);
        assert_eq!(Policy::resolve(&c, &local).ok(), Some(Policy::Password));
    }
}
