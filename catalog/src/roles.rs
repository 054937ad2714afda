//! Roles (users are roles that may log in), kept in `roles.json` in the data dir.
//!
//! A role has a name, whether it may log in, whether it is a superuser, and optionally a
//! SCRAM-SHA-256 verifier of its password ([`ScramVerifier`]); the password itself is never
//! stored. The same file holds the owners of objects, the privileges granted on them and role
//! memberships ([`Acl`]). The file is replaced atomically on every change, like
//! `catalog.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CatalogError, CatalogResult};
use crate::grants::{Acl, PREDEFINED_ROLES, Privileges, Securable};
use crate::persist::write_json_atomically;
use crate::scram::ScramVerifier;

/// On-disk format version of `roles.json` (2 added owners, grants and memberships; a version-1
/// file loads with none).
pub const ROLES_FORMAT_VERSION: u32 = 2;

/// One role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Role {
    /// Role name, as written (roles are looked up by exact name, as in PostgreSQL).
    pub name: String,
    /// Whether the role bypasses every permission check.
    pub superuser: bool,
    /// Whether the role may open a connection.
    pub login: bool,
    /// Its password's SCRAM verifier; a role without one cannot log in with a password.
    #[serde(
        default,
        serialize_with = "verifier_out",
        deserialize_with = "verifier_in"
    )]
    pub password: Option<ScramVerifier>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

fn verifier_out<S: Serializer>(v: &Option<ScramVerifier>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&v.to_string()),
        None => s.serialize_none(),
    }
}

fn verifier_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ScramVerifier>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| t.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// Contents of `roles.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct RolesFile {
    format_version: u32,
    roles: BTreeMap<String, Role>,
    #[serde(default)]
    acl: Acl,
}

/// A change to a role's attributes (`ALTER ROLE`); `None` leaves the attribute as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleChange {
    /// New superuser flag.
    pub superuser: Option<bool>,
    /// New login flag.
    pub login: Option<bool>,
    /// New password verifier; `Some(None)` removes the password (`PASSWORD NULL`).
    pub password: Option<Option<ScramVerifier>>,
}

impl RoleChange {
    fn apply(&self, role: &mut Role) {
        if let Some(s) = self.superuser {
            role.superuser = s;
        }
        if let Some(l) = self.login {
            role.login = l;
        }
        if let Some(p) = &self.password {
            role.password = p.clone();
        }
    }
}

/// The roles of a data dir, with serialised updates.
#[derive(Debug)]
pub struct RoleStore {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: RolesFile,
    /// `file.acl`, shared with the [`Privileges`] made from it.
    acl: Arc<Acl>,
    /// Changes with every change of roles or privileges.
    generation: u64,
}

