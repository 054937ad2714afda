//! Connection start-up: protocol negotiation, authentication ([`crate::auth::Policy`]), and
//! binding the connection's session to the role that logged in.
//!
//! Passwords are checked by pgwire's SCRAM-SHA-256 exchange against the role's stored
//! verifier ([`RoleSource`]); the password never crosses the wire and is never stored.
//! Failures end the connection with a FATAL error: `28000` for a role that does not exist or
//! may not log in, `28P01` for a wrong password or a role without one.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret};
use pgwire::api::auth::{
    AuthDriver, AuthOutcome, AuthSource, DefaultServerParameterProvider, LoginInfo, Password,
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, METADATA_USER, PidSecretKeyGenerator};

use super::PROTOCOL;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::{Handler, PID_GENERATOR};
use crate::auth::Policy;
use crate::error::{EngineError, StatusCode, WireStatus};
use prognos_engine::{Engine, LoginRole, password_failed};

/// How this server authenticates pgwire connections (shared by all of them).
pub(crate) struct PgAuth {
    policy: Policy,
    /// Refuse connections without TLS.
    require_tls: bool,
    scram: ScramAuth<LoginRole>,
    driver: AuthDriver<DefaultServerParameterProvider, LoginRole>,
}

impl PgAuth {
    /// Authentication by `policy`, with roles from `engine`.
    pub(crate) fn new(policy: Policy, engine: Arc<Engine>, require_tls: bool) -> Self {
        Self {
            policy,
            require_tls,
            scram: ScramAuth::new(Arc::new(RoleSource { engine })),
            driver: AuthDriver::new(DefaultServerParameterProvider::default()),
        }
    }
}

/// Live connections against `max_connections`.
#[derive(Debug)]
pub(crate) struct ConnectionSlots {
    max: usize,
    live: std::sync::atomic::AtomicUsize,
}

/// One connection's count in [`ConnectionSlots`], given back when the connection ends.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<ConnectionSlots>,
    /// Whether the connection came when all were taken.
    over: bool,
}

impl ConnectionSlots {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            live: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Count a new connection.
    pub(crate) fn take(slots: &Arc<ConnectionSlots>) -> Slot {
        let n = slots.live.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Slot {
            slots: Arc::clone(slots),
            over: n > slots.max,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A start-up failure as PostgreSQL reports it: FATAL, the connection ends.
fn fatal(e: EngineError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        e.status().sqlstate().to_string(),
        e.to_string(),
    )))
}

/// SCRAM credentials from the role store.
#[derive(Debug)]
struct RoleSource {
    engine: Arc<Engine>,
}

#[async_trait]
impl AuthSource<LoginRole> for RoleSource {
    /// Cleartext and MD5 are off: no password is ever handed out.
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_string(),
        ))
    }

    async fn get_scram_secret(
        &self,
        login: &LoginInfo,
    ) -> PgWireResult<(ScramSecret, Option<LoginRole>)> {
        let user = login.user().ok_or(PgWireError::UserNameRequired)?;
        let refused = |e: EngineError| {
            crate::audit::login(&self.engine, user, Some(login.host()), PROTOCOL, Err(&e));
            fatal(e)
        };
        let role = self.engine.login_role(user).map_err(refused)?;
        let Some(v) = role.verifier.clone() else {
            // PostgreSQL says the same for a role without a password.
            return Err(refused(password_failed(user)));
        };
        Ok((
            ScramSecret::Verifier {
                salt: v.salt,
                iterations: v.iterations as usize,
                stored_key: v.stored_key,
                server_key: v.server_key,
            },
            Some(role),
        ))
    }
}

/// The parameters a new connection is told about, some of them the role's.
struct ParameterProvider<'a> {
    role: &'a LoginRole,
}

impl ServerParameterProvider for ParameterProvider<'_> {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let md = client.metadata();
        let mut p = HashMap::new();
        p.insert(
            "server_version".into(),
            prognos_udfs::PG_SERVER_VERSION.into(),
        );
        p.insert("server_encoding".into(), "UTF8".into());
        p.insert("client_encoding".into(), "UTF8".into());
        p.insert("DateStyle".into(), "ISO, MDY".into());
        p.insert("TimeZone".into(), "UTC".into());
        p.insert("IntervalStyle".into(), "postgres".into());
        p.insert("integer_datetimes".into(), "on".into());
        p.insert("standard_conforming_strings".into(), "on".into());
        p.insert(
            "is_superuser".into(),
            if self.role.superuser { "on" } else { "off" }.into(),
        );
        p.insert("default_transaction_read_only".into(), "off".into());
        p.insert("in_hot_standby".into(), "off".into());
        p.insert(
            "application_name".into(),
            md.get("application_name").cloned().unwrap_or_default(),
        );
        p.insert("session_authorization".into(), self.role.name.clone());
        Some(p)
    }
}

