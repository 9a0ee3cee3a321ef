//! Authentication and authorization: token secrets and their hashes, the system roles, what
//! each API route requires (resources and an action, derived from its path template and method),
//! and whether a token's roles allow it.
//!
//! Pure decisions: must not do I/O or know HTTP beyond a method and a path; the API's middleware
//! looks tokens and roles up and turns a [`Denied`] into 401 or 403.

use std::collections::BTreeMap;

use sha2::Digest;

use crate::models::{Action, Permission, Role, Token};

/// Roles that may do anything (the bootstrap token's and administrators').
pub const ADMIN_ROLES: &[&str] = &["admin", "bootstrap"];

/// A new token secret: 32 random characters of `[A-Za-z0-9]`.
pub fn new_secret() -> String {
    use aes_gcm::aead::rand_core::RngCore;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = aes_gcm::aead::OsRng;
    (0..32)
        .map(|_| {
            // Rejection sampling keeps the characters uniform.
            loop {
                let byte = (rng.next_u32() & 0xff) as usize;
                if byte < 248 {
                    return ALPHABET[byte % ALPHABET.len()] as char;
                }
            }
        })
        .collect()
}

/// How a secret is stored and looked up: lowercase hex SHA-256 (secrets are random, so no salt is
/// needed).
pub fn hash_secret(secret: &str) -> String {
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The kinds of resource permissions name.
const RESOURCE_NAMES: &[&str] = &[
    "all",
    "configs",
    "deployments",
    "events",
    "extensions",
    "namespaces",
    "objects",
    "permissions",
    "pipelines",
    "plugins",
    "runs",
    "secrets",
    "subscriptions",
    "system",
    "task_executions",
    "tokens",
];

/// Resources that take a target (`namespaces:<regex>`).
const TARGETED: &[&str] = &["namespaces", "pipelines", "extensions", "plugins"];

/// Checks a permission's resource strings; the error says which one is wrong and why.
pub fn validate_resource(resource: &str) -> Result<(), String> {
    let (name, target) = match resource.split_once(':') {
        Some((name, target)) => (name, Some(target)),
        None => (resource, None),
    };
    if !RESOURCE_NAMES.contains(&name) {
        return Err(format!(
            "unknown resource '{resource}'; use one of {}",
            RESOURCE_NAMES.join(", ")
        ));
    }
    match target {
        Some(_) if !TARGETED.contains(&name) => Err(format!(
            "resource '{name}' takes no target (only {} do)",
            TARGETED.join(", ")
        )),
        Some(target) => full_match(target)
            .map(|_| ())
            .map_err(|error| format!("resource '{resource}': the target is not a regex: {error}")),
        None => Ok(()),
    }
}

/// A resource target as a regex matching whole ids. The pattern must parse on its own, so that it
/// cannot close the anchoring group (`team-a)|(-b` would otherwise match `team-b`). Compiled once
/// per pattern (compiling costs tens of microseconds; a filtered list checks every item), in a
/// small bounded cache.
pub fn full_match(pattern: &str) -> Result<regex::Regex, regex::Error> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    const MOST_PATTERNS: usize = 1024;
    static COMPILED: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let compiled = COMPILED.get_or_init(Default::default);
    if let Some(regex) = compiled
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(pattern)
    {
        return Ok(regex.clone());
    }
    regex::Regex::new(pattern)?;
    let regex = regex::Regex::new(&format!("^(?:{pattern})$"))?;
    let mut compiled = compiled
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if compiled.len() >= MOST_PATTERNS {
        compiled.clear();
    }
    compiled.insert(pattern.to_string(), regex.clone());
    Ok(regex)
}

/// One resource a route needs, e.g. `namespaces` with target `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    pub name: &'static str,
    pub target: Option<String>,
}

impl Needed {
    /// A resource with a target, e.g. `Needed::on("namespaces", "default")`.
    pub fn on(name: &'static str, target: &str) -> Self {
        Self {
            name,
            target: Some(target.to_string()),
        }
    }
}

