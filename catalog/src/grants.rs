//! Privileges: who owns which table, schema and model, what each role was granted on them,
//! and which roles are members of which (`GRANT role TO role`), kept with the roles in
//! `roles.json` (see [`crate::roles`]).
//!
//! The rules are PostgreSQL's: a superuser may do anything; the owner of an object holds every
//! privilege on it; other roles hold what was granted to them, to a role they are a member
//! of (transitively, privileges are inherited), or to `PUBLIC`. The predefined roles
//! [`PREDEFINED_ROLES`] work as in PostgreSQL: `pg_read_all_data` reads every table,
//! `pg_write_all_data` writes every table, `pg_read_server_files` / `pg_write_server_files`
//! name local files outside the confined directories.
//!
//! `GRANT CREATE MODEL TO r` (prognos's own) is a privilege on the database,
//! [`Securable::Database`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::masking::MaskPolicy;

/// The grantee that stands for every role.
pub const PUBLIC: &str = "public";

/// Reads every table and view (as if granted `SELECT` on all of them).
pub const READ_ALL_DATA: &str = "pg_read_all_data";
/// Writes every table (as if granted `INSERT`, `UPDATE`, `DELETE` on all of them).
pub const WRITE_ALL_DATA: &str = "pg_write_all_data";
/// Reads local files anywhere the server can (COPY FROM, external tables, model import).
pub const READ_SERVER_FILES: &str = "pg_read_server_files";
/// Writes local files anywhere the server can (COPY TO, model export).
pub const WRITE_SERVER_FILES: &str = "pg_write_server_files";

/// The predefined roles: they exist in every data dir, cannot log in, and are granted like
/// any other role.
pub const PREDEFINED_ROLES: [&str; 4] = [
    READ_ALL_DATA,
    WRITE_ALL_DATA,
    READ_SERVER_FILES,
    WRITE_SERVER_FILES,
];

/// Something privileges are granted on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Securable {
    /// A table or view.
    Table {
        /// Its schema.
        schema: String,
        /// Its name.
        name: String,
    },
    /// A schema (`CREATE` on it makes tables there).
    Schema(String),
    /// A model (`USAGE` runs it).
    Model(String),
    /// The database (`CREATE MODEL`).
    Database,
}

impl Securable {
    /// A table's securable.
    pub fn table(schema: &str, name: &str) -> Self {
        Securable::Table {
            schema: schema.to_string(),
            name: name.to_string(),
        }
    }

    /// The privileges that can be granted on this kind of object.
    pub fn grantable(&self) -> &'static [Privilege] {
        match self {
            Securable::Table { .. } => &[
                Privilege::Select,
                Privilege::Insert,
                Privilege::Update,
                Privilege::Delete,
                Privilege::Truncate,
                Privilege::Unmask,
            ],
            Securable::Schema(_) => &[Privilege::Create, Privilege::Usage],
            Securable::Model(_) => &[Privilege::Usage],
            Securable::Database => &[Privilege::CreateModel],
        }
    }

    /// What `ALL [PRIVILEGES]` grants on it: every grantable privilege but `UNMASK`, which is
    /// only ever granted by name.
    pub fn all_privileges(&self) -> Vec<Privilege> {
        self.grantable()
            .iter()
            .copied()
            .filter(|p| *p != Privilege::Unmask)
            .collect()
    }

    /// The kind of object, as error messages name it (`table`, `schema`, `model`).
    pub fn kind(&self) -> &'static str {
        match self {
            Securable::Table { .. } => "table",
            Securable::Schema(_) => "schema",
            Securable::Model(_) => "model",
            Securable::Database => "database",
        }
    }
}

impl std::fmt::Display for Securable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Securable::Table { name, .. } => write!(f, "table {name}"),
            Securable::Schema(s) => write!(f, "schema {s}"),
            Securable::Model(m) => write!(f, "model {m}"),
            Securable::Database => write!(f, "database"),
        }
    }
}

