//! Tokens (`/api/tokens`), roles (`/api/roles`) and the middleware that authenticates every
//! request and checks its token's roles against what the route needs (`crate::auth`). Must not
//! hold SQL (storage) or the permission rules themselves (`crate::auth`).

use std::collections::BTreeMap;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, AppState, PageQuery};
use crate::auth::{self, Denied, Requirement};
use crate::domain::Actor;
use crate::models::{Action, Permission, Role, Token, now_millis};
use crate::pipeline_config::validate_identifier;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(create_bootstrap_token))
        .routes(routes!(whoami))
        .routes(routes!(get_token_by_id, update_token, delete_token))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(get_role, update_role, delete_role))
}

/// Who is calling: the token of the request (none in development mode or on public routes) and
/// its roles.
#[derive(Debug, Clone)]
pub struct Identity {
    pub token: Option<Token>,
    roles: Vec<Role>,
}

impl Identity {
    /// Whether the caller sees only part of what lists hold: a token without an administrator
    /// role (in development mode, or for administrators, lists are whole).
    pub fn is_restricted(&self) -> bool {
        self.token
            .as_ref()
            .is_some_and(|token| !auth::is_admin(token))
    }

    /// Whether the caller may read every one of `resources`.
    pub fn may_read(&self, resources: Vec<auth::Needed>) -> bool {
        match &self.token {
            None => true,
            Some(token) => auth::may_read(token, &self.roles, resources),
        }
    }

    /// 403 unless the caller may do `action` on every one of `resources` (one permission
    /// allowing all), for what the route's path cannot say (an id in the body).
    pub fn require(&self, resources: Vec<auth::Needed>, action: Action) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let requirement = Requirement::Permissions(vec![auth::Grant { resources, action }]);
        match auth::authorize(token, &self.roles, &requirement, now_millis()) {
            Ok(()) => Ok(()),
            Err(Denied::Unauthenticated(message) | Denied::Forbidden(message)) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, message))
            }
        }
    }
}

impl crate::app::Caller for Identity {
    fn actor(&self) -> Actor {
        match &self.token {
            None => Actor::Anonymous,
            Some(token) => Actor::Token {
                id: token.id.clone(),
                user: token.user.clone(),
            },
        }
    }

    fn may(&self, resources: Vec<auth::Needed>, action: Action) -> bool {
        self.require(resources, action).is_ok()
    }
}

/// The route's path parameters, percent-decoded, by name. Refused: a parameter that is not UTF-8
/// once decoded, or that holds a control character (no id has one; in a log line it could forge
/// another line).
fn path_parameters(
    parameters: Result<RawPathParams, RawPathParamsRejection>,
) -> Result<BTreeMap<String, String>, String> {
    let parameters = parameters.map_err(|rejection| rejection.body_text())?;
    let mut decoded = BTreeMap::new();
    for (name, value) in &parameters {
        if value.chars().any(char::is_control) {
            return Err(format!(
                "path parameter '{name}' holds a control character: {value:?}"
            ));
        }
        decoded.insert(name.to_string(), value.to_string());
    }
    Ok(decoded)
}

fn unauthorized(message: impl Into<String>) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, message).into_response()
}