impl std::fmt::Display for Needed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Some(target) => write!(f, "{}:{target}", self.name),
            None => f.write_str(self.name),
        }
    }
}

/// One thing a route needs: `action` on every one of `resources`, allowed by a single permission
/// of one role (so a permission's targets can never be combined with another's resources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub resources: Vec<Needed>,
    pub action: Action,
}

/// What a route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone, no token needed.
    Public,
    /// Any valid token.
    Authenticated,
    /// A token with an administrator role.
    Admin,
    /// Every grant, each allowed by one permission.
    Permissions(Vec<Grant>),
}

/// What a request with `method` to the route `template` requires, given the route's path
/// parameters as the handlers see them (percent-decoded), by name.
pub fn requirement(
    method: &str,
    template: &str,
    parameters: &BTreeMap<String, String>,
) -> Requirement {
    let action = match method {
        "GET" | "HEAD" | "OPTIONS" => Action::Read,
        "DELETE" => Action::Delete,
        _ => Action::Write,
    };
    let segments: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let under = |prefix: &[&str]| segments.starts_with(prefix);
    match () {
        _ if template == "/api/openapi.json"
            || template == "/api/system/metadata"
            || template == "/api/health"
            || template == "/api/ready"
            || template == "/api/tokens/bootstrap"
            || under(&["api", "external"]) =>
        {
            return Requirement::Public;
        }
        _ if template == "/api/tokens/whoami" => return Requirement::Authenticated,
        _ if template == "/api/system" || under(&["api", "secrets", "global"]) => {
            return Requirement::Admin;
        }
        _ if under(&["api", "tokens"]) && !(method == "GET" && parameters.contains_key("id")) => {
            return Requirement::Admin;
        }
        _ if under(&["api", "roles"]) && action != Action::Read => return Requirement::Admin,
        _ if under(&["api", "events"]) && action == Action::Delete => return Requirement::Admin,
        // A plugin serves every namespace: its log, and v0's extension management, are the
        // operator's.
        _ if under(&["api", "extensions"])
            && (segments.last() == Some(&"logs")
                || (action != Action::Read && segments.len() <= 3)) =>
        {
            return Requirement::Admin;
        }
        _ => {}
    }
    let mut resources = Vec::new();
    let mut add = |name: &'static str, target: Option<&String>| {
        if !resources.iter().any(|needed: &Needed| needed.name == name) {
            resources.push(Needed {
                name,
                target: target.cloned(),
            });
        }
    };
    for segment in &segments {
        match *segment {
            "namespaces" => add("namespaces", parameters.get("namespace_id")),
            "pipelines" => add("pipelines", parameters.get("pipeline_id")),
            "configs" => add("configs", None),
            "deployments" => add("deployments", None),
            "runs" => add("runs", None),
            "tasks" => add("task_executions", None),
            "objects" => add("objects", None),
            "secrets" => add("secrets", None),
            "subscriptions" => add("subscriptions", None),
            "events" => add("events", None),
            "roles" => add("permissions", None),
            "tokens" => add("tokens", None),
            "plugins" => add("plugins", parameters.get("name")),
            "extensions" => add("plugins", parameters.get("extension_id")),
            _ => {}
        }
    }
    if resources.is_empty() {
        return Requirement::Admin;
    }
    if matches!(segments.last(), Some(&"attach" | &"shell")) {
        // A shell in a running task, or in a failed task's kept filesystem: it sees the task's
        // environment, secret values included. So it needs writing the task and reading the
        // secrets.
        let scope: Vec<Needed> = resources
            .iter()
            .filter(|needed| matches!(needed.name, "namespaces" | "pipelines"))
            .cloned()
            .collect();
        let secrets = scope
            .into_iter()
            .chain([Needed {
                name: "secrets",
                target: None,
            }])
            .collect();
        return Requirement::Permissions(vec![
            Grant {
                resources,
                action: Action::Write,
            },
            Grant {
                resources: secrets,
                action: Action::Read,
            },
        ]);
    }
    Requirement::Permissions(vec![Grant { resources, action }])
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// 401: no usable token.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: a valid token without the permission.
    #[error("{0}")]
    Forbidden(String),
}

