//! Local files that statements name: `COPY … TO 'path'`, `CREATE EXTERNAL TABLE … LOCATION`,
//! `CREATE MODEL … FROM` and `EXPORT MODEL … TO`.
//!
//! A relative path is taken from the data dir's `files/` folder (created at start). Where a
//! role may read or write:
//!
//! * superusers, and members of `pg_read_server_files` (reading) or `pg_write_server_files`
//!   (writing): any path the server process can reach, as in PostgreSQL;
//! * every other role: only inside `files/` and the folders listed in `server_files.allow`.
//!   Anything else — absolute paths elsewhere, `..` climbing out, a symbolic link that points
//!   out, a `file://` URL, the data dir's own catalog, roles, tables and models — is
//!   `42501`.
//!
//! A path is judged where it really leads: `..` is resolved, and the longest part of it that
//! exists is resolved through its symbolic links before the check.

use std::path::{Component, Path, PathBuf};

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::{Engine, Session};

/// The data dir's folder for files that statements read and write by relative path.
pub const FILES_DIR: &str = "files";

/// What a statement does with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads it (external tables, model imports).
    Read,
    /// Writes it (COPY TO, model exports).
    Write,
}

impl Access {
    /// The predefined role that may do this with any path.
    fn anywhere_role(self) -> &'static str {
        match self {
            Access::Read => prognos_catalog::grants::READ_SERVER_FILES,
            Access::Write => prognos_catalog::grants::WRITE_SERVER_FILES,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// Where roles may name local files (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct ServerFiles {
    /// `<data dir>/files`, resolved.
    root: PathBuf,
    /// `server_files.allow`, resolved.
    allowed: Vec<PathBuf>,
}

impl ServerFiles {
    /// The rules for `data_dir` (absolute) and the configured extra folders; creates `files/`.
    pub(crate) fn new(data_dir: &Path, allow: &[PathBuf]) -> EngineResult<Self> {
        let root = data_dir.join(FILES_DIR);
        std::fs::create_dir_all(&root).map_err(|e| {
            EngineError::statement(
                StatusCode::IoError,
                format!("cannot create {}: {e}", root.display()),
            )
        })?;
        Ok(Self {
            root: resolve(&root),
            allowed: allow.iter().map(|p| resolve(&absolute(p))).collect(),
        })
    }

    /// The local path `text` names, or `None` when it names an object store (`s3://…`).
    /// Relative paths are taken from `files/`; `file://` URLs are local paths.
    pub(crate) fn local_path(&self, text: &str) -> EngineResult<Option<PathBuf>> {
        match url::Url::parse(text) {
            Ok(url) if url.scheme() == "file" => url.to_file_path().map(Some).map_err(|_| {
                EngineError::statement(
                    StatusCode::InvalidParameterValue,
                    format!("'{text}' is not a local file URL"),
                )
            }),
            // A one-letter scheme is a Windows drive, not a store.
            Ok(url) if url.scheme().len() > 1 => Ok(None),
            _ => {
                let p = Path::new(text);
                Ok(Some(if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    self.root.join(p)
                }))
            }
        }
    }

    /// Check that a role (that may name files `anywhere`, or not) may `access` `path`;
    /// returns the path the statement should use: with `..` resolved, and for other roles the
    /// checked real path (so a link swapped in later is not followed out).
    pub(crate) fn check(
        &self,
        path: &Path,
        access: Access,
        anywhere: bool,
    ) -> EngineResult<PathBuf> {
        let lexical = normalise(path);
        if anywhere {
            return Ok(lexical);
        }
        let real = resolve(&lexical);
        let inside = std::iter::once(&self.root)
            .chain(&self.allowed)
            .any(|root| real.starts_with(root));
        if inside {
            Ok(real)
        } else {
            Err(EngineError::statement(
                StatusCode::InsufficientPrivilege,
                format!(
                    "permission denied to {} server file '{}': only superusers and members of {} may name files outside the data dir's {FILES_DIR}/ folder and server_files.allow",
                    access.verb(),
                    path.display(),
                    access.anywhere_role()
                ),
            ))
        }
    }
}

impl Engine {
    /// The local path `text` names, checked for `access` by the session's role (see the
    /// module docs); `None` when it names an object store. The one check every statement that
    /// names a file goes through.
    pub(crate) fn checked_local_path(
        &self,
        session: &Session,
        text: &str,
        access: Access,
    ) -> EngineResult<Option<PathBuf>> {
        let Some(path) = self.files.local_path(text)? else {
            return Ok(None);
        };
        let anywhere = self.privileges(session).in_role(access.anywhere_role());
        self.files.check(&path, access, anywhere).map(Some)
    }
}

/// `path` made absolute from the working directory.
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// `..` and `.` resolved without touching the disk (`/a/b/../c` is `/a/c`; `..` at the root
/// stays at the root).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Where `path` really leads: its longest existing ancestor resolved through symbolic links,
/// with the rest (which does not exist yet) appended.
fn resolve(path: &Path) -> PathBuf {
    let path = normalise(path);
    let mut existing = path.as_path();
    let mut rest = vec![];
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_files_and_allowed_folders_need_a_superuser() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        let shared = dir.path().join("shared");
        std::fs::create_dir_all(&shared).expect("mkdir");
        let files = ServerFiles::new(&data, std::slice::from_ref(&shared)).expect("new");
        let local = |t: &str| files.local_path(t).expect("path").expect("local");

        // Relative paths land in files/, and may be written by anyone.
        let p = local("out/x.csv");
        assert!(p.starts_with(data.join("files")));
        assert!(files.check(&p, Access::Write, false).is_ok());
        assert!(
            files
                .check(&shared.join("in.csv"), Access::Read, false)
                .is_ok()
        );

        // Escapes: `..`, absolute paths, file:// URLs, the data dir's own files, symlinks.
        std::os::unix::fs::symlink("/etc", data.join("files").join("etc")).expect("symlink");
        for text in [
            "../roles.json",
            "../catalog.json",
            "a/../../tables/x",
            "/etc/passwd",
            "file:///etc/passwd",
            "etc/passwd",
            "etc",
        ] {
            let p = local(text);
            let e = files.check(&p, Access::Read, false).expect_err(text);
            assert_eq!(e.status(), StatusCode::InsufficientPrivilege, "{text}");
            assert!(files.check(&p, Access::Read, true).is_ok(), "{text}");
        }
        let e = files
            .check(&dir.path().join("shared2/x"), Access::Write, false)
            .expect_err("a sibling with the same prefix is outside");
        assert!(e.to_string().contains("permission denied to write"), "{e}");

        // `..` is resolved in the path a superuser's statement uses.
        assert_eq!(
            files
                .check(Path::new("/tmp/a/../b.csv"), Access::Write, true)
                .expect("superuser"),
            PathBuf::from("/tmp/b.csv")
        );
        assert!(
            files
                .local_path("s3://bucket/k.csv")
                .expect("url")
                .is_none()
        );
    }
}
