//! Object stores behind table locations.
//!
//! [`StoreRegistry`] is DataFusion's [`ObjectStoreRegistry`]: `file://` is always there, an
//! `s3://bucket/…` store is built on first use from [`S3Settings`] (endpoint, region,
//! credentials, path-style, plain HTTP for local servers), and `hdfs://` stores are built with
//! `hdfs-native-object-store` when the crate is compiled with the `hdfs` feature.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::durable::DurableLocalStore;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use serde::{Deserialize, Serialize};
use url::Url;

/// Settings used to reach S3 or an S3-compatible server (MinIO, moto, Ceph …).
///
/// Every field is optional; unset fields fall back to the standard `AWS_*` environment variables
/// that `object_store` reads (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT`, …).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000` for a local server.
    pub endpoint: Option<String>,
    /// Region, e.g. `us-east-1`.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint`.
    pub path_style: bool,
    /// Allow plain `http://` endpoints (local test servers).
    pub allow_http: bool,
}

/// Object store registry that builds stores for `s3://` and `hdfs://` URLs on demand.
#[derive(Debug)]
pub struct StoreRegistry {
    s3: S3Settings,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl StoreRegistry {
    /// A registry with the local file system registered and S3 reached with `s3`.
    pub fn new(s3: S3Settings) -> Self {
        let mut stores: HashMap<String, Arc<dyn ObjectStore>> = HashMap::new();
        stores.insert("file://".to_string(), Arc::new(DurableLocalStore::new()));
        Self {
            s3,
            stores: RwLock::new(stores),
        }
    }

    fn build_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        match url.scheme() {
            "s3" | "s3a" => {
                let bucket = url.host_str().ok_or_else(|| {
                    DataFusionError::Configuration(format!("S3 location '{url}' has no bucket"))
                })?;
                Ok(Arc::new(build_s3(bucket, &self.s3)?))
            }
            #[cfg(feature = "hdfs")]
            "hdfs" | "viewfs" => {
                let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
                    .with_url(url.as_str())
                    .build()
                    .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?;
                Ok(Arc::new(store))
            }
            #[cfg(not(feature = "hdfs"))]
            "hdfs" | "viewfs" => Err(DataFusionError::NotImplemented(
                "HDFS support is not compiled in: rebuild prognos with `--features hdfs`".into(),
            )),
            other => Err(DataFusionError::NotImplemented(format!(
                "unsupported location scheme '{other}://' (supported: file, s3, hdfs)"
            ))),
        }
    }
}

/// Build an S3 client for one bucket from the settings, falling back to `AWS_*` variables.
pub fn build_s3(
    bucket: &str,
    s3: &S3Settings,
) -> Result<object_store::aws::AmazonS3, DataFusionError> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &s3.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &s3.session_token {
        builder = builder.with_token(token);
    }
    if s3.path_style {
        builder = builder.with_virtual_hosted_style_request(false);
    }
    if s3.allow_http {
        builder = builder.with_allow_http(true);
    }
    builder
        .build()
        .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))
}

/// The registry key of a URL: scheme and authority (`s3://bucket`).
fn store_key(url: &Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        stores.insert(store_key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        stores.remove(&store_key(url)).ok_or_else(|| {
            DataFusionError::Execution(format!("no object store registered for '{url}'"))
        })
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let key = store_key(url);
        if let Some(store) = self
            .stores
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(store));
        }
        let store = self.build_store(url)?;
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(stores.entry(key).or_insert(store)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_is_always_there() {
        let reg = StoreRegistry::new(S3Settings::default());
        let url = Url::parse("file:///tmp/x").expect("url");
        assert!(reg.get_store(&url).is_ok());
    }

    #[test]
    fn unknown_scheme_is_a_clear_error() {
        let reg = StoreRegistry::new(S3Settings::default());
        let url = Url::parse("gopher://host/x").expect("url");
        let err = reg.get_store(&url).expect_err("must fail").to_string();
        assert!(err.contains("unsupported location scheme"), "{err}");
    }

    #[test]
    fn s3_store_is_built_per_bucket() {
        let reg = StoreRegistry::new(S3Settings {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            path_style: true,
            allow_http: true,
            ..Default::default()
        });
        let a = reg
            .get_store(&Url::parse("s3://a/x").expect("url"))
            .expect("a");
        let a2 = reg
            .get_store(&Url::parse("s3://a/y").expect("url"))
            .expect("a2");
        assert!(Arc::ptr_eq(&a, &a2));
    }
}
