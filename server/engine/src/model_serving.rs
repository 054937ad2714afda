//! `ALTER MODEL m SET FALLBACK 'other' | RESET FALLBACK | SET CACHE (entries = n) | RESET
//! CACHE`: how a model's answers are served when it fails, and for repeated inputs. The
//! serving itself is the model functions' (`prognos_udfs::models`).

use std::collections::BTreeMap;

use prognos_catalog::{CatalogError, Privilege, Securable};

use crate::Engine;
use crate::error::{EngineError, EngineResult, StatusCode};
use crate::session::Session;

/// The most answers `SET CACHE` keeps per version.
const MAX_CACHE_ENTRIES: u64 = 1_000_000;

fn invalid(msg: String) -> EngineError {
    EngineError::statement(StatusCode::InvalidParameterValue, msg)
}

/// `SET FALLBACK 'other'`: `other` must be another model the role may use, whose deployed
/// version takes the same features (by name, in order) and answers in the same types as
/// `name`'s deployed version. Returns what the NOTICE says.
pub(crate) async fn set_fallback(
    engine: &Engine,
    session: &Session,
    name: &str,
    other: &str,
) -> EngineResult<String> {
    if other == name || other.contains('@') {
        return Err(invalid(format!(
            "SET FALLBACK needs another model's name, not '{other}' (a fallback always uses \
             its deployed version)"
        )));
    }
    if engine.registry.get(other).is_none() {
        return Err(CatalogError::ModelNotFound(other.to_string()).into());
    }
    crate::privileges::require(
        &engine.privileges(session),
        &Securable::Model(other.to_string()),
        Privilege::Usage,
    )?;
    let snapshot = engine.registry.snapshot();
    let not_ready = |m: &str, e: CatalogError| {
        EngineError::statement(
            StatusCode::ObjectNotInPrerequisiteState,
            format!("SET FALLBACK needs a deployed, loadable version of model \"{m}\": {e}"),
        )
    };
    let (_, primary) = snapshot.load(name).await.map_err(|e| not_ready(name, e))?;
    let (_, backup) = snapshot
        .load(other)
        .await
        .map_err(|e| not_ready(other, e))?;
    let names = |m: &prognos_models::ModelArtifact| -> Vec<String> {
        m.features.features.iter().map(|f| f.name.clone()).collect()
    };
    if names(&primary) != names(&backup) {
        return Err(invalid(format!(
            "model \"{other}\" cannot stand in for \"{name}\": it takes ({}), \"{name}\" takes \
             ({})",
            names(&backup).join(", "),
            names(&primary).join(", ")
        )));
    }
    if primary.output_type() != backup.output_type()
        || (primary.proba_type().is_some() && primary.proba_type() != backup.proba_type())
    {
        return Err(invalid(format!(
            "model \"{other}\" cannot stand in for \"{name}\": it answers {} where \"{name}\" \
             answers {}",
            backup.output_type(),
            primary.output_type()
        )));
    }
    engine
        .registry
        .set_fallback(name, Some(other.to_string()))
        .await?;
    Ok(format!(
        "model \"{name}\": when it fails, model \"{other}\" answers (with a NOTICE)"
    ))
}

/// `SET CACHE (entries = n)`: returns what the NOTICE says.
pub(crate) async fn set_cache(
    engine: &Engine,
    name: &str,
    options: &BTreeMap<String, String>,
) -> EngineResult<String> {
    let mut entries = None;
    for (k, v) in options {
        match k.as_str() {
            "entries" => {
                entries = match v.parse::<u64>() {
                    Ok(n) if (1..=MAX_CACHE_ENTRIES).contains(&n) => Some(n),
                    _ => {
                        return Err(invalid(format!(
                            "SET CACHE: entries must be an integer from 1 to \
                             {MAX_CACHE_ENTRIES}, got {v}"
                        )));
                    }
                }
            }
            other => {
                return Err(invalid(format!(
                    "unknown SET CACHE option \"{other}\" (known: entries)"
                )));
            }
        }
    }
    let entries = entries.ok_or_else(|| {
        invalid("SET CACHE needs entries: SET CACHE (entries = 10000)".to_string())
    })?;
    if engine.registry.get(name).is_none() {
        return Err(CatalogError::ModelNotFound(name.to_string()).into());
    }
    engine.registry.set_cache(name, Some(entries)).await?;
    Ok(format!(
        "model \"{name}\": answers to the last {entries} distinct small batches are cached per \
         version"
    ))
}