/// Whether a token holds an administrator role (and so sees and may do everything).
pub fn is_admin(token: &Token) -> bool {
    token
        .roles
        .iter()
        .any(|role| ADMIN_ROLES.contains(&role.as_str()))
}

/// Whether a valid token's roles let it read every one of `resources` (e.g. to decide which items
/// of a list it sees).
pub fn may_read(token: &Token, roles: &[Role], resources: Vec<Needed>) -> bool {
    let requirement = Requirement::Permissions(vec![Grant {
        resources,
        action: Action::Read,
    }]);
    authorize(token, roles, &requirement, 0).is_ok()
}

/// Whether a token may use a resource: a valid (known, enabled, unexpired) token whose roles
/// allow what the route requires.
pub fn authorize(
    token: &Token,
    roles: &[Role],
    requirement: &Requirement,
    now: u64,
) -> Result<(), Denied> {
    if token.disabled {
        return Err(Denied::Unauthenticated("the token is disabled".into()));
    }
    if token.expires != 0 && token.expires <= now {
        return Err(Denied::Unauthenticated("the token has expired".into()));
    }
    if is_admin(token) {
        return Ok(());
    }
    match requirement {
        Requirement::Public | Requirement::Authenticated => Ok(()),
        Requirement::Admin => Err(Denied::Forbidden(format!(
            "only administrators may do this; token '{}' ({}) has roles {:?}",
            token.id, token.user, token.roles
        ))),
        Requirement::Permissions(grants) => {
            for grant in grants {
                let allowed = roles.iter().any(|role| permits(role, grant));
                if !allowed {
                    let needed: Vec<String> =
                        grant.resources.iter().map(ToString::to_string).collect();
                    return Err(Denied::Forbidden(format!(
                        "token '{}' ({}) may not {} {}: none of its roles {:?} allows it",
                        token.id,
                        token.user,
                        action_word(grant.action),
                        needed.join(", "),
                        token.roles
                    )));
                }
            }
            Ok(())
        }
    }
}

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::Write => "write",
        Action::Delete => "delete",
    }
}

/// Whether one permission of `role` allows the whole grant: its action, and every resource.
fn permits(role: &Role, grant: &Grant) -> bool {
    role.permissions.iter().any(|permission| {
        permission.actions.contains(&grant.action)
            && grant.resources.iter().all(|needed| {
                permission
                    .resources
                    .iter()
                    .any(|resource| resource_matches(resource, needed))
            })
    })
}

fn resource_matches(resource: &str, needed: &Needed) -> bool {
    if resource == "all" {
        return true;
    }
    let (name, target) = match resource.split_once(':') {
        Some((name, target)) => (name, Some(target)),
        None => (resource, None),
    };
    // `extensions` is v0's name for plugins.
    let name = if name == "extensions" {
        "plugins"
    } else {
        name
    };
    if name != needed.name {
        return false;
    }
    match (&needed.target, target) {
        // Lists and creates carry no target: any permission of the kind will do.
        (None, _) | (Some(_), None) => true,
        (Some(wanted), Some(pattern)) => {
            full_match(pattern).is_ok_and(|regex| regex.is_match(wanted))
        }
    }
}

fn permission(resources: &[&str], actions: &[Action]) -> Permission {
    Permission {
        resources: resources.iter().map(ToString::to_string).collect(),
        actions: actions.to_vec(),
    }
}

/// Metadata keys that make a token a run's token (`inject_api_token`).
pub const RUN_NAMESPACE: &str = "run_namespace";
pub const RUN_PIPELINE: &str = "run_pipeline";
pub const RUN_ID: &str = "run_id";