/// Authenticates the request (unless the route is public or development mode is on) and checks
/// that the token may do what the route does: 401 without a usable token, 403 without the
/// permission.
pub(super) async fn authenticate(
    State(state): State<ApiState>,
    matched: Option<MatchedPath>,
    parameters: Result<RawPathParams, RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let template = matched.map_or_else(
        || request.uri().path().to_string(),
        |matched| matched.as_str().to_string(),
    );
    // Decided on the ids as the handlers see them (percent-decoded), never on the raw path.
    let parameters = match path_parameters(parameters) {
        Ok(parameters) => parameters,
        Err(message) => return ApiError::bad_request(message).into_response(),
    };
    let requirement = auth::requirement(request.method().as_str(), &template, &parameters);
    if state.config.development.bypass_auth || requirement == Requirement::Public {
        request.extensions_mut().insert(Identity {
            token: None,
            roles: Vec::new(),
        });
        return next.run(request).await;
    }
    // A browser's websocket carries its token as a subprotocol: it cannot set headers.
    let from_protocol = super::websocket_protocols(request.headers())
        .find_map(|protocol| protocol.strip_prefix(super::WEBSOCKET_TOKEN_PREFIX))
        .filter(|secret| !secret.is_empty())
        .map(str::to_string);
    let secret = match (request.headers().get(header::AUTHORIZATION), from_protocol) {
        (Some(header), _) => {
            let Some(secret) = header
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|secret| !secret.is_empty())
            else {
                return unauthorized("the Authorization header must be `Bearer <token>`");
            };
            secret.to_string()
        }
        (None, Some(secret)) => secret,
        (None, None) => {
            return unauthorized(
                "this server needs a token: send `Authorization: Bearer <token>` (the CLI: --token or GOFER_TOKEN)",
            );
        }
    };
    let hash = auth::hash_secret(&secret);
    // One read for the token and its roles (unknown role ids are skipped).
    let found = state
        .read(move |db| {
            let Some(token) = db.token_by_hash(&hash)? else {
                return Ok(None);
            };
            let roles: Vec<Role> = token
                .roles
                .iter()
                .filter_map(|id| db.get_role(id).ok())
                .collect();
            Ok(Some((token, roles)))
        })
        .await;
    let (token, mut roles) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return unauthorized("unknown token"),
        Err(error) => return error.into_response(),
    };
    roles.extend(auth::run_token_role(&token));
    roles.extend(auth::plugin_token_role(&token));
    match auth::authorize(&token, &roles, &requirement, now_millis()) {
        Ok(()) => {}
        Err(Denied::Unauthenticated(message)) => return unauthorized(message),
        Err(Denied::Forbidden(message)) => {
            return ApiError::new(StatusCode::FORBIDDEN, message).into_response();
        }
    }
    request.extensions_mut().insert(Identity {
        token: Some(token),
        roles,
    });
    next.run(request).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListTokensResponse {
    pub tokens: Vec<Token>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetTokenByIdResponse)]
pub struct TokenResponse {
    pub token: Token,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = CreateTokenResponse)]
pub struct NewTokenResponse {
    pub token_details: Token,
    /// The token itself: shown only now (only its hash is stored).
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Who the token is for.
    pub user: String,
    /// Role ids (see `/api/roles`).
    pub roles: Vec<String>,
    /// Seconds until it expires; 0: never.
    #[serde(default)]
    pub expires: u64,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTokenRequest {
    pub disabled: Option<bool>,
}

/// Creates a token: a random secret, stored as its hash.
async fn issue(
    state: &ApiState,
    token: Token,
    bootstrap: bool,
) -> Result<NewTokenResponse, ApiError> {
    let secret = auth::new_secret();
    let hash = auth::hash_secret(&secret);
    let stored = token.clone();
    state
        .write(move |db| {
            if bootstrap {
                db.insert_bootstrap_token(&stored, &hash)
            } else {
                db.insert_token(&stored, &hash)
            }
        })
        .await?;
    Ok(NewTokenResponse {
        token_details: token,
        secret,
    })
}

/// List tokens (never their secrets).
#[utoipa::path(get, path = "/api/tokens", tag = "Tokens", operation_id = "list_tokens",
    params(PageQuery),
    responses((status = 200, body = ListTokensResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_tokens(
    state: AppState,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListTokensResponse>, ApiError> {
    let page = state.page(&query)?;
    let tokens = state.read(move |db| db.list_tokens(page)).await?;
    Ok(ApiJson(ListTokensResponse { tokens }))
}

/// Create a token for a user with roles; its secret is in the answer, once.
#[utoipa::path(post, path = "/api/tokens", tag = "Tokens", operation_id = "create_token",
    request_body = CreateTokenRequest,
    responses((status = 201, body = NewTokenResponse), (status = "4XX", body = super::ErrorBody)))]
async fn create_token(
    state: AppState,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, ApiJson<NewTokenResponse>), ApiError> {
    if request.user.trim().is_empty() {
        return Err(ApiError::bad_request(
            "user is empty: say who the token is for",
        ));
    }
    if request.roles.iter().any(|role| role == "bootstrap") {
        return Err(ApiError::bad_request(
            "the bootstrap role belongs to the bootstrap token only; use admin",
        ));
    }
    if let Some(key) = request
        .metadata
        .keys()
        .find(|key| auth::RESERVED_METADATA.contains(&key.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "metadata key '{key}' is reserved for tokens Gofer makes itself (runs' and plugins' tokens)"
        )));
    }
    let roles = request.roles.clone();
    state
        .read(move |db| {
            for role in &roles {
                db.get_role(role)?;
            }
            Ok(())
        })
        .await?;
    let now = now_millis();
    let token = Token {
        id: uuid::Uuid::now_v7().to_string(),
        created: now,
        metadata: request.metadata,
        expires: match request.expires {
            0 => 0,
            seconds => now.saturating_add(seconds.saturating_mul(1000)),
        },
        disabled: false,
        user: request.user,
        roles: request.roles,
    };
    Ok((
        StatusCode::CREATED,
        ApiJson(issue(&state, token, false).await?),
    ))
}

