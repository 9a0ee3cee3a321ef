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

/// Where values come from.
pub(super) struct Sources<'a> {
    pub storage: &'a Storage,
    pub secrets: &'a dyn SecretStore,
    pub objects: &'a dyn ObjectStore,
}

/// The environment with every reference replaced, and the secret values used (to mask in logs).
/// An error is the reason the task cannot start, naming the variable and the key.
pub(super) async fn resolve(
    sources: &Sources<'_>,
    task: &TaskExecution,
    env: Vec<(String, String)>,
) -> Result<(Vec<(String, String)>, Vec<String>), String> {
    let mut resolved = Vec::with_capacity(env.len());
    let mut secrets = Vec::new();
    for (name, value) in env {
        let Some((kind, key)) = parse(&value) else {
            resolved.push((name, value));
            continue;
        };
        let value = match kind {
            Kind::PipelineSecret => {
                let secret = sources
                    .secrets
                    .get(&SecretKey::Pipeline {
                        namespace: task.namespace_id.clone(),
                        pipeline: task.pipeline_id.clone(),
                        key: key.to_string(),
                    })
                    .await
                    .map_err(|error| format!("variable {name}: {error}"))?
                    .ok_or_else(|| {
                        format!(
                            "variable {name}: pipeline secret '{key}' does not exist in pipeline '{}'",
                            task.pipeline_id
                        )
                    })?;
                secrets.push(secret.clone());
                secret
            }
            Kind::GlobalSecret => {
                let secret = global_secret(sources, task, &name, key).await?;
                secrets.push(secret.clone());
                secret
            }
            Kind::PipelineObject | Kind::RunObject => {
                let object_key = match kind {
                    Kind::PipelineObject => ObjectKey::Pipeline {
                        namespace: task.namespace_id.clone(),
                        pipeline: task.pipeline_id.clone(),
                        key: key.to_string(),
                    },
                    _ => ObjectKey::Run {
                        namespace: task.namespace_id.clone(),
                        pipeline: task.pipeline_id.clone(),
                        run: task.run_id,
                        key: key.to_string(),
                    },
                };
                let what = if kind == Kind::PipelineObject {
                    format!("pipeline object '{key}'")
                } else {
                    format!("run object '{key}' of run {}", task.run_id)
                };
                let bytes = read_to_vec(sources.objects, &object_key, MAX_OBJECT_VARIABLE_BYTES)
                    .await
                    .map_err(|error| format!("variable {name}: {what}: {error}"))?
                    .ok_or_else(|| format!("variable {name}: {what} does not exist"))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        resolved.push((name, value));
    }
    Ok((resolved, secrets))
}

/// A global secret, if the run's namespace may use it.
async fn global_secret(
    sources: &Sources<'_>,
    task: &TaskExecution,
    name: &str,
    key: &str,
) -> Result<String, String> {
    let lookup = key.to_string();
    let metadata = sources
        .storage
        .read(move |db| db.get_global_secret(&lookup))
        .await
        .map_err(|_| format!("variable {name}: global secret '{key}' does not exist"))?;
    let allowed = crate::secrets::namespace_patterns(&metadata.namespaces)
        .map(|patterns| {
            patterns
                .iter()
                .any(|pattern| pattern.is_match(&task.namespace_id))
        })
        .unwrap_or(false);
    if !allowed {
        return Err(format!(
            "variable {name}: global secret '{key}' may not be used in namespace '{}' (it is limited to {:?})",
            task.namespace_id, metadata.namespaces
        ));
    }
    sources
        .secrets
        .get(&SecretKey::Global {
            key: key.to_string(),
        })
        .await
        .map_err(|error| format!("variable {name}: {error}"))?
        .ok_or_else(|| format!("variable {name}: global secret '{key}' has no value"))
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
