//! `ALTER MODEL name DEPLOY VERSION n | ROLLBACK | RETIRE VERSION n | SET RETRAIN … | RESET
//! RETRAIN | SET LOGGING (…) | SET OUTCOMES FROM (…) | RESET LOGGING | RESET OUTCOMES`:
//! lifecycle changes made by a role (the rules are `prognos_catalog::model_states`').
//! Each is one atomic registry write; queries already running keep the version they started
//! with.

use prognos_catalog::{Admission, StateChange};

use crate::Engine;
use crate::error::EngineResult;
use crate::model_sql::ModelAction;
use crate::session::Session;

/// Apply `action` to model `name` as the session's role, with a NOTICE saying what changed.
pub(crate) async fn alter(
    engine: &Engine,
    session: &Session,
    name: &str,
    action: &ModelAction,
) -> EngineResult<()> {
    let change = StateChange {
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        by: session.user(),
        reason: None,
    };
    let said = match action {
        ModelAction::Deploy(version) => {
            match engine.registry.deploy(name, *version, &change).await? {
                Some(previous) => format!(
                    "model \"{name}\": version {version} deployed (replacing version {previous})"
                ),
                None => format!("model \"{name}\": version {version} deployed"),
            }
        }
        ModelAction::Rollback => {
            let (from, to) = engine.registry.rollback(name, &change).await?;
            format!(
                "model \"{name}\": rolled back from version {from} (now retired) to version {to}"
            )
        }
        ModelAction::Retire(version) => {
            engine.registry.retire(name, *version, &change).await?;
            format!("model \"{name}\": version {version} retired")
        }
        ModelAction::SetRetrain { every, at } => {
            let schedule = crate::model_jobs::schedule(every, at.as_deref())?;
            let first = schedule.next_run.clone();
            engine.registry.set_retrain(name, Some(schedule)).await?;
            format!("model \"{name}\": retrained every {every}, first at {first}")
        }
        ModelAction::ResetRetrain => {
            engine.registry.set_retrain(name, None).await?;
            engine
                .registry
                .set_live_rule(name, prognos_catalog::LiveRuleKind::Retrain, None)
                .await?;
            format!("model \"{name}\": no scheduled retraining")
        }
        ModelAction::SetLogging(options) => {
            crate::model_monitoring::set_logging(engine, session, name, options).await?
        }
        ModelAction::ResetLogging => {
            engine.registry.set_logging(name, None).await?;
            format!("model \"{name}\": predictions no longer logged (the log table stays)")
        }
        ModelAction::SetOutcomes(query) => {
            let stored = crate::model_monitoring::check_outcomes(session, query).await?;
            engine.registry.set_outcomes(name, Some(stored)).await?;
            format!("model \"{name}\": outcomes read from the query given")
        }
        ModelAction::SetLiveRule { kind, rule, over } => {
            crate::model_rules::set_rule(engine, name, *kind, rule, over.as_deref()).await?
        }
        ModelAction::ResetRollback => {
            engine
                .registry
                .set_live_rule(name, prognos_catalog::LiveRuleKind::Rollback, None)
                .await?;
            format!("model \"{name}\": no automatic rollback")
        }
        ModelAction::SetFallback(other) => {
            crate::model_serving::set_fallback(engine, session, name, other).await?
        }
        ModelAction::ResetFallback => {
            engine.registry.set_fallback(name, None).await?;
            format!("model \"{name}\": no fallback")
        }
        ModelAction::SetCache(options) => {
            crate::model_serving::set_cache(engine, name, options).await?
        }
        ModelAction::ResetCache => {
            engine.registry.set_cache(name, None).await?;
            format!("model \"{name}\": no prediction cache")
        }
        ModelAction::OwnerTo(role) => {
            crate::owner_sql::change_owner(
                engine,
                session,
                prognos_catalog::Securable::Model(name.to_string()),
                role,
            )?;
            format!("model \"{name}\": owned by \"{role}\"")
        }
        ModelAction::ResetOutcomes => {
            engine.registry.set_outcomes(name, None).await?;
            format!("model \"{name}\": no outcomes query")
        }
    };
    tracing::info!(model = name, user = %change.by, "{said}");
    session.notice(said);
    Ok(())
}

/// Tell the client how a new version of `name` entered the model: nothing more when it was
/// deployed, a NOTICE when it waits as a candidate, a WARNING when its gate rejected it.
pub(crate) fn announce(
    engine: &Engine,
    session: &Session,
    name: &str,
    version: u32,
    admission: &Admission,
) {
    let serving = match engine.registry.get(name).and_then(|e| e.deployed()) {
        Some(d) => format!("version {d} stays deployed"),
        None => "no version is deployed".to_string(),
    };
    match admission {
        Admission::Deploy => {}
        Admission::Candidate => session.notice(format!(
            "model \"{name}\" version {version} is a candidate ({serving}): \
             ALTER MODEL {name} DEPLOY VERSION {version} deploys it"
        )),
        Admission::Reject(why) => session.warning(format!(
            "model \"{name}\" version {version} was rejected by its validation gate ({why}); \
             {serving}"
        )),
    }
}
