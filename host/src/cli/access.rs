//! `gofer token …` and `gofer role …`: API tokens and the roles that decide what they may do.

use clap::Subcommand;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};

use super::Session;
use super::client::field;
use crate::models::{Action, Permission, Role, Token};

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Create the first token (role `bootstrap`) of a server with authentication on; only once.
    Bootstrap,
    /// Create a token; its secret is printed once.
    Create {
        /// Who it is for.
        #[arg(long)]
        user: String,
        /// A role id (repeatable), e.g. `user`, `admin` or one of yours.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// How long it is valid, e.g. `30d`, `12h`; default: no expiry.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List tokens.
    List,
    /// Show one token.
    Get { id: String },
    /// Show the token in use.
    Whoami,
    /// Stop a token from working.
    Disable { id: String },
    /// Let a disabled token work again.
    Enable { id: String },
    /// Delete a token.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub(super) enum RoleCommand {
    /// List roles.
    List,
    /// Show a role's permissions.
    Get { id: String },
    /// Create a role: `gofer role create devops --permission 'read,write=namespaces:^devops-.* pipelines:.* runs'`.
    Create {
        id: String,
        #[arg(long, default_value = "")]
        description: String,
        /// `ACTIONS=RESOURCES`: actions (read, write, delete) separated by commas, resources by
        /// spaces (repeatable).
        #[arg(long = "permission", required = true, value_parser = parse_permission)]
        permissions: Vec<Permission>,
    },
    /// Delete a role (not a system role).
    Delete { id: String },
}

fn parse_permission(text: &str) -> Result<Permission, String> {
    let (actions, resources) = text.split_once('=').ok_or_else(|| {
        format!("'{text}' is not ACTIONS=RESOURCES, e.g. 'read=namespaces:default runs'")
    })?;
    let actions = actions
        .split(',')
        .map(|action| match action.trim() {
            "read" => Ok(Action::Read),
            "write" => Ok(Action::Write),
            "delete" => Ok(Action::Delete),
            other => Err(format!(
                "unknown action '{other}'; use read, write or delete"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let resources: Vec<String> = resources.split_whitespace().map(str::to_string).collect();
    if resources.is_empty() {
        return Err(format!("'{text}' names no resource"));
    }
    Ok(Permission { resources, actions })
}

fn tokens_table(tokens: &[Token]) -> String {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        "id", "user", "roles", "expires", "disabled", "created",
    ]);
    for token in tokens {
        table.add_row(vec![
            token.id.clone(),
            token.user.clone(),
            token.roles.join(", "),
            if token.expires == 0 {
                "never".to_string()
            } else {
                super::output::ago(token.expires)
            },
            token.disabled.to_string(),
            super::output::ago(token.created),
        ]);
    }
    table.to_string()
}

fn roles_table(roles: &[Role]) -> String {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        "id",
        "permissions",
        "system",
        "description",
    ]);
    for role in roles {
        let permissions: Vec<String> = role
            .permissions
            .iter()
            .map(|permission| {
                let actions: Vec<&str> = permission
                    .actions
                    .iter()
                    .map(|action| match action {
                        Action::Read => "read",
                        Action::Write => "write",
                        Action::Delete => "delete",
                    })
                    .collect();
                format!("{}={}", actions.join(","), permission.resources.join(" "))
            })
            .collect();
        table.add_row(vec![
            role.id.clone(),
            permissions.join("\n"),
            role.system_role.to_string(),
            role.description.clone(),
        ]);
    }
    table.to_string()
}

/// Prints a new token: its details and, once, its secret.
fn show_new_token(ctx: &Session, body: &Value) -> anyhow::Result<()> {
    ctx.show(body, |body| {
        let token: Token = field(body, "token_details")?;
        let secret: String = field(body, "secret")?;
        Ok(format!(
            "{}\nsecret: {secret}\n(shown only now; use it with --token or GOFER_TOKEN)",
            tokens_table(std::slice::from_ref(&token))
        ))
    })
}

pub(super) async fn token(ctx: &Session, command: TokenCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match command {
        TokenCommand::Bootstrap => {
            let body = client.post("/api/tokens/bootstrap", Value::Null).await?;
            show_new_token(ctx, &body)
        }
        TokenCommand::Create {
            user,
            roles,
            expires,
        } => {
            let body = client
                .post(
                    "/api/tokens",
                    json!({"user": user, "roles": roles, "expires": expires.map_or(0, |d| d.as_secs().max(1))}),
                )
                .await?;
            show_new_token(ctx, &body)
        }
        TokenCommand::List => {
            let body = client.get("/api/tokens").await?;
            ctx.show(&body, |body| {
                Ok(tokens_table(&field::<Vec<Token>>(body, "tokens")?))
            })
        }
        TokenCommand::Get { id } => {
            let body = client.get(&format!("/api/tokens/{id}")).await?;
            ctx.show(&body, |body| {
                Ok(tokens_table(&[field::<Token>(body, "token")?]))
            })
        }
        TokenCommand::Whoami => {
            let body = client.get("/api/tokens/whoami").await?;
            ctx.show(&body, |body| {
                Ok(tokens_table(&[field::<Token>(body, "token")?]))
            })
        }
        TokenCommand::Disable { id } => {
            let body = client
                .patch(&format!("/api/tokens/{id}"), json!({"disabled": true}))
                .await?;
            ctx.done(&body, format!("Disabled token {id}"))?;
            Ok(())
        }
        TokenCommand::Enable { id } => {
            let body = client
                .patch(&format!("/api/tokens/{id}"), json!({"disabled": false}))
                .await?;
            ctx.done(&body, format!("Enabled token {id}"))?;
            Ok(())
        }
        TokenCommand::Delete { id } => {
            let body = client.delete(&format!("/api/tokens/{id}")).await?;
            ctx.done(&body, format!("Deleted token {id}"))?;
            Ok(())
        }
    }
}

pub(super) async fn role(ctx: &Session, command: RoleCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match command {
        RoleCommand::List => {
            let body = client.get("/api/roles").await?;
            ctx.show(&body, |body| {
                Ok(roles_table(&field::<Vec<Role>>(body, "roles")?))
            })
        }
        RoleCommand::Get { id } => {
            let body = client.get(&format!("/api/roles/{id}")).await?;
            ctx.show(&body, |body| {
                Ok(roles_table(&[field::<Role>(body, "role")?]))
            })
        }
        RoleCommand::Create {
            id,
            description,
            permissions,
        } => {
            let body = client
                .post(
                    "/api/roles",
                    json!({"id": id, "description": description, "permissions": permissions}),
                )
                .await?;
            ctx.done(&body, format!("Created role '{id}'"))?;
            Ok(())
        }
        RoleCommand::Delete { id } => {
            let body = client.delete(&format!("/api/roles/{id}")).await?;
            ctx.done(&body, format!("Deleted role '{id}'"))?;
            Ok(())
        }
    }
}