/// Create the first token (role `bootstrap`); only once (409 afterwards).
#[utoipa::path(post, path = "/api/tokens/bootstrap", tag = "Tokens", operation_id = "create_bootstrap_token",
    responses((status = 201, body = NewTokenResponse), (status = "4XX", body = super::ErrorBody)))]
async fn create_bootstrap_token(
    state: AppState,
) -> Result<(StatusCode, ApiJson<NewTokenResponse>), ApiError> {
    let token = Token {
        id: uuid::Uuid::now_v7().to_string(),
        created: now_millis(),
        metadata: [("bootstrap_token".to_string(), "true".to_string())].into(),
        expires: 0,
        disabled: false,
        user: "bootstrap".into(),
        roles: vec!["bootstrap".into()],
    };
    Ok((
        StatusCode::CREATED,
        ApiJson(issue(&state, token, true).await?),
    ))
}

/// The caller's own token.
#[utoipa::path(get, path = "/api/tokens/whoami", tag = "Tokens", operation_id = "whoami",
    responses((status = 200, body = TokenResponse), (status = "4XX", body = super::ErrorBody)))]
async fn whoami(
    axum::Extension(identity): axum::Extension<Identity>,
) -> Result<ApiJson<TokenResponse>, ApiError> {
    let token = identity.token.ok_or_else(|| {
        ApiError::not_found(
            "no token in use: the server is in development mode (everyone is an administrator)",
        )
    })?;
    Ok(ApiJson(TokenResponse { token }))
}

