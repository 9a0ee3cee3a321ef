//! SQL for tokens (stored by the SHA-256 of their secret, never the secret) and roles.

use rusqlite::{OptionalExtension, Row, params};

use super::queries::{from_json, to_json};
use super::{Db, Page, Result, StorageError};
use crate::models::{Role, Token};

const TOKEN_COLUMNS: &str = "id, created, metadata, expires, disabled, user, roles";

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<(Token, String, String)> {
    Ok((
        Token {
            id: row.get(0)?,
            created: row.get(1)?,
            metadata: Default::default(),
            expires: row.get(3)?,
            disabled: row.get(4)?,
            user: row.get(5)?,
            roles: Vec::new(),
        },
        row.get(2)?,
        row.get(6)?,
    ))
}

fn decode_token((mut token, metadata, roles): (Token, String, String)) -> Result<Token> {
    token.metadata = from_json("tokens.metadata", &metadata)?;
    token.roles = from_json("tokens.roles", &roles)?;
    Ok(token)
}

impl Db<'_> {
    pub fn insert_token(&self, token: &Token, hash: &str) -> Result<()> {
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO tokens ({TOKEN_COLUMNS}, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                token.id,
                token.created,
                to_json(&token.metadata),
                token.expires,
                token.disabled,
                token.user,
                to_json(&token.roles),
                hash
            ])?;
        Ok(())
    }

    /// The token whose secret hashes to `hash`, if any.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<Token>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"
            ))?
            .query_row(params![hash], token_from_row)
            .optional()?
            .map(decode_token)
            .transpose()
    }

    pub fn get_token(&self, id: &str) -> Result<Token> {
        self.conn
            .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"))?
            .query_row(params![id], token_from_row)
            .optional()?
            .map(decode_token)
            .transpose()?
            .ok_or_else(|| StorageError::NotFound(format!("token '{id}'")))
    }

    pub fn list_tokens(&self, page: Page) -> Result<Vec<Token>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id LIMIT ?1 OFFSET ?2"
        ))?;
        let rows = statement.query_map(params![page.limit, page.offset], token_from_row)?;
        rows.map(|row| decode_token(row?)).collect()
    }

    pub fn set_token_disabled(&self, id: &str, disabled: bool) -> Result<()> {
        self.get_token(id)?;
        self.conn
            .prepare_cached("UPDATE tokens SET disabled = ?2 WHERE id = ?1")?
            .execute(params![id, disabled])?;
        Ok(())
    }

    pub fn delete_token(&self, id: &str) -> Result<()> {
        self.get_token(id)?;
        self.conn
            .prepare_cached("DELETE FROM tokens WHERE id = ?1")?
            .execute(params![id])?;
        Ok(())
    }

    /// Stores the bootstrap token, once: a second call is a conflict.
    pub fn insert_bootstrap_token(&self, token: &Token, hash: &str) -> Result<()> {
        if self.get_system()?.bootstrap_token_created {
            return Err(StorageError::Conflict(
                "the bootstrap token was already created; ask its holder for a token".into(),
            ));
        }
        self.insert_token(token, hash)?;
        self.conn
            .prepare_cached("UPDATE system SET bootstrap_token_created = 1 WHERE id = 1")?
            .execute([])?;
        Ok(())
    }

    /// Deletes the tokens made for a run (`inject_api_token`); returns how many.
    pub fn delete_run_tokens(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        run_id: u64,
    ) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM tokens WHERE json_extract(metadata, '$.run_namespace') = ?1
                 AND json_extract(metadata, '$.run_pipeline') = ?2
                 AND json_extract(metadata, '$.run_id') = ?3",
            )?
            .execute(params![namespace_id, pipeline_id, run_id.to_string()])?)
    }

    /// Deletes the tokens made for any run of a pipeline; returns how many.
    pub fn delete_pipeline_run_tokens(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
    ) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM tokens WHERE json_extract(metadata, '$.run_namespace') = ?1
                 AND json_extract(metadata, '$.run_pipeline') = ?2",
            )?
            .execute(params![namespace_id, pipeline_id])?)
    }

    /// Stores a plugin's new token in place of its earlier ones (of an earlier process).
    pub fn replace_plugin_token(&self, plugin: &str, token: &Token, hash: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "DELETE FROM tokens WHERE json_extract(metadata, '$.extension_id') = ?1",
            )?
            .execute(params![plugin])?;
        self.insert_token(token, hash)
    }

    /// Deletes every plugin token (at start-up: the processes that held them are gone).
    pub fn delete_plugin_tokens(&self) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM tokens WHERE json_extract(metadata, '$.extension_id') IS NOT NULL",
            )?
            .execute([])?)
    }

    pub fn list_roles(&self, page: Page) -> Result<Vec<Role>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, description, permissions, system_role FROM roles ORDER BY id LIMIT ?1 OFFSET ?2",
        )?;
        let rows = statement.query_map(params![page.limit, page.offset], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get::<_, String>(2)?,
                row.get(3)?,
            ))
        })?;
        rows.map(|row| {
            let (id, description, permissions, system_role) = row?;
            Ok(Role {
                id,
                description,
                permissions: from_json("roles.permissions", &permissions)?,
                system_role,
            })
        })
        .collect()
    }

    pub fn get_role(&self, id: &str) -> Result<Role> {
        let row: Option<(String, String, bool)> = self
            .conn
            .prepare_cached(
                "SELECT description, permissions, system_role FROM roles WHERE id = ?1",
            )?
            .query_row(params![id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        let (description, permissions, system_role) =
            row.ok_or_else(|| StorageError::NotFound(format!("role '{id}'")))?;
        Ok(Role {
            id: id.to_string(),
            description,
            permissions: from_json("roles.permissions", &permissions)?,
            system_role,
        })
    }

    /// Inserts a role, or (for system roles at start-up) replaces it.
    pub fn put_role(&self, role: &Role, replace: bool) -> Result<()> {
        if !replace && self.get_role(&role.id).is_ok() {
            return Err(StorageError::AlreadyExists(format!("role '{}'", role.id)));
        }
        self.conn
            .prepare_cached(
                "INSERT INTO roles (id, description, permissions, system_role) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET description = excluded.description,
                     permissions = excluded.permissions, system_role = excluded.system_role",
            )?
            .execute(params![
                role.id,
                role.description,
                to_json(&role.permissions),
                role.system_role
            ])?;
        Ok(())
    }

    pub fn delete_role(&self, id: &str) -> Result<()> {
        self.get_role(id)?;
        self.conn
            .prepare_cached("DELETE FROM roles WHERE id = ?1")?
            .execute(params![id])?;
        Ok(())
    }
}
