//! Interpolation of a task's variables at launch: a value that is exactly `pipeline_secret{{key}}`,
//! `global_secret{{key}}`, `pipeline_object{{key}}` or `run_object{{key}}` (kind in any case,
//! spaces around it and the key allowed) becomes that secret's value or that object's contents.
//! Anything else is passed as it is.
//!
//! Owns the syntax and the lookups (the key inside the braces, never the variable's name — v0
//! looked objects up by the wrong key). Must not write logs or change task state: it returns the
//! environment and the secret values to mask, or a message naming the missing key.

use crate::models::TaskExecution;
use crate::objects::{ObjectKey, ObjectStore, read_to_vec};
use crate::secrets::{SecretKey, SecretStore};
use crate::storage::Storage;

/// Why a reference could not be filled in; `what` names the variable or setting
/// ("variable TOKEN", "setting secret"). Its message becomes the task's status reason.
#[derive(Debug, thiserror::Error)]
pub enum InterpolationError {
    #[error("{what}: pipeline secret '{key}' does not exist in pipeline '{pipeline}'")]
    NoPipelineSecret {
        what: String,
        key: String,
        pipeline: String,
    },
    /// One message whether the secret is missing or kept from this namespace: which global
    /// secrets exist, and for whom, is the administrators' business.
    #[error(
        "{what}: global secret '{key}' does not exist or may not be used in namespace '{namespace}'"
    )]
    GlobalSecretUnavailable {
        what: String,
        key: String,
        namespace: String,
    },
    #[error("{what}: {object} does not exist")]
    NoObject { what: String, object: String },
    #[error("{what}: run_object{{{{{key}}}}} needs a run; it cannot be used here")]
    NoRun { what: String, key: String },
    #[error(
        "{what}: only global_secret{{{{…}}}} references can be used in a plugin's configuration"
    )]
    OnlyGlobalSecrets { what: String },
    #[error("{what}: {source}")]
    Secrets {
        what: String,
        source: crate::secrets::SecretError,
    },
    #[error("{what}: {object}: {source}")]
    Objects {
        what: String,
        object: String,
        source: crate::objects::ObjectError,
    },
}

/// Largest object interpolated into a variable.
const MAX_OBJECT_VARIABLE_BYTES: usize = 1 << 20;

/// What a value refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PipelineSecret,
    GlobalSecret,
    PipelineObject,
    RunObject,
}

/// `kind{{key}}` → (kind, key); anything else is literal.
fn parse(value: &str) -> Option<(Kind, &str)> {
    let value = value.trim();
    let (prefix, rest) = value.split_once("{{")?;
    let key = rest.strip_suffix("}}")?.trim();
    if key.is_empty() || key.contains("{{") || key.contains("}}") {
        return None;
    }
    let kind = match prefix.trim().to_ascii_lowercase().as_str() {
        "pipeline_secret" => Kind::PipelineSecret,
        "global_secret" => Kind::GlobalSecret,
        "pipeline_object" => Kind::PipelineObject,
        "run_object" => Kind::RunObject,
        _ => return None,
    };
    Some((kind, key))
}

/// Whether a value is a reference (`pipeline_secret{{key}}` and the like) rather than a literal.
pub fn is_reference(value: &str) -> bool {
    parse(value).is_some()
}

/// The kind of resource (`secrets`, `objects`) a reference reads, as roles name it; `None` for a
/// literal.
pub fn referenced_resource(value: &str) -> Option<&'static str> {
    parse(value).map(|(kind, _)| match kind {
        Kind::PipelineSecret | Kind::GlobalSecret => "secrets",
        Kind::PipelineObject | Kind::RunObject => "objects",
    })
}

/// Where values come from.
pub(super) struct Sources<'a> {
    pub storage: &'a Storage,
    pub secrets: &'a dyn SecretStore,
    pub objects: &'a dyn ObjectStore,
}

/// Where a value is used: a task of a run, or (no run) a subscription's settings.
pub(super) struct Scope<'a> {
    pub namespace: &'a str,
    pub pipeline: &'a str,
    pub run: Option<u64>,
}