/// Get a token (not its secret).
#[utoipa::path(get, path = "/api/tokens/{id}", tag = "Tokens", operation_id = "get_token_by_id",
    params(("id" = String, Path)),
    responses((status = 200, body = TokenResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_token_by_id(
    state: AppState,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<TokenResponse>, ApiError> {
    let token = state.read(move |db| db.get_token(&id)).await?;
    Ok(ApiJson(TokenResponse { token }))
}

/// Disable or enable a token (not your own).
#[utoipa::path(patch, path = "/api/tokens/{id}", tag = "Tokens", operation_id = "update_token",
    params(("id" = String, Path)),
    request_body = UpdateTokenRequest,
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn update_token(
    state: AppState,
    axum::Extension(identity): axum::Extension<Identity>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateTokenRequest>,
) -> Result<StatusCode, ApiError> {
    let disabled = request.disabled.ok_or_else(|| {
        ApiError::bad_request("nothing to update: give \"disabled\": true or false")
    })?;
    if identity.token.is_some_and(|token| token.id == id) {
        return Err(ApiError::conflict(
            "a token cannot disable or enable itself",
        ));
    }
    state
        .write(move |db| db.set_token_disabled(&id, disabled))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a token.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "Tokens", operation_id = "delete_token",
    params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_token(
    state: AppState,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.write(move |db| db.delete_token(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListRolesResponse {
    pub roles: Vec<Role>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetRoleResponse)]
pub struct RoleResponse {
    pub role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    /// 3-32 characters of `[a-zA-Z0-9-]`.
    pub id: String,
    pub description: String,
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoleRequest {
    pub description: Option<String>,
    pub permissions: Option<Vec<Permission>>,
}

fn validate_permissions(permissions: &[Permission]) -> Result<(), ApiError> {
    for permission in permissions {
        if permission.resources.is_empty() || permission.actions.is_empty() {
            return Err(ApiError::bad_request(
                "a permission needs at least one resource and one action",
            ));
        }
        for resource in &permission.resources {
            auth::validate_resource(resource).map_err(ApiError::bad_request)?;
        }
    }
    Ok(())
}

/// List roles.
#[utoipa::path(get, path = "/api/roles", tag = "Permissions", operation_id = "list_roles",
    params(PageQuery),
    responses((status = 200, body = ListRolesResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_roles(
    state: AppState,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<ListRolesResponse>, ApiError> {
    let page = state.page(&query)?;
    let roles = state.read(move |db| db.list_roles(page)).await?;
    Ok(ApiJson(ListRolesResponse { roles }))
}

/// Create a role.
#[utoipa::path(post, path = "/api/roles", tag = "Permissions", operation_id = "create_role",
    request_body = CreateRoleRequest,
    responses((status = 201, body = RoleResponse), (status = "4XX", body = super::ErrorBody)))]
async fn create_role(
    state: AppState,
    ApiJson(request): ApiJson<CreateRoleRequest>,
) -> Result<(StatusCode, ApiJson<RoleResponse>), ApiError> {
    validate_identifier("role id", &request.id)?;
    validate_permissions(&request.permissions)?;
    let role = Role {
        id: request.id,
        description: request.description,
        permissions: request.permissions,
        system_role: false,
    };
    let stored = role.clone();
    state.write(move |db| db.put_role(&stored, false)).await?;
    Ok((StatusCode::CREATED, ApiJson(RoleResponse { role })))
}

/// Get a role.
#[utoipa::path(get, path = "/api/roles/{role_id}", tag = "Permissions", operation_id = "get_role",
    params(("role_id" = String, Path)),
    responses((status = 200, body = RoleResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_role(
    state: AppState,
    ApiPath(role_id): ApiPath<String>,
) -> Result<ApiJson<RoleResponse>, ApiError> {
    let role = state.read(move |db| db.get_role(&role_id)).await?;
    Ok(ApiJson(RoleResponse { role }))
}

/// System roles cannot be changed or deleted: 403, as in v0.
async fn refuse_system_role(state: &ApiState, role_id: &str) -> Result<(), ApiError> {
    let id = role_id.to_string();
    let role = state.read(move |db| db.get_role(&id)).await?;
    if role.system_role {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("role '{role_id}' is a system role; it cannot be changed or deleted"),
        ));
    }
    Ok(())
}

/// Change a role's description or permissions (not a system role's).
#[utoipa::path(patch, path = "/api/roles/{role_id}", tag = "Permissions", operation_id = "update_role",
    params(("role_id" = String, Path)),
    request_body = UpdateRoleRequest,
    responses((status = 200, body = RoleResponse), (status = "4XX", body = super::ErrorBody)))]
async fn update_role(
    state: AppState,
    ApiPath(role_id): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateRoleRequest>,
) -> Result<ApiJson<RoleResponse>, ApiError> {
    if let Some(permissions) = &request.permissions {
        validate_permissions(permissions)?;
    }
    refuse_system_role(&state, &role_id).await?;
    let role = state
        .write(move |db| {
            let mut role = db.get_role(&role_id)?;
            if let Some(description) = request.description {
                role.description = description;
            }
            if let Some(permissions) = request.permissions {
                role.permissions = permissions;
            }
            db.put_role(&role, true)?;
            Ok(role)
        })
        .await?;
    Ok(ApiJson(RoleResponse { role }))
}

/// Delete a role (not a system role).
#[utoipa::path(delete, path = "/api/roles/{role_id}", tag = "Permissions", operation_id = "delete_role",
    params(("role_id" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_role(
    state: AppState,
    ApiPath(role_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    refuse_system_role(&state, &role_id).await?;
    state.write(move |db| db.delete_role(&role_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use crate::auth::{Requirement, requirement};

    fn parameters(template: &str) -> std::collections::BTreeMap<String, String> {
        template
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| (name.to_string(), name.to_string()))
            .collect()
    }

    /// Every route of the API needs a token except the few public ones, and each maps to a
    /// requirement on purpose (an unknown route falls back to administrators only).
    #[test]
    fn every_route_is_guarded() {
        let document: serde_json::Value =
            serde_json::from_str(&super::super::openapi_json()).unwrap();
        let public = [
            "/api/openapi.json",
            "/api/system/metadata",
            "/api/tokens/bootstrap",
            "/api/health",
            "/api/ready",
        ];
        let mut seen = 0;
        for (template, operations) in document["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                let needed = requirement(&method.to_uppercase(), template, &parameters(template));
                let expected_public =
                    public.contains(&template.as_str()) || template.starts_with("/api/external/");
                assert_eq!(
                    needed == Requirement::Public,
                    expected_public,
                    "{method} {template}: {needed:?}"
                );
                seen += 1;
            }
        }
        assert!(seen > 60, "{seen}");
    }
}