/// One privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Privilege {
    /// Read rows.
    Select,
    /// Add rows.
    Insert,
    /// Change rows.
    Update,
    /// Remove rows.
    Delete,
    /// Empty the table.
    Truncate,
    /// Use a model (PREDICT, FORECAST, ANOMALY, EVALUATE, …) or look up names in a schema.
    Usage,
    /// Create tables in a schema.
    Create,
    /// Create models (`GRANT CREATE MODEL`).
    CreateModel,
    /// See a table's masked columns as they are (`GRANT UNMASK ON t`).
    Unmask,
}

impl Privilege {
    /// The SQL keyword(s).
    pub fn keyword(&self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Truncate => "TRUNCATE",
            Privilege::Usage => "USAGE",
            Privilege::Create => "CREATE",
            Privilege::CreateModel => "CREATE MODEL",
            Privilege::Unmask => "UNMASK",
        }
    }

    /// The letter PostgreSQL's `aclitem` uses for it (`relacl`, `\dp`).
    pub fn acl_letter(&self) -> char {
        match self {
            Privilege::Select => 'r',
            Privilege::Insert => 'a',
            Privilege::Update => 'w',
            Privilege::Delete => 'd',
            Privilege::Truncate => 'D',
            Privilege::Usage => 'U',
            Privilege::Create => 'C',
            Privilege::CreateModel => 'M',
            Privilege::Unmask => 'u',
        }
    }
}

/// Owners, grants and memberships (the access-control part of `roles.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "AclFile", from = "AclFile")]
pub struct Acl {
    owners: BTreeMap<Securable, String>,
    grants: BTreeMap<Securable, BTreeMap<String, BTreeSet<Privilege>>>,
    /// Member → the roles it was granted.
    members: BTreeMap<String, BTreeSet<String>>,
    /// Masking policies of each table.
    masks: BTreeMap<Securable, Vec<MaskPolicy>>,
}

