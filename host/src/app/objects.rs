//! Objects through the API: each owner's limit (pipelines keep `objects.pipeline_object_limit`,
//! evicting the oldest; a plugin keeps `plugins.object_limit`), and plugins' objects only for a
//! loaded plugin. The order of rows and bytes is the [`ObjectService`]'s.

use super::{App, AppError};
use crate::models::Object;
use crate::object_service::{Limit, ObjectServiceError, Owner};
use crate::objects::ByteStream;
use crate::storage::Page;

impl App {
    /// Refuses a plugin's objects unless the plugin is loaded (its objects are its own).
    async fn check_owner(&self, owner: &Owner) -> Result<(), AppError> {
        match owner {
            Owner::Plugin { plugin } if self.triggers.plugins().await.get(plugin).is_none() => {
                Err(AppError::NotFound(format!("plugin '{plugin}'")))
            }
            _ => Ok(()),
        }
    }

    fn limit(&self, owner: &Owner) -> Limit {
        match owner {
            Owner::Pipeline { .. } => Limit::EvictOldest(self.config.objects.pipeline_object_limit),
            Owner::Run { .. } => Limit::Unlimited,
            Owner::Plugin { .. } => Limit::Refuse(self.config.plugins.object_limit),
        }
    }

    pub async fn list_objects(&self, owner: Owner, page: Page) -> Result<Vec<Object>, AppError> {
        self.check_owner(&owner).await?;
        Ok(self.object_service.list(&owner, page).await?)
    }

    /// An object's bytes, streamed.
    pub async fn download_object(&self, owner: Owner, key: &str) -> Result<ByteStream, AppError> {
        self.check_owner(&owner).await?;
        self.object_service
            .get(&owner, key)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("object '{key}'")))
    }

    /// Stores an object from a stream (refused before reading it if it exists and `force` is
    /// not set); at most `objects.max_object_size_mb`.
    pub async fn upload_object(
        &self,
        owner: Owner,
        key: &str,
        force: bool,
        body: ByteStream,
    ) -> Result<Object, AppError> {
        self.check_owner(&owner).await?;
        self.object_service.check_put(&owner, key, force).await?;
        let max_bytes = self.config.objects.max_object_size_mb << 20;
        let bounds = (max_bytes, self.limit(&owner), force);
        Ok(self.object_service.put(&owner, key, body, bounds).await?)
    }

    pub async fn delete_object(&self, owner: Owner, key: &str) -> Result<(), AppError> {
        self.check_owner(&owner).await?;
        Ok(self.object_service.delete(&owner, key).await?)
    }
}

impl From<ObjectServiceError> for AppError {
    fn from(error: ObjectServiceError) -> Self {
        match error {
            ObjectServiceError::InvalidKey(message) => Self::Invalid(message),
            ObjectServiceError::Exists(_) | ObjectServiceError::Full(_) => {
                Self::Conflict(error.to_string())
            }
            ObjectServiceError::Missing(key) => {
                Self::NotFound(format!("the contents of object '{key}'"))
            }
            ObjectServiceError::Store(error) => Self::Objects(error),
            ObjectServiceError::Index(error) => Self::Storage(error),
        }
    }
}
