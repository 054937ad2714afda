//! Flight SQL authentication: basic auth in the `Handshake` returns a bearer token, and every
//! later call presents the token (`authorization: Bearer …`), as ADBC's Flight SQL driver and
//! pyarrow's `authenticate_basic_token` do.
//!
//! A gRPC interceptor reads the `authorization` header of every call and, when it proves a
//! role, attaches a [`Caller`] to the request; the service methods take the caller from there
//! ([`caller`]) and refuse calls without one with `UNAUTHENTICATED`. Under the trust policy a
//! call without credentials runs as the bootstrap superuser. A token expires after its time to
//! live, and stops working at once when its role is dropped or made `NOLOGIN`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use prognos_engine::{Engine, LoginRole};
use tonic::{Request, Status};

use super::to_status;
use crate::auth::Policy;

/// Tokens kept at most; the oldest expire first when more are issued.
const MAX_TOKENS: usize = 65_536;

/// The role a call runs as.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The role.
    pub(crate) role: LoginRole,
    /// The token a basic-auth call was issued (sent back by `Handshake`).
    pub(crate) issued: Option<String>,
}

/// The role of the call `request` carries (attached by [`Authenticator::check`]).
pub(crate) fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request.extensions().get::<Caller>().cloned().ok_or_else(|| {
        Status::unauthenticated(
            "authentication required: call Handshake with basic auth (user and password), then send its bearer token",
        )
    })
}

/// Bearer tokens and the roles they stand for.
#[derive(Debug)]
struct Tokens {
    ttl: Duration,
    live: Mutex<HashMap<String, (String, Instant)>>,
}

impl Tokens {
    fn issue(&self, role: &str) -> String {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, (_, expires)| *expires > now);
        if live.len() >= MAX_TOKENS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, (_, e))| *e)
                .map(|(k, _)| k.clone())
        {
            live.remove(&oldest);
        }
        live.insert(token.clone(), (role.to_string(), now + self.ttl));
        token
    }

    fn role_of(&self, token: &str) -> Option<String> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.get(token) {
            Some((role, expires)) if *expires > Instant::now() => Some(role.clone()),
            Some(_) => {
                live.remove(token);
                None
            }
            None => None,
        }
    }
}

/// The interceptor's state: the policy, the roles, and the live tokens.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    policy: Policy,
    engine: Arc<Engine>,
    tokens: Arc<Tokens>,
}

impl Authenticator {
    /// Authentication by `policy` against `engine`'s roles; tokens live for `ttl`.
    pub(crate) fn new(policy: Policy, engine: Arc<Engine>, ttl: Duration) -> Self {
        Self {
            policy,
            engine,
            tokens: Arc::new(Tokens {
                ttl,
                live: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The interceptor: attach the caller a request's credentials prove, refuse credentials
    /// that prove nothing, and let calls without credentials through (the methods refuse them
    /// unless the policy trusts them).
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub(crate) fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().map(str::to_string));
        let caller = match header {
            None => match self.policy {
                Policy::Trust => Some(Caller {
                    role: self
                        .engine
                        .login_role(self.engine.bootstrap_superuser())
                        .map_err(to_status)?,
                    issued: None,
                }),
                Policy::Password => None,
            },
            Some(Err(_)) => return Err(Status::unauthenticated("malformed authorization header")),
            Some(Ok(value)) => {
                let client = request.remote_addr().map(|a| a.to_string());
                Some(self.credentials(&value, client.as_deref())?)
            }
        };
        if let Some(c) = caller {
            request.extensions_mut().insert(c);
        }
        Ok(request)
    }

    fn credentials(&self, header: &str, client: Option<&str>) -> Result<Caller, Status> {
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            // Padding optional: ADBC's Go driver sends base64 without it.
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(value.trim().trim_end_matches('='))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Status::unauthenticated("malformed basic credentials"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| Status::unauthenticated("malformed basic credentials"))?;
            let role = match self.policy {
                Policy::Password => self.engine.check_password(user, password),
                // Trust takes the role's word, as PostgreSQL's `trust` does.
                Policy::Trust => self.engine.login_role(user),
            };
            // Basic auth is a login (a bearer token only presents one).
            crate::audit::login(
                &self.engine,
                user,
                client,
                super::PROTOCOL,
                role.as_ref().map(|_| ()),
            );
            let role = role.map_err(to_status)?;
            let token = self.tokens.issue(&role.name);
            Ok(Caller {
                role,
                issued: Some(token),
            })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let name = self.tokens.role_of(value.trim()).ok_or_else(|| {
                Status::unauthenticated("invalid or expired token: call Handshake again")
            })?;
            let role = self.engine.login_role(&name).map_err(to_status)?;
            Ok(Caller { role, issued: None })
        } else {
            Err(Status::unauthenticated(format!(
                "unsupported authorization scheme \"{scheme}\": use Basic or Bearer"
            )))
        }
    }
}