/// [`Acl`] as JSON writes it (objects are not map keys there).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AclFile {
    #[serde(default)]
    owners: Vec<OwnerEntry>,
    #[serde(default)]
    grants: Vec<GrantEntry>,
    #[serde(default)]
    members: BTreeMap<String, BTreeSet<String>>,
    #[serde(default)]
    masks: Vec<MaskEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MaskEntry {
    object: Securable,
    policy: MaskPolicy,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OwnerEntry {
    object: Securable,
    owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GrantEntry {
    object: Securable,
    grantee: String,
    privileges: BTreeSet<Privilege>,
}

impl From<Acl> for AclFile {
    fn from(acl: Acl) -> Self {
        AclFile {
            owners: acl
                .owners
                .into_iter()
                .map(|(object, owner)| OwnerEntry { object, owner })
                .collect(),
            grants: acl
                .grants
                .into_iter()
                .flat_map(|(object, by)| {
                    by.into_iter().map(move |(grantee, privileges)| GrantEntry {
                        object: object.clone(),
                        grantee,
                        privileges,
                    })
                })
                .collect(),
            members: acl.members,
            masks: acl
                .masks
                .into_iter()
                .flat_map(|(object, policies)| {
                    policies.into_iter().map(move |policy| MaskEntry {
                        object: object.clone(),
                        policy,
                    })
                })
                .collect(),
        }
    }
}

impl From<AclFile> for Acl {
    fn from(file: AclFile) -> Self {
        let mut acl = Acl {
            members: file.members,
            ..Acl::default()
        };
        for o in file.owners {
            acl.owners.insert(o.object, o.owner);
        }
        for g in file.grants {
            acl.grant(&g.object, &g.grantee, &g.privileges);
        }
        for m in file.masks {
            acl.masks.entry(m.object).or_default().push(m.policy);
        }
        acl
    }
}

impl Acl {
    /// The recorded owner of `object` (objects made before ownership was recorded have none:
    /// only superusers own them).
    pub fn owner(&self, object: &Securable) -> Option<&str> {
        self.owners.get(object).map(String::as_str)
    }

    /// Record `owner` as the owner of `object`.
    pub fn set_owner(&mut self, object: Securable, owner: &str) {
        self.owners.insert(object, owner.to_string());
    }

    /// Add privileges for `grantee` on `object`.
    pub fn grant(&mut self, object: &Securable, grantee: &str, privileges: &BTreeSet<Privilege>) {
        if privileges.is_empty() {
            return;
        }
        self.grants
            .entry(object.clone())
            .or_default()
            .entry(grantee.to_string())
            .or_default()
            .extend(privileges.iter().copied());
    }

    /// Remove privileges of `grantee` on `object`.
    pub fn revoke(&mut self, object: &Securable, grantee: &str, privileges: &BTreeSet<Privilege>) {
        if let Some(by) = self.grants.get_mut(object) {
            if let Some(held) = by.get_mut(grantee) {
                held.retain(|p| !privileges.contains(p));
                if held.is_empty() {
                    by.remove(grantee);
                }
            }
            if by.is_empty() {
                self.grants.remove(object);
            }
        }
    }

    /// Grants on `object`: grantee → privileges.
    pub fn grants_on(&self, object: &Securable) -> Option<&BTreeMap<String, BTreeSet<Privilege>>> {
        self.grants.get(object)
    }

    /// Make `member` a member of `role`.
    pub fn add_member(&mut self, role: &str, member: &str) {
        self.members
            .entry(member.to_string())
            .or_default()
            .insert(role.to_string());
    }

    /// End `member`'s membership in `role`.
    pub fn remove_member(&mut self, role: &str, member: &str) {
        if let Some(of) = self.members.get_mut(member) {
            of.remove(role);
            if of.is_empty() {
                self.members.remove(member);
            }
        }
    }

    /// Every membership: (role, member).
    pub fn memberships(&self) -> Vec<(String, String)> {
        self.members
            .iter()
            .flat_map(|(member, roles)| roles.iter().map(move |r| (r.clone(), member.clone())))
            .collect()
    }

    /// The roles `role` is a member of, directly or through others, itself and `PUBLIC`
    /// included.
    pub fn roles_of(&self, role: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::from([role.to_string(), PUBLIC.to_string()]);
        let mut todo = vec![role.to_string()];
        while let Some(r) = todo.pop() {
            for granted in self.members.get(&r).into_iter().flatten() {
                if out.insert(granted.clone()) {
                    todo.push(granted.clone());
                }
            }
        }
        out
    }

    /// Whether `member` is `role` or a member of it.
    pub fn is_member(&self, member: &str, role: &str) -> bool {
        self.roles_of(member).contains(role)
    }

    /// The objects `role` owns.
    pub fn owned_by(&self, role: &str) -> Vec<Securable> {
        self.owners
            .iter()
            .filter(|(_, o)| o.as_str() == role)
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Forget an object (dropped): its owner, grants and masking policies.
    pub fn forget(&mut self, object: &Securable) {
        self.owners.remove(object);
        self.grants.remove(object);
        self.masks.remove(object);
    }

    /// An object was renamed: its owner, grants and masking policies follow it.
    pub fn rename(&mut self, from: &Securable, to: Securable) {
        if let Some(o) = self.owners.remove(from) {
            self.owners.insert(to.clone(), o);
        }
        if let Some(g) = self.grants.remove(from) {
            self.grants.insert(to.clone(), g);
        }
        if let Some(m) = self.masks.remove(from) {
            self.masks.insert(to, m);
        }
    }

    /// The masking policies of `object`.
    pub fn masks_on(&self, object: &Securable) -> &[MaskPolicy] {
        self.masks.get(object).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every masking policy with its table.
    pub fn masks(&self) -> Vec<(Securable, MaskPolicy)> {
        self.masks
            .iter()
            .flat_map(|(o, ps)| ps.iter().map(move |p| (o.clone(), p.clone())))
            .collect()
    }

    /// The table a policy of that name masks.
    pub fn mask_named(&self, name: &str) -> Option<(Securable, MaskPolicy)> {
        self.masks().into_iter().find(|(_, p)| p.name == name)
    }

    /// Add a policy; `Err` with the reason when its name is taken or its column is masked
    /// already.
    pub fn add_mask(&mut self, object: Securable, policy: MaskPolicy) -> Result<(), String> {
        if self.mask_named(&policy.name).is_some() {
            return Err(format!("masking policy \"{}\" already exists", policy.name));
        }
        if let Some(p) = self
            .masks_on(&object)
            .iter()
            .find(|p| p.column == policy.column)
        {
            return Err(format!(
                "column \"{}\" of {object} is masked by policy \"{}\" already",
                policy.column, p.name
            ));
        }
        self.masks.entry(object).or_default().push(policy);
        Ok(())
    }

    /// Remove the policy `name`; whether there was one.
    pub fn drop_mask(&mut self, name: &str) -> bool {
        let mut found = false;
        for ps in self.masks.values_mut() {
            let before = ps.len();
            ps.retain(|p| p.name != name);
            found |= ps.len() != before;
        }
        self.masks.retain(|_, ps| !ps.is_empty());
        found
    }

    /// Forget a dropped role's grants and memberships (what it owns must have gone first).
    pub fn forget_role(&mut self, role: &str) {
        for by in self.grants.values_mut() {
            by.remove(role);
        }
        self.grants.retain(|_, by| !by.is_empty());
        self.members.remove(role);
        for of in self.members.values_mut() {
            of.remove(role);
        }
        self.members.retain(|_, of| !of.is_empty());
    }

    /// A role was renamed: what it owns, holds and belongs to follows it.
    pub fn rename_role(&mut self, from: &str, to: &str) {
        for owner in self.owners.values_mut() {
            if owner == from {
                *owner = to.to_string();
            }
        }
        for by in self.grants.values_mut() {
            if let Some(p) = by.remove(from) {
                by.insert(to.to_string(), p);
            }
        }
        if let Some(of) = self.members.remove(from) {
            self.members.insert(to.to_string(), of);
        }
        for of in self.members.values_mut() {
            if of.remove(from) {
                of.insert(to.to_string());
            }
        }
    }
}

/// What one role may do, as of one moment (a statement's checks use one of these).
#[derive(Debug, Clone)]
pub struct Privileges {
    role: String,
    superuser: bool,
    roles: BTreeSet<String>,
    acl: Arc<Acl>,
}

impl Privileges {
    /// The privileges of `role` under `acl`.
    pub fn new(role: &str, superuser: bool, acl: Arc<Acl>) -> Self {
        Self {
            role: role.to_string(),
            superuser,
            roles: acl.roles_of(role),
            acl,
        }
    }

    /// The role's name.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// Whether the role is a superuser (every check passes).
    pub fn is_superuser(&self) -> bool {
        self.superuser
    }

    /// Whether the role is `role` or a member of it (superusers are members of every role).
    pub fn in_role(&self, role: &str) -> bool {
        self.superuser || self.roles.contains(role)
    }

    /// Whether the role owns `object` (directly or as a member of the owning role).
    pub fn owns(&self, object: &Securable) -> bool {
        self.superuser
            || self
                .acl
                .owner(object)
                .is_some_and(|o| self.roles.contains(o))
    }

    /// Whether the role holds `privilege` on `object`.
    pub fn has(&self, object: &Securable, privilege: Privilege) -> bool {
        if self.owns(object) {
            return true;
        }
        if let Securable::Table { .. } = object {
            let all_data = match privilege {
                Privilege::Select => Some(READ_ALL_DATA),
                Privilege::Insert | Privilege::Update | Privilege::Delete => Some(WRITE_ALL_DATA),
                _ => None,
            };
            if all_data.is_some_and(|r| self.roles.contains(r)) {
                return true;
            }
        }
        self.acl.grants_on(object).is_some_and(|by| {
            by.iter()
                .any(|(grantee, held)| held.contains(&privilege) && self.roles.contains(grantee))
        })
    }

    /// The masking policies the role's reads of `object` go through: none for its owner,
    /// superusers and roles granted `UNMASK` on it.
    pub fn masks_for(&self, object: &Securable) -> Vec<MaskPolicy> {
        let policies = self.acl.masks_on(object);
        if policies.is_empty() || self.has(object, Privilege::Unmask) {
            return vec![];
        }
        policies.to_vec()
    }

    /// Whether the role may see that `object` exists (it holds some privilege on it).
    pub fn sees(&self, object: &Securable) -> bool {
        object.grantable().iter().any(|p| self.has(object, *p))
    }
}

/// The role a session runs as, reachable from its DataFusion state (a `SessionConfig`
/// extension), so that catalogs and system tables list only what the role sees.
#[derive(Debug, Clone)]
pub struct SessionRole {
    store: Arc<crate::RoleStore>,
    user: Arc<std::sync::Mutex<String>>,
}

impl SessionRole {
    /// The role named by `user` (the session's handle, changed when it authenticates).
    pub fn new(store: Arc<crate::RoleStore>, user: Arc<std::sync::Mutex<String>>) -> Self {
        Self { store, user }
    }

    /// Every masking policy of `object` (whether they apply to the role is decided at each
    /// scan: [`Privileges::masks_for`]).
    pub fn policies_on(&self, object: &Securable) -> Vec<MaskPolicy> {
        self.store.acl().masks_on(object).to_vec()
    }

    /// What the role may do now.
    pub fn privileges(&self) -> Privileges {
        let user = self.user.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.store.privileges(&user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &[Privilege]) -> BTreeSet<Privilege> {
        p.iter().copied().collect()
    }

    #[test]
    fn privileges_come_from_owners_grants_memberships_and_public() {
        let t = Securable::table("public", "sales");
        let u = Securable::table("public", "users");
        let mut acl = Acl::default();
        acl.set_owner(t.clone(), "owner");
        acl.grant(&t, "analysts", &set(&[Privilege::Select]));
        acl.grant(&u, PUBLIC, &set(&[Privilege::Insert]));
        acl.add_member("analysts", "team");
        acl.add_member("team", "alice");
        acl.add_member(READ_ALL_DATA, "auditor");
        let acl = Arc::new(acl);
        let alice = Privileges::new("alice", false, Arc::clone(&acl));
        assert!(alice.has(&t, Privilege::Select), "inherited through team");
        assert!(!alice.has(&t, Privilege::Insert));
        assert!(alice.has(&u, Privilege::Insert), "PUBLIC");
        assert!(!alice.has(&u, Privilege::Select));
        assert!(alice.sees(&u) && alice.sees(&t));
        assert!(!alice.owns(&t));
        let owner = Privileges::new("owner", false, Arc::clone(&acl));
        assert!(owner.has(&t, Privilege::Truncate) && owner.owns(&t));
        let auditor = Privileges::new("auditor", false, Arc::clone(&acl));
        assert!(auditor.has(&u, Privilege::Select) && !auditor.has(&u, Privilege::Truncate));
        let bob = Privileges::new("bob", false, Arc::clone(&acl));
        assert!(!bob.sees(&t));
        assert!(Privileges::new("root", true, acl).has(&t, Privilege::Delete));
    }

    #[test]
    fn revokes_renames_and_dropped_roles_leave_no_trace() {
        let t = Securable::table("public", "t");
        let mut acl = Acl::default();
        acl.grant(&t, "a", &set(&[Privilege::Select, Privilege::Insert]));
        acl.revoke(&t, "a", &set(&[Privilege::Insert]));
        assert_eq!(
            acl.grants_on(&t).and_then(|g| g.get("a")),
            Some(&set(&[Privilege::Select]))
        );
        let t2 = Securable::table("public", "t2");
        acl.set_owner(t.clone(), "o");
        acl.rename(&t, t2.clone());
        assert_eq!(acl.owner(&t2), Some("o"));
        assert!(acl.grants_on(&t).is_none());
        acl.rename_role("a", "b");
        assert!(acl.grants_on(&t2).is_some_and(|g| g.contains_key("b")));
        acl.add_member("g", "b");
        acl.forget_role("b");
        assert!(acl.grants_on(&t2).is_none());
        assert!(acl.memberships().is_empty());
        let text = serde_json::to_string(&acl).expect("json");
        let back: Acl = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, acl);
    }
}
