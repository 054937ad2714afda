//! Roles at run time: who a session is, logging in, and the role statements.
//!
//! The frontends authenticate a connection through [`Engine::login_role`] (the role's SCRAM
//! verifier for pgwire's SCRAM exchange) or [`Engine::check_password`] (Flight SQL's basic
//! auth), then bind the session to the role with [`Session::set_user`]. Sessions the engine
//! makes for itself (start-up, restore) run as the bootstrap superuser.
//!
//! Who may change roles follows PostgreSQL: superusers create, alter and drop roles; any role
//! may change its own password; the bootstrap superuser and the session's own role cannot be
//! dropped, and the bootstrap superuser stays a superuser.

use prognos_catalog::{Role, RoleChange, ScramVerifier};

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::role_sql::{RoleOptions, RoleStatement};
use crate::session::Session;
use crate::{Engine, Output};

/// A role that may log in, as the frontends need it to authenticate a connection.
#[derive(Debug, Clone)]
pub struct LoginRole {
    /// Role name.
    pub name: String,
    /// Its password verifier; `None`: it has no password and cannot log in with one.
    pub verifier: Option<ScramVerifier>,
    /// Whether it is a superuser.
    pub superuser: bool,
}

/// Role names PostgreSQL reserves for its predefined roles.
const RESERVED_PREFIX: &str = "pg_";

fn no_such_role(name: &str) -> EngineError {
    EngineError::statement(
        StatusCode::InvalidAuthorization,
        format!("role \"{name}\" does not exist"),
    )
}

/// The error of a failed password check (`28P01`), worded as PostgreSQL words it.
pub fn password_failed(name: &str) -> EngineError {
    EngineError::statement(
        StatusCode::InvalidPassword,
        format!("password authentication failed for user \"{name}\""),
    )
}

fn must_be_superuser(what: &str) -> EngineError {
    EngineError::statement(
        StatusCode::InsufficientPrivilege,
        format!("permission denied to {what}: only superusers may"),
    )
}

/// The verifier for a password as written: a `SCRAM-SHA-256$…` verifier is kept as given
/// (PostgreSQL accepts pre-hashed passwords the same way); any other text is hashed.
fn verifier_for(password: &str) -> EngineResult<ScramVerifier> {
    if let Ok(v) = password.parse::<ScramVerifier>() {
        return Ok(v);
    }
    if password.is_empty() {
        return Err(EngineError::statement(
            StatusCode::InvalidParameterValue,
            "empty password: use PASSWORD NULL to remove a password",
        ));
    }
    ScramVerifier::derive(password)
        .map_err(|e| EngineError::statement(StatusCode::Internal, e.to_string()))
}

impl Engine {
    /// The role `name` if it may log in: `28000` when it does not exist or is `NOLOGIN`.
    pub fn login_role(&self, name: &str) -> EngineResult<LoginRole> {
        let role = self.roles.get(name).ok_or_else(|| no_such_role(name))?;
        if !role.login {
            return Err(EngineError::statement(
                StatusCode::InvalidAuthorization,
                format!("role \"{name}\" is not permitted to log in"),
            ));
        }
        Ok(LoginRole {
            name: role.name,
            verifier: role.password,
            superuser: role.superuser,
        })
    }

    /// Check a cleartext password (Flight SQL basic auth): `28000` for a role that cannot log
    /// in, `28P01` for a wrong password or a role without one.
    pub fn check_password(&self, name: &str, password: &str) -> EngineResult<LoginRole> {
        let role = self.login_role(name)?;
        match &role.verifier {
            Some(v) if v.matches(password) => Ok(role),
            _ => Err(password_failed(name)),
        }
    }

    /// Whether any role has a password, so that someone can log in where passwords are
    /// required.
    pub fn any_password(&self) -> bool {
        self.roles.any_password()
    }

    /// The bootstrap superuser's name.
    pub fn bootstrap_superuser(&self) -> &str {
        &self.bootstrap_superuser
    }

    /// Whether the session's role is a superuser now (attributes are read at each check, so
    /// `ALTER ROLE … NOSUPERUSER` takes effect at once).
    pub(crate) fn is_superuser(&self, session: &Session) -> bool {
        self.roles.get(&session.user()).is_some_and(|r| r.superuser)
    }