/// Pairs with every reference replaced, and the values that came from secrets and objects.
#[derive(Default)]
pub(super) struct Resolved {
    pub pairs: Vec<(String, String)>,
    /// Secret values used: masked in whatever the task prints.
    pub secrets: Vec<String>,
    /// Object contents used: with the secrets, never echoed back to whoever set the references
    /// (a plugin's message about its settings).
    pub objects: Vec<String>,
}

impl Resolved {
    /// Masks for everything that came from a secret or an object.
    pub fn masks(&self) -> crate::masks::Masks {
        crate::masks::Masks::of(self.secrets.iter().chain(&self.objects).cloned())
    }
}

/// The attempt's environment (its variables and `GOFER_TASK_ATTEMPT`) with the references in it
/// replaced, where their source allows ([`crate::domain::interpolated`]: the config's and a
/// checked caller's; a trigger's and Gofer's own are literal). An error is the reason the task
/// cannot start, naming the variable and the key.
pub(super) async fn resolve(
    sources: &Sources<'_>,
    task: &TaskExecution,
) -> Result<Resolved, InterpolationError> {
    let scope = Scope {
        namespace: &task.namespace_id,
        pipeline: &task.pipeline_id,
        run: Some(task.run_id),
    };
    let mut variables: Vec<(String, String, bool)> = Vec::with_capacity(task.variables.len() + 1);
    for variable in &task.variables {
        let interpolated = crate::domain::interpolated(variable.source);
        variables.push((variable.key.clone(), variable.value.clone(), interpolated));
    }
    variables.push(("GOFER_TASK_ATTEMPT".into(), task.attempt.to_string(), false));
    resolve_values(sources, &scope, variables, "variable").await
}

/// Replaces the references in `pairs` (all of them: settings are the author's); `what` names
/// them in errors ("setting").
pub(super) async fn resolve_pairs(
    sources: &Sources<'_>,
    scope: &Scope<'_>,
    pairs: Vec<(String, String)>,
    what: &str,
) -> Result<Resolved, InterpolationError> {
    let mut values = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        values.push((name, value, true));
    }
    resolve_values(sources, scope, values, what).await
}

/// Replaces the references among `values` marked to be interpolated; the others pass as they
/// are.
async fn resolve_values(
    sources: &Sources<'_>,
    scope: &Scope<'_>,
    values: Vec<(String, String, bool)>,
    what: &str,
) -> Result<Resolved, InterpolationError> {
    let mut resolved = Resolved::default();
    for (name, value, interpolated) in values {
        let Some((kind, key)) = parse(&value).filter(|_| interpolated) else {
            resolved.pairs.push((name, value));
            continue;
        };
        let label = format!("{what} {name}");
        let value = match kind {
            Kind::PipelineSecret => {
                // The pipeline must have the secret now: a value left behind by a deleted
                // pipeline of the same id is never used.
                let (namespace, pipeline, lookup) = (
                    scope.namespace.to_string(),
                    scope.pipeline.to_string(),
                    key.to_string(),
                );
                let missing = || InterpolationError::NoPipelineSecret {
                    what: label.clone(),
                    key: key.to_string(),
                    pipeline: scope.pipeline.to_string(),
                };
                sources
                    .storage
                    .read(move |db| db.get_pipeline_secret(&namespace, &pipeline, &lookup))
                    .await
                    .map_err(|_| missing())?;
                let secret = sources
                    .secrets
                    .get(&SecretKey::Pipeline {
                        namespace: scope.namespace.to_string(),
                        pipeline: scope.pipeline.to_string(),
                        key: key.to_string(),
                    })
                    .await
                    .map_err(|source| InterpolationError::Secrets {
                        what: label.clone(),
                        source,
                    })?
                    .ok_or_else(missing)?;
                resolved.secrets.push(secret.clone());
                secret
            }
            Kind::GlobalSecret => {
                let secret = global_secret(sources, scope.namespace, &label, key).await?;
                resolved.secrets.push(secret.clone());
                secret
            }
            Kind::PipelineObject | Kind::RunObject => {
                let (object_key, object) = match (kind, scope.run) {
                    (Kind::PipelineObject, _) => (
                        ObjectKey::Pipeline {
                            namespace: scope.namespace.to_string(),
                            pipeline: scope.pipeline.to_string(),
                            key: key.to_string(),
                        },
                        format!("pipeline object '{key}'"),
                    ),
                    (_, Some(run)) => (
                        ObjectKey::Run {
                            namespace: scope.namespace.to_string(),
                            pipeline: scope.pipeline.to_string(),
                            run,
                            key: key.to_string(),
                        },
                        format!("run object '{key}' of run {run}"),
                    ),
                    (_, None) => {
                        return Err(InterpolationError::NoRun {
                            what: label,
                            key: key.to_string(),
                        });
                    }
                };
                let bytes = read_to_vec(sources.objects, &object_key, MAX_OBJECT_VARIABLE_BYTES)
                    .await
                    .map_err(|source| InterpolationError::Objects {
                        what: label.clone(),
                        object: object.clone(),
                        source,
                    })?
                    .ok_or_else(|| InterpolationError::NoObject {
                        what: label.clone(),
                        object: object.clone(),
                    })?;
                let contents = String::from_utf8_lossy(&bytes).into_owned();
                resolved.objects.push(contents.clone());
                contents
            }
        };
        resolved.pairs.push((name, value));
    }
    Ok(resolved)
}