/// Metadata keys that make a token a plugin's own token (v0 named plugins extensions).
pub const PLUGIN_ID: &str = "extension_id";
pub const PLUGIN_KIND: &str = "plugin_kind";

/// Metadata keys only Gofer sets (they give a token powers): refused in `POST /api/tokens`.
pub const RESERVED_METADATA: &[&str] = &[
    RUN_NAMESPACE,
    RUN_PIPELINE,
    RUN_ID,
    PLUGIN_ID,
    PLUGIN_KIND,
    "bootstrap_token",
];

/// What a plugin's own token may do (the identity a gRPC plugin calls the API with).
///
/// Every plugin: read, write and delete its own objects (`/api/extensions/{name}/objects`; v0's
/// extension role forgot `objects`), and read its own subscriptions. A trigger also: start and
/// read runs of any pipeline and read what it needs to decide (pipelines, configs, deployments,
/// events, subscriptions, task executions). Never secrets, tokens, roles or other plugins.
pub fn plugin_token_role(token: &Token) -> Option<Role> {
    let plugin = token.metadata.get(PLUGIN_ID)?;
    let own = format!("plugins:{}", regex::escape(plugin));
    let mut permissions = vec![
        permission(
            &[&own, "objects"],
            &[Action::Read, Action::Write, Action::Delete],
        ),
        permission(&[&own, "subscriptions"], &[Action::Read]),
    ];
    if token.metadata.get(PLUGIN_KIND).map(String::as_str) == Some("trigger") {
        permissions.push(permission(
            &["namespaces:.*", "pipelines:.*", "runs"],
            &[Action::Read, Action::Write],
        ));
        permissions.push(permission(
            &[
                "namespaces:.*",
                "pipelines:.*",
                "configs",
                "deployments",
                "events",
                "runs",
                "subscriptions",
                "task_executions",
            ],
            &[Action::Read],
        ));
    }
    Some(Role {
        id: format!("plugin_{plugin}"),
        description: format!("plugin {plugin}'s own token"),
        permissions,
        system_role: true,
    })
}

/// What a run's token may do: read and write its own pipeline's runs, tasks and objects, and
/// read its configs, deployments, events and subscriptions. Not secrets, not other pipelines.
pub fn run_token_role(token: &Token) -> Option<Role> {
    let namespace = token.metadata.get(RUN_NAMESPACE)?;
    let pipeline = token.metadata.get(RUN_PIPELINE)?;
    let own = [
        format!("namespaces:{}", regex::escape(namespace)),
        format!("pipelines:{}", regex::escape(pipeline)),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        own.iter()
            .cloned()
            .chain(extra.iter().map(ToString::to_string))
            .collect()
    };
    Some(Role {
        id: format!("run-token-{}", token.id),
        description: "a run's own token".into(),
        permissions: vec![
            Permission {
                resources: with(&["runs", "task_executions", "objects"]),
                actions: vec![Action::Read, Action::Write],
            },
            Permission {
                resources: with(&["configs", "deployments", "events", "subscriptions"]),
                actions: vec![Action::Read],
            },
        ],
        system_role: true,
    })
}