impl Handler {
    /// Record a refused login of `user` in the audit log and end the connection with `e`.
    fn refuse_login(&self, user: &str, e: EngineError) -> PgWireError {
        crate::audit::login(&self.engine, user, Some(&self.client), PROTOCOL, Err(&e));
        fatal(e)
    }

    /// After a step of the SCRAM exchange: wait for the client's next message, or start the
    /// session of the role the exchange proved.
    async fn after_step<C>(
        &self,
        client: &mut C,
        outcome: AuthOutcome<LoginRole>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match outcome {
            AuthOutcome::InProgress => Ok(()),
            AuthOutcome::Authenticated {
                identity,
                final_message,
            } => {
                let role = identity.ok_or(PgWireError::InvalidSASLState)?;
                self.start_session(client, role, final_message).await
            }
        }
    }

    /// The client is who it says: send the mechanism's last word, bind the session to the
    /// role, hand out the cancel key, apply start-up parameters, and say ReadyForQuery.
    async fn start_session<C>(
        &self,
        client: &mut C,
        role: LoginRole,
        final_message: Option<Authentication>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(m) = final_message {
            client.send(PgWireBackendMessage::Authentication(m)).await?;
        }
        self.session.set_user(&role.name, role.superuser);
        crate::audit::login(
            &self.engine,
            &role.name,
            Some(&self.client),
            PROTOCOL,
            Ok(()),
        );
        let (pid, secret) = PID_GENERATOR.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        let key = (pid, secret.to_bytes().to_vec());
        self.registry.register(key.clone(), &self.session);
        *self.key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        for (k, v) in client.metadata() {
            match k.as_str() {
                "application_name" => self.session.set_setting("application_name", v),
                "TimeZone" | "timezone" if self.session.set_time_zone(v).is_ok() => {
                    self.session.set_setting("timezone", v);
                }
                "search_path" => self.session.set_setting("search_path", v),
                _ => {}
            }
        }
        finish_authentication(client, &ParameterProvider { role: &role }).await
    }
}

#[async_trait]
impl StartupHandler for Handler {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let auth = &self.auth;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                if self.slot.over {
                    let e = EngineError::statement(
                        StatusCode::TooManyConnections,
                        "sorry, too many clients already",
                    );
                    let user = startup
                        .parameters
                        .get(METADATA_USER)
                        .cloned()
                        .unwrap_or_default();
                    return Err(self.refuse_login(&user, e));
                }
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .ok_or(PgWireError::UserNameRequired)?;
                if auth.require_tls && !client.is_secure() {
                    // PostgreSQL's words when only `hostssl` lines match.
                    let e = EngineError::statement(
                        StatusCode::InvalidAuthorization,
                        format!(
                            "no pg_hba.conf entry for host \"{}\", user \"{user}\", no encryption: this server requires TLS (sslmode=require)",
                            client.socket_addr().ip()
                        ),
                    );
                    return Err(self.refuse_login(&user, e));
                }
                match auth.policy {
                    Policy::Trust => {
                        let role = self
                            .engine
                            .login_role(&user)
                            .map_err(|e| self.refuse_login(&user, e))?;
                        self.start_session(client, role, None).await
                    }
                    Policy::Password => {
                        let mechanism = AuthMechanismFactory::create(&auth.scram);
                        let outcome = auth.driver.begin_authentication(client, mechanism).await?;
                        self.after_step(client, outcome).await
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(m) => {
                let outcome = auth.driver.advance_authentication(client, m).await;
                // The SCRAM state machine does not know whose proof failed; the client does.
                let outcome = outcome.map_err(|e| match e {
                    PgWireError::InvalidPassword(_) => {
                        let user = client.metadata().get(METADATA_USER).cloned();
                        let user = user.as_deref().unwrap_or_default();
                        self.refuse_login(user, password_failed(user))
                    }
                    other => other,
                });
                self.after_step(client, outcome?).await
            }
            _ => Ok(()),
        }
    }
}