/// The operator's configuration of a plugin with its `global_secret{{…}}` references filled in
/// (the operator's own configuration reaches every global secret; pipeline secrets and objects
/// mean nothing there).
pub(super) async fn resolve_operator(
    sources: &Sources<'_>,
    pairs: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, InterpolationError> {
    let mut resolved = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        let what = format!("plugin setting {name}");
        let value = match parse(&value) {
            None => value,
            Some((Kind::GlobalSecret, key)) => sources
                .secrets
                .get(&SecretKey::Global {
                    key: key.to_string(),
                })
                .await
                .map_err(|source| InterpolationError::Secrets {
                    what: what.clone(),
                    source,
                })?
                .ok_or_else(|| InterpolationError::GlobalSecretUnavailable {
                    what: what.clone(),
                    key: key.to_string(),
                    namespace: "(the operator's plugin configuration)".into(),
                })?,
            Some(_) => return Err(InterpolationError::OnlyGlobalSecrets { what }),
        };
        resolved.push((name, value));
    }
    Ok(resolved)
}

/// A global secret, if the run's namespace may use it.
async fn global_secret(
    sources: &Sources<'_>,
    namespace: &str,
    what: &str,
    key: &str,
) -> Result<String, InterpolationError> {
    let unavailable = || InterpolationError::GlobalSecretUnavailable {
        what: what.to_string(),
        key: key.to_string(),
        namespace: namespace.to_string(),
    };
    let lookup = key.to_string();
    let metadata = sources
        .storage
        .read(move |db| db.get_global_secret(&lookup))
        .await
        .map_err(|_| unavailable())?;
    let allowed = crate::secrets::namespace_patterns(&metadata.namespaces)
        .map(|patterns| patterns.iter().any(|pattern| pattern.is_match(namespace)))
        .unwrap_or(false);
    if !allowed {
        return Err(unavailable());
    }
    sources
        .secrets
        .get(&SecretKey::Global {
            key: key.to_string(),
        })
        .await
        .map_err(|source| InterpolationError::Secrets {
            what: what.to_string(),
            source,
        })?
        .ok_or_else(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_literals() {
        assert_eq!(
            parse("pipeline_secret{{token}}"),
            Some((Kind::PipelineSecret, "token"))
        );
        assert_eq!(
            parse("  GLOBAL_SECRET{{ shared }} "),
            Some((Kind::GlobalSecret, "shared"))
        );
        assert_eq!(parse("run_object{{a b}}"), Some((Kind::RunObject, "a b")));
        assert_eq!(
            parse("pipeline_object{{x}}"),
            Some((Kind::PipelineObject, "x"))
        );
        for literal in [
            "plain",
            "pipeline_secret{{}}",
            "pipeline_secret{{x}} trailing",
            "prefix pipeline_secret{{x}}",
            "other{{x}}",
            "pipeline_secret{x}",
        ] {
            assert_eq!(parse(literal), None, "{literal}");
        }
    }
}