/// The built-in roles, created (and kept up to date) at every start.
pub fn system_roles() -> Vec<Role> {
    use Action::{Delete, Read, Write};
    let all = [Read, Write, Delete];
    vec![
        Role {
            id: "bootstrap".into(),
            description: "The first token's role: everything. Use it to create administrators.".into(),
            permissions: vec![permission(&["all"], &all)],
            system_role: true,
        },
        Role {
            id: "admin".into(),
            description: "Everything, including tokens, roles, global secrets and system settings.".into(),
            permissions: vec![permission(&["all"], &all)],
            system_role: true,
        },
        Role {
            id: "user".into(),
            description: "Pipelines, runs, tasks, objects, secrets and subscriptions in the default namespace; reading which plugins there are.".into(),
            permissions: vec![
                permission(
                    &[
                        "namespaces:default",
                        "pipelines:.*",
                        "configs",
                        "deployments",
                        "events",
                        "objects",
                        "runs",
                        "task_executions",
                        "secrets",
                        "subscriptions",
                    ],
                    &all,
                ),
                // Not plugins' own objects: they hold every namespace's subscriptions.
                permission(&["plugins", "subscriptions"], &[Read]),
            ],
            system_role: true,
        },
        Role {
            id: "anonymous".into(),
            description: "Read pipelines and runs in the default namespace.".into(),
            permissions: vec![permission(
                &["namespaces:default", "pipelines:.*", "runs"],
                &[Read],
            )],
            system_role: true,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requirement of a request to `path`, its parameters read by aligning it with `template`.
    pub(crate) fn route(method: &str, template: &str, path: &str) -> Requirement {
        let parameters = template
            .split('/')
            .zip(path.split('/'))
            .filter_map(|(pattern, value)| {
                let name = pattern.strip_prefix('{')?.strip_suffix('}')?;
                Some((name.to_string(), value.to_string()))
            })
            .collect();
        requirement(method, template, &parameters)
    }

    fn token(roles: &[&str]) -> Token {
        Token {
            id: "t1".into(),
            created: 0,
            metadata: Default::default(),
            expires: 0,
            disabled: false,
            user: "ops".into(),
            roles: roles.iter().map(ToString::to_string).collect(),
        }
    }

    fn devops() -> Role {
        Role {
            id: "devops".into(),
            description: String::new(),
            permissions: vec![permission(
                &["namespaces:^devops.*", "pipelines:.*", "runs"],
                &[Action::Read],
            )],
            system_role: false,
        }
    }

    #[test]
    fn routes_need_the_resources_in_their_path() {
        let pipelines = route(
            "GET",
            "/api/namespaces/{namespace_id}/pipelines",
            "/api/namespaces/devops-a/pipelines",
        );
        assert_eq!(
            pipelines,
            Requirement::Permissions(vec![Grant {
                resources: vec![
                    Needed {
                        name: "namespaces",
                        target: Some("devops-a".into())
                    },
                    Needed {
                        name: "pipelines",
                        target: None
                    },
                ],
                action: Action::Read
            }])
        );
        let logs = route(
            "GET",
            "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/tasks/{task_id}/logs",
            "/api/namespaces/a/pipelines/b/runs/1/tasks/c/logs",
        );
        let Requirement::Permissions(grants) = logs else {
            panic!("{logs:?}")
        };
        let names: Vec<String> = grants[0]
            .resources
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            ["namespaces:a", "pipelines:b", "runs", "task_executions"]
        );
        assert_eq!(
            route("POST", "/api/tokens/bootstrap", "/api/tokens/bootstrap"),
            Requirement::Public
        );
        assert_eq!(
            route("GET", "/api/tokens/whoami", "/api/tokens/whoami"),
            Requirement::Authenticated
        );
        assert_eq!(
            route("POST", "/api/tokens", "/api/tokens"),
            Requirement::Admin
        );
        assert_eq!(
            route("GET", "/api/secrets/global", "/api/secrets/global"),
            Requirement::Admin
        );
        assert!(matches!(
            route(
                "DELETE",
                "/api/namespaces/{namespace_id}",
                "/api/namespaces/x"
            ),
            Requirement::Permissions(grants) if grants[0].action == Action::Delete
        ));
    }

    #[test]
    fn one_permission_must_allow_a_whole_grant() {
        // Read/write on team-a with secrets, and read on team-b without: not team-b's secrets.
        let role = Role {
            id: "two".into(),
            description: String::new(),
            permissions: vec![
                permission(
                    &["namespaces:team-a", "pipelines:.*", "secrets", "runs"],
                    &[Action::Read, Action::Write],
                ),
                permission(
                    &["namespaces:team-b", "pipelines:.*", "runs"],
                    &[Action::Read],
                ),
            ],
            system_role: false,
        };
        let holder = token(&["two"]);
        let secret = |namespace: &str| {
            route(
                "GET",
                "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/secrets/{key}",
                &format!("/api/namespaces/{namespace}/pipelines/p/secrets/k"),
            )
        };
        let runs = route(
            "GET",
            "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs",
            "/api/namespaces/team-b/pipelines/p/runs",
        );
        let roles = std::slice::from_ref(&role);
        assert_eq!(authorize(&holder, roles, &secret("team-a"), 1), Ok(()));
        assert!(authorize(&holder, roles, &secret("team-b"), 1).is_err());
        assert_eq!(authorize(&holder, roles, &runs, 1), Ok(()));
    }

    #[test]
    fn attaching_or_a_shell_needs_writing_the_task_and_reading_secrets() {
        let attach = route(
            "GET",
            "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/tasks/{task_id}/attach",
            "/api/namespaces/a/pipelines/p/runs/1/tasks/t/attach",
        );
        let role = |resources: &[&str], actions: &[Action]| Role {
            id: "r".into(),
            description: String::new(),
            permissions: vec![permission(resources, actions)],
            system_role: false,
        };
        let holder = token(&["r"]);
        let tasks = ["namespaces:a", "pipelines:.*", "runs", "task_executions"];
        let reader = role(&tasks, &[Action::Read]);
        assert!(authorize(&holder, &[reader], &attach, 1).is_err());
        let writer = role(&tasks, &[Action::Read, Action::Write]);
        assert!(authorize(&holder, &[writer], &attach, 1).is_err());
        let everything = role(
            &[
                "namespaces:a",
                "pipelines:.*",
                "runs",
                "task_executions",
                "secrets",
            ],
            &[Action::Read, Action::Write],
        );
        assert_eq!(authorize(&holder, &[everything], &attach, 1), Ok(()));
        // A run's own token has no secrets, so it attaches to nothing.
        let mut run_token = token(&[]);
        run_token.metadata = [
            (RUN_NAMESPACE.to_string(), "a".to_string()),
            (RUN_PIPELINE.to_string(), "p".to_string()),
            (RUN_ID.to_string(), "1".to_string()),
        ]
        .into();
        let own = run_token_role(&run_token).unwrap();
        assert!(authorize(&run_token, std::slice::from_ref(&own), &attach, 1).is_err());
        // A shell in a kept failed task sees the same environment: the same rule.
        let shell = route(
            "GET",
            "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/tasks/{task_id}/shell",
            "/api/namespaces/a/pipelines/p/runs/1/tasks/t/shell",
        );
        assert!(
            authorize(
                &holder,
                &[role(&tasks, &[Action::Read, Action::Write])],
                &shell,
                1
            )
            .is_err()
        );
        assert!(authorize(&run_token, &[own], &shell, 1).is_err());
    }

    #[test]
    fn a_target_must_parse_on_its_own() {
        assert!(
            validate_resource("namespaces:team-a)|(-b")
                .unwrap_err()
                .contains("not a regex")
        );
        // Even when stored before the check existed, it matches nothing.
        let holder = token(&["r"]);
        let role = Role {
            id: "r".into(),
            description: String::new(),
            permissions: vec![permission(&["namespaces:team-a)|(-b"], &[Action::Read])],
            system_role: false,
        };
        let read = route(
            "GET",
            "/api/namespaces/{namespace_id}",
            "/api/namespaces/team-b",
        );
        assert!(authorize(&holder, &[role], &read, 1).is_err());
    }

    #[test]
    fn anchored_targets_and_one_role_for_everything() {
        let role = devops();
        let needs = |namespace: &str| {
            route(
                "GET",
                "/api/namespaces/{namespace_id}/pipelines",
                &format!("/api/namespaces/{namespace}/pipelines"),
            )
        };
        let holder = token(&["devops"]);
        for allowed in ["devops-a", "devops-b"] {
            assert_eq!(
                authorize(&holder, std::slice::from_ref(&role), &needs(allowed), 1),
                Ok(())
            );
        }
        for refused in ["default", "my-devops"] {
            let denied =
                authorize(&holder, std::slice::from_ref(&role), &needs(refused), 1).unwrap_err();
            assert!(matches!(denied, Denied::Forbidden(_)), "{denied:?}");
        }
        // Reading is not writing.
        let write = route(
            "POST",
            "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs",
            "/api/namespaces/devops-a/pipelines/p/runs",
        );
        assert!(authorize(&holder, std::slice::from_ref(&role), &write, 1).is_err());
        // Admin roles pass everything; disabled and expired tokens nothing.
        assert_eq!(
            authorize(&token(&["admin"]), &[], &Requirement::Admin, 1),
            Ok(())
        );
        let mut disabled = token(&["admin"]);
        disabled.disabled = true;
        assert!(matches!(
            authorize(&disabled, &[], &Requirement::Authenticated, 1),
            Err(Denied::Unauthenticated(_))
        ));
        let mut expired = token(&["admin"]);
        expired.expires = 10;
        assert!(matches!(
            authorize(&expired, &[], &Requirement::Authenticated, 11),
            Err(Denied::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_plugin_token_reaches_its_own_objects_only() {
        let mut holder = token(&[]);
        holder.metadata = [
            (PLUGIN_ID.to_string(), "go-echo".to_string()),
            (PLUGIN_KIND.to_string(), "task".to_string()),
        ]
        .into();
        let role = plugin_token_role(&holder).expect("a plugin token");
        let objects = |plugin: &str, method: &str| {
            route(
                method,
                "/api/extensions/{extension_id}/objects/{key}",
                &format!("/api/extensions/{plugin}/objects/k"),
            )
        };
        for method in ["GET", "POST", "DELETE"] {
            assert_eq!(
                authorize(
                    &holder,
                    std::slice::from_ref(&role),
                    &objects("go-echo", method),
                    1
                ),
                Ok(())
            );
        }
        // Not another plugin's objects (the target is anchored: no prefix matches), no secrets,
        // and a task plugin starts no runs.
        for other in ["go-ticker", "go-echo2", "go"] {
            assert!(
                authorize(
                    &holder,
                    std::slice::from_ref(&role),
                    &objects(other, "GET"),
                    1
                )
                .is_err()
            );
        }
        let secrets = route(
            "GET",
            "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/secrets",
            "/api/namespaces/default/pipelines/p/secrets",
        );
        let start_run = route(
            "POST",
            "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs",
            "/api/namespaces/default/pipelines/p/runs",
        );
        assert!(authorize(&holder, std::slice::from_ref(&role), &secrets, 1).is_err());
        assert!(authorize(&holder, std::slice::from_ref(&role), &start_run, 1).is_err());
        // A trigger starts runs anywhere, still without secrets.
        holder
            .metadata
            .insert(PLUGIN_KIND.to_string(), "trigger".to_string());
        let role = plugin_token_role(&holder).expect("a plugin token");
        assert_eq!(
            authorize(&holder, std::slice::from_ref(&role), &start_run, 1),
            Ok(())
        );
        assert!(authorize(&holder, std::slice::from_ref(&role), &secrets, 1).is_err());
        assert!(plugin_token_role(&token(&[])).is_none());
    }

    #[test]
    fn resources_are_checked_and_secrets_are_random() {
        assert!(validate_resource("namespaces:^devops.*").is_ok());
        assert!(validate_resource("all").is_ok());
        assert!(
            validate_resource("namespace")
                .unwrap_err()
                .contains("unknown resource")
        );
        assert!(
            validate_resource("runs:x")
                .unwrap_err()
                .contains("takes no target")
        );
        assert!(
            validate_resource("pipelines:(")
                .unwrap_err()
                .contains("not a regex")
        );
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(hash_secret("x").len(), 64);
    }
}