    /// Create the bootstrap superuser when missing; give it `password` when it has none.
    pub(crate) fn bootstrap_roles(&self, bootstrap: &crate::config::Bootstrap) -> EngineResult<()> {
        let verifier = bootstrap
            .password
            .as_ref()
            .map(|p| verifier_for(p.expose()))
            .transpose()?;
        match self.roles.get(&bootstrap.name) {
            None => {
                self.roles.create(
                    Role {
                        name: bootstrap.name.clone(),
                        superuser: true,
                        login: true,
                        password: verifier,
                        created_at: chrono::Utc::now().to_rfc3339(),
                    },
                    true,
                )?;
            }
            Some(role) => {
                let change = RoleChange {
                    superuser: (!role.superuser).then_some(true),
                    login: (!role.login).then_some(true),
                    password: verifier.filter(|_| role.password.is_none()).map(Some),
                };
                if change != RoleChange::default() {
                    self.roles.alter(&bootstrap.name, &change)?;
                }
            }
        }
        Ok(())
    }

    /// Run a role statement.
    pub(crate) async fn execute_role(
        &self,
        session: &Session,
        stmt: &RoleStatement,
    ) -> EngineResult<Output> {
        let done = || Output::Command {
            tag: stmt.tag().to_string(),
            rows: None,
        };
        let superuser = self.is_superuser(session);
        match stmt {
            RoleStatement::Grant(g) => {
                return crate::privileges::execute_grant(self, session, g).await;
            }
            RoleStatement::Masking(m) => {
                return crate::masking_sql::execute(self, session, m).await;
            }
            RoleStatement::Reassign(r) => {
                crate::statements::not_transactional(session, "REASSIGN OWNED");
                return crate::owner_sql::reassign(self, session, r);
            }
            RoleStatement::Create {
                name,
                if_not_exists,
                options,
            } => {
                if !superuser {
                    return Err(must_be_superuser("create roles"));
                }
                check_name(name)?;
                let role = Role {
                    name: name.clone(),
                    superuser: options.superuser.unwrap_or(false),
                    login: options.login.unwrap_or(false),
                    password: options
                        .password
                        .clone()
                        .flatten()
                        .map(|p| verifier_for(&p))
                        .transpose()?,
                    created_at: chrono::Utc::now().to_rfc3339(),
                };
                if !self.roles.create(role, *if_not_exists)? {
                    session.notice(format!("role \"{name}\" already exists, skipping"));
                }
            }
            RoleStatement::Alter { name, options } => {
                let own_password_only = name == &session.user()
                    && options.login.is_none()
                    && options.superuser.is_none();
                if !superuser && !own_password_only {
                    return Err(must_be_superuser(
                        "alter roles other than your own password",
                    ));
                }
                if name == &self.bootstrap_superuser && options.superuser == Some(false) {
                    return Err(EngineError::statement(
                        StatusCode::FeatureNotSupported,
                        format!(
                            "the bootstrap superuser \"{name}\" must keep the SUPERUSER attribute"
                        ),
                    ));
                }
                self.roles.alter(name, &change_of(options)?)?;
            }
            RoleStatement::Rename { name, to } => {
                if !superuser {
                    return Err(must_be_superuser("rename roles"));
                }
                check_name(to)?;
                if name == &session.user() || name == &self.bootstrap_superuser {
                    return Err(in_use(&format!(
                        "role \"{name}\" cannot be renamed: it is the session's role or the bootstrap superuser"
                    )));
                }
                self.roles.rename(name, to)?;
            }
            RoleStatement::Drop { names, if_exists } => {
                if !superuser {
                    return Err(must_be_superuser("drop roles"));
                }
                for name in names {
                    if name == &session.user() {
                        return Err(in_use("current user cannot be dropped"));
                    }
                    if name == &self.bootstrap_superuser {
                        return Err(in_use(&format!(
                            "cannot drop role {name}: it is the bootstrap superuser"
                        )));
                    }
                }
                for name in names {
                    if !self.roles.drop_role(name, *if_exists)? {
                        session.notice(format!("role \"{name}\" does not exist, skipping"));
                    }
                }
                // Plans checked for the dropped role's grants are checked again.
                self.bump_epoch();
            }
        }
        Ok(done())
    }
}

fn in_use(message: &str) -> EngineError {
    EngineError::statement(StatusCode::ObjectInUse, message)
}

fn check_name(name: &str) -> EngineResult<()> {
    if name.is_empty() {
        return Err(EngineError::statement(
            StatusCode::InvalidParameterValue,
            "a role name cannot be empty",
        ));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(EngineError::statement(
            StatusCode::ReservedName,
            format!(
                "role name \"{name}\" is reserved: names starting with \"{RESERVED_PREFIX}\" belong to predefined roles"
            ),
        ));
    }
    Ok(())
}

fn change_of(options: &RoleOptions) -> EngineResult<RoleChange> {
    Ok(RoleChange {
        superuser: options.superuser,
        login: options.login,
        password: options
            .password
            .as_ref()
            .map(|p| p.as_deref().map(verifier_for).transpose())
            .transpose()?,
    })
}