impl RoleStore {
    /// Open (or start) the roles of `data_dir`.
    pub fn open(data_dir: &Path) -> CatalogResult<Self> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("roles.json");
        let corrupt = |reason: String| CatalogError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: RolesFile =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if file.format_version > ROLES_FORMAT_VERSION {
                    return Err(corrupt(format!(
                        "format {} is newer than this release understands ({ROLES_FORMAT_VERSION})",
                        file.format_version
                    )));
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RolesFile {
                format_version: ROLES_FORMAT_VERSION,
                roles: BTreeMap::new(),
                acl: Acl::default(),
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            path,
            state: Mutex::new(State {
                acl: Arc::new(state.acl.clone()),
                file: state,
                generation: 0,
            }),
        })
    }

    /// One role by name.
    pub fn get(&self, name: &str) -> Option<Role> {
        self.lock().file.roles.get(name).cloned()
    }

    /// Whether `name` is a role: a stored one or a predefined one
    /// ([`PREDEFINED_ROLES`](crate::grants::PREDEFINED_ROLES)).
    pub fn exists(&self, name: &str) -> bool {
        PREDEFINED_ROLES.contains(&name) || self.lock().file.roles.contains_key(name)
    }

    /// Every stored role, in name order.
    pub fn list(&self) -> Vec<Role> {
        self.lock().file.roles.values().cloned().collect()
    }

    /// Whether any role has a password (someone can log in when passwords are required).
    pub fn any_password(&self) -> bool {
        self.lock()
            .file
            .roles
            .values()
            .any(|r| r.password.is_some())
    }

    /// Owners, grants and memberships as they are now.
    pub fn acl(&self) -> Arc<Acl> {
        Arc::clone(&self.lock().acl)
    }

    /// Changes with every change of a role, an owner, a grant or a membership.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// What `role` may do now; a role that does not exist (dropped while connected) holds
    /// only what `PUBLIC` holds.
    pub fn privileges(&self, role: &str) -> Privileges {
        let state = self.lock();
        let superuser = state.file.roles.get(role).is_some_and(|r| r.superuser);
        Privileges::new(role, superuser, Arc::clone(&state.acl))
    }

    /// Change owners, grants or memberships; `f` sees the roles that exist (the predefined ones
    /// are not among them).
    pub fn update_acl<T>(
        &self,
        f: impl FnOnce(&mut Acl, &BTreeMap<String, Role>) -> CatalogResult<T>,
    ) -> CatalogResult<T> {
        self.update(|file| f(&mut file.acl, &file.roles))
    }

    /// Record the owner of a new object (replacing what a dropped object of that name left).
    pub fn set_owner(&self, object: Securable, owner: &str) -> CatalogResult<()> {
        self.update_acl(|acl, _| {
            acl.forget(&object);
            acl.set_owner(object, owner);
            Ok(())
        })
    }

    /// Forget a dropped object's owner and grants.
    pub fn forget(&self, object: &Securable) -> CatalogResult<()> {
        self.update_acl(|acl, _| {
            acl.forget(object);
            Ok(())
        })
    }

    /// Add `role`; an existing role of that name is an error unless `if_not_exists`, in which
    /// case nothing changes. Returns whether the role was added.
    pub fn create(&self, role: Role, if_not_exists: bool) -> CatalogResult<bool> {
        self.update(|file| {
            if file.roles.contains_key(&role.name) || PREDEFINED_ROLES.contains(&role.name.as_str())
            {
                return if if_not_exists {
                    Ok(false)
                } else {
                    Err(CatalogError::RoleExists(role.name.clone()))
                };
            }
            file.roles.insert(role.name.clone(), role.clone());
            Ok(true)
        })
    }

    /// Change the attributes of `name`.
    pub fn alter(&self, name: &str, change: &RoleChange) -> CatalogResult<()> {
        self.update(|file| {
            let role = file
                .roles
                .get_mut(name)
                .ok_or_else(|| CatalogError::RoleNotFound(name.to_string()))?;
            change.apply(role);
            Ok(())
        })
    }

    /// Rename `from` to `to`.
    pub fn rename(&self, from: &str, to: &str) -> CatalogResult<()> {
        self.update(|file| {
            if file.roles.contains_key(to) {
                return Err(CatalogError::RoleExists(to.to_string()));
            }
            let mut role = file
                .roles
                .remove(from)
                .ok_or_else(|| CatalogError::RoleNotFound(from.to_string()))?;
            // PostgreSQL clears an MD5 password on rename because the name salts it; a SCRAM
            // verifier does not depend on the name, so it stays.
            role.name = to.to_string();
            file.roles.insert(to.to_string(), role);
            file.acl.rename_role(from, to);
            Ok(())
        })
    }

    /// Remove `name` with its grants and memberships; a missing role is an error unless
    /// `if_exists`, and so is a role that still owns objects. Returns whether a role was
    /// removed.
    pub fn drop_role(&self, name: &str, if_exists: bool) -> CatalogResult<bool> {
        self.update(|file| {
            let owned = file.acl.owned_by(name);
            if !owned.is_empty() && file.roles.contains_key(name) {
                return Err(CatalogError::RoleOwnsObjects {
                    role: name.to_string(),
                    objects: owned.iter().map(ToString::to_string).collect(),
                });
            }
            match file.roles.remove(name) {
                Some(_) => {
                    file.acl.forget_role(name);
                    Ok(true)
                }
                None if if_exists => Ok(false),
                None => Err(CatalogError::RoleNotFound(name.to_string())),
            }
        })
    }

    /// Write the roles, grants and masking policies as they are now to `dir/roles.json` (for a
    /// backup).
    pub fn backup_to(&self, dir: &Path) -> CatalogResult<()> {
        let state = self.lock();
        write_json_atomically(&dir.join("roles.json"), &state.file)
    }

    /// Apply `f` to a copy of the roles and persist the copy if it changed: the file and the
    /// roles in memory change together or not at all.
    fn update<T>(&self, f: impl FnOnce(&mut RolesFile) -> CatalogResult<T>) -> CatalogResult<T> {
        let mut state = self.lock();
        let mut next = state.file.clone();
        let out = f(&mut next)?;
        if next != state.file {
            next.format_version = ROLES_FORMAT_VERSION;
            write_json_atomically(&self.path, &next)?;
            if next.acl != state.file.acl {
                state.acl = Arc::new(next.acl.clone());
            }
            state.file = next;
            state.generation += 1;
        }
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> Role {
        Role {
            name: name.into(),
            superuser: false,
            login: true,
            password: Some(ScramVerifier::derive_with(
                "pw",
                b"0123456789abcdef".to_vec(),
                4096,
            )),
            created_at: "2026-12-06T00:00:00Z".into(),
        }
    }

    #[test]
    fn roles_survive_reopen_with_their_verifiers() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RoleStore::open(dir.path()).expect("open");
        assert!(!store.any_password());
        assert!(store.create(role("alice"), false).expect("create"));
        assert!(!store.create(role("alice"), true).expect("if not exists"));
        assert!(matches!(
            store.create(role("alice"), false),
            Err(CatalogError::RoleExists(_))
        ));
        store
            .alter(
                "alice",
                &RoleChange {
                    superuser: Some(true),
                    ..RoleChange::default()
                },
            )
            .expect("alter");
        store.create(role("bob"), false).expect("create bob");
        store.rename("bob", "carol").expect("rename");
        let text = std::fs::read_to_string(dir.path().join("roles.json")).expect("read");
        assert!(!text.contains("\"pw\""), "{text}");
        assert!(text.contains("SCRAM-SHA-256$4096:"), "{text}");

        let store = RoleStore::open(dir.path()).expect("reopen");
        let alice = store.get("alice").expect("alice");
        assert!(alice.superuser && alice.login);
        assert!(alice.password.as_ref().is_some_and(|v| v.matches("pw")));
        assert!(store.get("bob").is_none());
        assert!(store.get("carol").is_some());
        assert!(store.get("Alice").is_none());
        assert!(store.drop_role("carol", false).expect("drop"));
        assert!(!store.drop_role("carol", true).expect("drop if exists"));
        assert!(matches!(
            store.drop_role("carol", false),
            Err(CatalogError::RoleNotFound(_))
        ));
        assert!(matches!(
            store.alter("nobody", &RoleChange::default()),
            Err(CatalogError::RoleNotFound(_))
        ));
        let names: Vec<String> = store.list().into_iter().map(|r| r.name).collect();
        assert_eq!(names, vec!["alice"]);
    }

    #[test]
    fn a_damaged_roles_file_is_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("roles.json"),
            br#"{"format_version":1,"roles":{"a":{"name":"a","superuser":false,"login":true,"password":"plain","created_at":""}}}"#,
        )
        .expect("write");
        let e = RoleStore::open(dir.path()).expect_err("corrupt");
        assert!(matches!(e, CatalogError::Corrupt { .. }), "{e}");
    }
}
