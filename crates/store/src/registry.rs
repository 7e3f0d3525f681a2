//! Opening a store from a URL: the scheme picks a registered [`StoreFactory`] (as
//! Quickwit's `StorageResolver` does), so callers ask for "the store at this URL" and
//! never name a backend. Every backend registers here.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use vigia_core::registry::SchemeRegistry;

use crate::{Durability, Store, StoreError, StoreResult};

/// Connections a server backend opens at most unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// What every backend may need besides its URL.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenContext {
    /// Where embedded backends keep their files (a `sqlite` URL without a path).
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Page cache of an embedded backend's writer, in MiB.
    pub cache_mib: usize,
    /// Refuse to create a store that does not exist yet (for tools like `vigia keys`,
    /// where a mistyped location must not silently get a store of its own).
    pub must_exist: bool,
    /// Connections a server backend (PostgreSQL, MySQL) may hold open in all, across its
    /// write and read pools (seed 004 §1.2: Vigía must work within 5). Embedded backends
    /// ignore it: SQLite has one writer and a small read pool of its own.
    pub max_connections: u32,
    /// A read replica for queries that tolerate lag (series, lists, reports); writes,
    /// authentication and read-your-writes queries stay on the primary. Server backends
    /// only; `None` reads from the primary.
    pub read_url: Option<String>,
}

impl OpenContext {
    /// Defaults for embedded files under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::Full,
            // Measured with `vigia bench ingest --spawn --mode batched`: 8 MiB commits as
            // fast as 16 (readings append at the right edge of the time-first key, so few
            // pages are hot) and cut peak RSS from 100–104 MB to 82–87 MB.
            cache_mib: 8,
            must_exist: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            read_url: None,
        }
    }
}

/// Opens the backend of one or more URL schemes.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// The schemes it opens (`sqlite` opens `sqlite`, `sqlite://…`).
    fn schemes(&self) -> &'static [&'static str];
    /// A one-line description of the accepted URLs, for error messages and docs.
    fn usage(&self) -> &'static str;
    /// Checks the URL without opening anything (for configuration validation).
    fn validate(&self, url: &str, ctx: &OpenContext) -> StoreResult<()>;
    async fn open(&self, url: &str, ctx: &OpenContext) -> StoreResult<Arc<dyn Store>>;
}

impl vigia_core::registry::Schemes for dyn StoreFactory {
    fn schemes(&self) -> &'static [&'static str] {
        StoreFactory::schemes(self)
    }
    fn usage(&self) -> &'static str {
        StoreFactory::usage(self)
    }
}

/// Factories by scheme.
#[derive(Clone, Default)]
pub struct StoreRegistry {
    factories: SchemeRegistry<dyn StoreFactory>,
}

/// The scheme of a store URL: the part before `://`, or the whole word (`sqlite`).
pub fn scheme_of(url: &str) -> &str {
    url.split_once(':').map_or(url, |(scheme, _)| scheme)
}

impl StoreRegistry {
    /// A registry with no backends.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The backends built into this crate: `sqlite`, `postgres`, `mysql` and `volatile`.
    pub fn builtin() -> Self {
        let mut registry = Self::empty();
        registry.register(Arc::new(crate::sqlite::SqliteFactory));
        registry.register(Arc::new(crate::postgres::PostgresFactory));
        registry.register(Arc::new(crate::mysql::MysqlFactory));
        registry.register(Arc::new(crate::memory::VolatileFactory));
        registry
    }

    /// Adds a backend; a later registration of the same scheme wins.
    pub fn register(&mut self, factory: Arc<dyn StoreFactory>) {
        self.factories.register(factory);
    }

    /// Every scheme that can be opened.
    pub fn schemes(&self) -> Vec<&'static str> {
        self.factories.schemes()
    }

    fn factory(&self, url: &str) -> StoreResult<&Arc<dyn StoreFactory>> {
        let scheme = scheme_of(url);
        self.factories.find(scheme).map_err(|supported| {
            StoreError::Config(format!(
                "store `{scheme}` is not available in this build; supported: {supported}"
            ))
        })
    }

    /// True when both URLs open the same backend, whatever alias each uses
    /// (`mysql://` and `mariadb://`, `postgres://` and `postgresql://`).
    pub fn same_backend(&self, a: &str, b: &str) -> bool {
        match (self.factory(a), self.factory(b)) {
            (Ok(x), Ok(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
    }

    /// Checks that `url` names a known backend and is well formed.
    pub fn validate(&self, url: &str, ctx: &OpenContext) -> StoreResult<()> {
        self.factory(url)?.validate(url, ctx)
    }

    /// Opens the store at `url`.
    pub async fn open(&self, url: &str, ctx: &OpenContext) -> StoreResult<Arc<dyn Store>> {
        self.factory(url)?.open(url, ctx).await
    }
}

/// Opens the store at `url` with the built-in backends.
pub async fn open(url: &str, ctx: &OpenContext) -> StoreResult<Arc<dyn Store>> {
    StoreRegistry::builtin().open(url, ctx).await
}

/// The schemes the built-in backends open.
pub fn supported_schemes() -> Vec<&'static str> {
    StoreRegistry::builtin().schemes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_names_the_supported_ones() {
        let ctx = OpenContext::new("/tmp/x");
        let err = StoreRegistry::builtin()
            .validate("nosuchdb://localhost/db", &ctx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("store `nosuchdb`"), "{err}");
        assert!(err.contains("sqlite") && err.contains("volatile"), "{err}");
    }

    #[test]
    fn schemes_are_listed() {
        assert_eq!(
            supported_schemes(),
            vec![
                "mariadb",
                "mysql",
                "postgres",
                "postgresql",
                "sqlite",
                "volatile"
            ]
        );
        let registry = StoreRegistry::builtin();
        assert!(registry.same_backend("mysql://h/db", "mariadb://replica/db"));
        assert!(registry.same_backend("postgres://h/db", "postgresql://r/db"));
        assert!(!registry.same_backend("postgres://h/db", "mysql://h/db"));
        assert!(!registry.same_backend("nosuch://h", "nosuch://h"));
        assert_eq!(scheme_of("sqlite:///a/b"), "sqlite");
        assert_eq!(scheme_of("sqlite"), "sqlite");
    }

    #[tokio::test]
    async fn opens_by_url() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = OpenContext::new(dir.path());
        for url in ["sqlite", "volatile://"] {
            let store = open(url, &ctx).await.unwrap();
            store.ping().await.unwrap();
            store.close().await;
        }
        assert!(dir.path().join("vigia.sqlite3").exists());
    }
}
