//! The S3-compatible object store (`objects.engine = "s3"`): object contents in a bucket, under an
//! optional prefix, at the same [`relative_location`]s as the filesystem store's files. Uploads
//! are streamed: a body that fits in one part is sent with one `PUT`; a longer one as a multipart
//! upload, completed only once the whole body arrived within its limit (aborted otherwise), so an
//! object is replaced only by a complete upload, as on the filesystem. Reads stream the response.
//!
//! Owns the S3 client (Apache Arrow's `object_store`: SigV4, path-style or virtual-hosted
//! addressing, a custom endpoint for S3-compatible servers). Must not know which objects exist or
//! their limits beyond the one upload it is given.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Location;
use object_store::{
    ClientOptions, ObjectStore as RemoteStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};

use super::{
    ByteStream, ObjectError, ObjectKey, ObjectStore, counted, pipeline_locations, relative_location,
};
use crate::config::S3Settings;

/// A body up to this size goes up in one `PUT`; a longer one in parts of this size.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one upload in flight at once (memory per upload: about this many parts).
const PARTS_IN_FLIGHT: usize = 2;

/// Objects in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    remote: Arc<dyn RemoteStore>,
    /// The key prefix every object is kept under (may be empty).
    prefix: Vec<String>,
    /// `s3://bucket/prefix`, for messages.
    name: String,
}

impl S3ObjectStore {
    /// Connects to the bucket and checks it can be listed, so a wrong endpoint, bucket or
    /// credential stops start-up instead of the first upload.
    pub async fn connect(settings: &S3Settings) -> Result<Self, ObjectError> {
        let store = Self::new(settings)?;
        let prefix = store.prefix_location();
        store
            .remote
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|source| {
                ObjectError::S3Settings(format!(
                    "the bucket '{}' cannot be listed at {}: {}",
                    settings.bucket,
                    if settings.endpoint.is_empty() {
                        "AWS S3"
                    } else {
                        &settings.endpoint
                    },
                    first_line(&source.to_string())
                ))
            })?;
        Ok(store)
    }

    /// The client, without contacting the bucket.
    pub fn new(settings: &S3Settings) -> Result<Self, ObjectError> {
        // The HTTPS client (reqwest over rustls) uses the process's crypto provider.
        crate::tls::install_crypto_provider();
        // Without keys the client would look for an AWS instance role (a request to
        // 169.254.169.254), which only makes sense on AWS itself.
        let keys_in_environment = std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
        if !settings.endpoint.is_empty()
            && settings.access_key_id.is_empty()
            && !keys_in_environment
        {
            return Err(ObjectError::S3Settings(format!(
                "access_key_id and secret_access_key: required for the endpoint {} (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment)",
                settings.endpoint
            )));
        }
        // Credentials and the region may also come from the usual AWS_* environment variables.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(settings.endpoint.starts_with("http://")),
            );
        if !settings.endpoint.is_empty() {
            builder = builder.with_endpoint(&settings.endpoint);
        }
        if !settings.access_key_id.is_empty() {
            builder = builder
                .with_access_key_id(&settings.access_key_id)
                .with_secret_access_key(&settings.secret_access_key);
        }
        let remote = builder
            .build()
            .map_err(|error| ObjectError::S3Settings(first_line(&error.to_string())))?;
        let prefix: Vec<String> = settings
            .prefix
            .split('/')
            .filter(|part| !part.is_empty())
            .map(str::to_string)
            .collect();
        let name = format!("s3://{}/{}", settings.bucket, prefix.join("/"));
        Ok(Self {
            remote: Arc::new(remote),
            prefix,
            name,
        })
    }

    fn prefix_location(&self) -> Location {
        Location::from_iter(self.prefix.iter().map(String::as_str))
    }

    fn location_of(&self, parts: &[String]) -> Location {
        Location::from_iter(self.prefix.iter().chain(parts).map(String::as_str))
    }

    fn location(&self, key: &ObjectKey) -> Result<Location, ObjectError> {
        Ok(self.location_of(&relative_location(key)?))
    }

    fn remote_error(&self, location: &Location) -> impl Fn(object_store::Error) -> ObjectError {
        let location = format!("{}/{}", self.name.trim_end_matches('/'), location);
        move |source| ObjectError::Remote {
            location: location.clone(),
            source,
        }
    }

    /// Sends the rest of `body` (after `first`, the body's first part) as a multipart upload,
    /// completed only when the whole body arrived within `max_bytes`.
    async fn put_in_parts(
        &self,
        location: &Location,
        first: Vec<Bytes>,
        mut size: u64,
        mut body: ByteStream,
        max_bytes: u64,
    ) -> Result<u64, ObjectError> {
        let remote_error = self.remote_error(location);
        let upload = self
            .remote
            .put_multipart(location)
            .await
            .map_err(&remote_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        for chunk in first {
            writer.put(chunk);
        }
        let sent: Result<(), ObjectError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = counted(chunk, &mut size, max_bytes)?;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(&remote_error)?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match sent {
            Ok(()) => {
                writer.finish().await.map_err(&remote_error)?;
                Ok(size)
            }
            Err(error) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(%location, error = %abort, "could not abort a refused multipart upload; the bucket's lifecycle rules must clear it");
                }
                Err(error)
            }
        }
    }
}

/// The first line of an error's text (the S3 client's can run to a response body).
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

#[async_trait::async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
        max_bytes: u64,
    ) -> Result<u64, ObjectError> {
        let location = self.location(key)?;
        let mut first = Vec::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = counted(chunk, &mut size, max_bytes)?;
            first.push(chunk);
            if size >= PART_BYTES as u64 {
                return self
                    .put_in_parts(&location, first, size, body, max_bytes)
                    .await;
            }
        }
        self.remote
            .put(&location, PutPayload::from_iter(first))
            .await
            .map_err(self.remote_error(&location))?;
        Ok(size)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<ByteStream>, ObjectError> {
        let location = self.location(key)?;
        match self.remote.get(&location).await {
            Ok(object) => Ok(Some(
                object.into_stream().map_err(std::io::Error::other).boxed(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.remote_error(&location)(source)),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        let location = self.location(key)?;
        match self.remote.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.remote_error(&location)(source)),
        }
    }

    async fn delete_pipeline(&self, namespace: &str, pipeline: &str) -> Result<(), ObjectError> {
        for parts in pipeline_locations(namespace, pipeline)? {
            let prefix = self.location_of(&parts);
            let remote_error = self.remote_error(&prefix);
            let listed = self
                .remote
                .list(Some(&prefix))
                .map_ok(|object| object.location)
                .boxed();
            let mut deleted = self.remote.delete_stream(listed);
            while let Some(result) = deleted.next().await {
                match result {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(source) => return Err(remote_error(source)),
                }
            }
        }
        Ok(())
    }
}
