//! `vigia keys`: issues API keys for tenants, straight against the configured store, so
//! an operator can add a tenant (or another key for `default`) without an admin API.
//!
//! The command opens the same store `vigia serve` uses (same configuration sources), which
//! is safe while a server runs on it: SQLite in WAL mode lets both processes write, each
//! waiting out the other's locks. A server finds a new key on its first use, since it
//! caches only keys it has already verified.
//!
//! Listing and revoking keys is the admin API's job (`GET`/`DELETE /api/v1/keys`): keys
//! are never stored in a form that could be shown again.

use std::path::PathBuf;

use anyhow::Context;
use vigia_core::{ApiKeyId, Role, Tenant};
use vigia_services::{generate_key, hash_key};
use vigia_store::{NewApiKey, OpenContext, Store, StoreError};

use crate::config::{Config, Overrides};

/// Slug of the tenant every installation has; its keys are issued without creating it.
pub const DEFAULT_TENANT: &str = "default";

/// Longest tenant slug accepted.
const MAX_SLUG_LEN: usize = 64;

/// `vigia keys …` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a tenant's API key (and the tenant, when the slug is new); prints the key once.
    Create(CreateArgs),
}

/// Arguments of `vigia keys create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// TOML config file (default: ./vigia.toml when present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory of the server [default: ./vigia-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Store URL (as for `vigia serve --store`).
    #[arg(long)]
    pub store: Option<String>,
    /// Tenant slug: 1–64 characters of a–z, 0–9 and `-`; `default` is the default tenant.
    #[arg(long)]
    pub tenant: String,
    /// Name of the key, recorded as who acknowledged or resolved an alert.
    #[arg(long, default_value = "admin")]
    pub name: String,
    /// What the key may do: admin, operator (alerts and sensors), viewer (reads) or device
    /// (posts readings only).
    #[arg(long, default_value = "admin")]
    pub role: Role,
}

/// A key just issued. `key` exists nowhere else: the store holds only its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedKey {
    /// The tenant the key belongs to.
    pub tenant: Tenant,
    /// Whether this call created the tenant.
    pub tenant_created: bool,
    /// The stored key record's id (not the key).
    pub id: ApiKeyId,
    /// The key's name.
    pub name: String,
    pub role: Role,
    /// The key itself, to hand to its user once.
    pub key: String,
}

/// Runs a `vigia keys` subcommand: the key goes to stdout alone on its line (so scripts
/// can capture it), the explanation to stderr.
pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(args) => {
            // Checked before the configuration so a typo costs no store access.
            check_input(&args.tenant, &args.name)?;
            let overrides = Overrides {
                data_dir: args.data_dir,
                store: args.store,
                ..Overrides::default()
            };
            let config = Config::load(args.config.as_deref(), &overrides)?;
            let issued =
                create_in_configured_store(&config, &args.tenant, &args.name, args.role).await?;
            let tenant = &issued.tenant.slug;
            if issued.tenant_created {
                eprintln!("Created tenant `{tenant}`.");
            }
            eprintln!(
                "Created {} API key `{}` (id {}) of tenant `{tenant}`. It is shown once, below; store it now.",
                issued.role, issued.name, issued.id
            );
            println!("{}", issued.key);
            Ok(())
        }
    }
}

/// Opens the store `config` points at, issues the key and closes the store again.
///
/// Refuses a store that does not exist yet: keys made before the first `vigia serve` would
/// stop it from issuing the default tenant's bootstrap key, and a mistyped data dir would
/// otherwise silently get a store of its own.
pub async fn create_in_configured_store(
    config: &Config,
    tenant: &str,
    key_name: &str,
    role: Role,
) -> anyhow::Result<IssuedKey> {
    let store = open_configured_store(config).await?;
    let issued = create_key(store.as_ref(), tenant, key_name, role).await;
    store.close().await;
    issued
}

/// Opens the store `config` points at for a command-line tool: few connections, and only
/// a store that exists (see [`create_in_configured_store`]).
pub async fn open_configured_store(config: &Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let ctx = OpenContext {
        // A handful of statements: no need for the server's cache or many connections.
        cache_mib: 2,
        max_connections: 2,
        must_exist: true,
        ..config.store_context()
    };
    let store = vigia_store::open(&config.store, &ctx)
        .await
        .map_err(|e| match e {
            StoreError::Config(why) if why.starts_with("no store at") => anyhow::anyhow!(
                "{why}: start `vigia serve` on it once first (it creates the store and the \
                 default tenant's first key), or pass the --data-dir / --store the server uses"
            ),
            other => anyhow::Error::new(other).context("could not open the store"),
        })?;
    Ok(store)
}

/// Issues a new key for `tenant` (a slug), creating the tenant when it is new. Only the
/// key's hash reaches the store.
pub async fn create_key(
    store: &dyn Store,
    tenant: &str,
    key_name: &str,
    role: Role,
) -> anyhow::Result<IssuedKey> {
    check_input(tenant, key_name)?;
    let catalog = store.catalog();
    let (tenant, tenant_created) = if tenant == DEFAULT_TENANT {
        (catalog.default_tenant().await?, false)
    } else {
        match catalog.tenant_by_slug(tenant).await? {
            Some(existing) => (existing, false),
            None => match catalog.create_tenant(tenant, tenant).await {
                Ok(t) => (t, true),
                // Created by someone else in between: use theirs.
                Err(StoreError::Conflict(_)) => (
                    catalog.tenant_by_slug(tenant).await?.with_context(|| {
                        format!("tenant `{tenant}` vanished while being created")
                    })?,
                    false,
                ),
                Err(e) => return Err(e).context(format!("could not create tenant `{tenant}`")),
            },
        }
    };
    let key = generate_key();
    let info = catalog
        .insert_api_key(&NewApiKey {
            tenant: tenant.id,
            name: key_name.to_string(),
            role,
            hash: hash_key(&key),
        })
        .await
        .with_context(|| format!("could not store the new key of tenant `{}`", tenant.slug))?;
    Ok(IssuedKey {
        tenant,
        tenant_created,
        id: info.id,
        name: key_name.to_string(),
        role,
        key,
    })
}

fn check_input(tenant: &str, key_name: &str) -> anyhow::Result<()> {
    validate_slug(tenant)
        .map_err(|why| anyhow::anyhow!("invalid tenant slug `{tenant}`: {why}"))?;
    validate_key_name(key_name)
        .map_err(|why| anyhow::anyhow!("invalid key name `{key_name}`: {why}"))
}

/// A tenant slug is 1–64 characters of `a-z`, `0-9` and `-`: safe in URLs, file names
/// and log lines without escaping.
pub fn validate_slug(slug: &str) -> Result<(), &'static str> {
    if slug.is_empty() {
        return Err("it is empty; use 1 to 64 characters of a-z, 0-9 and `-`");
    }
    if slug.len() > MAX_SLUG_LEN {
        return Err("it is longer than 64 characters");
    }
    if !slug
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("use only lowercase letters a-z, digits 0-9 and `-`");
    }
    Ok(())
}

/// A key name is shown in alerts (`acked_by`), so it must be short, visible text.
pub fn validate_key_name(name: &str) -> Result<(), String> {
    vigia_services::keys::validate_key_name(name).map_err(|e| match e {
        vigia_services::ServiceError::Invalid { errors, .. } if !errors.is_empty() => {
            errors[0].message.clone()
        }
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        let cases: &[(&str, Option<&str>)] = &[
            ("default", None),
            ("acme", None),
            ("plant-2", None),
            ("7", None),
            (&long, None),
            ("", Some("empty")),
            (&too_long, Some("longer than 64")),
            ("Acme", Some("lowercase")),
            ("acme corp", Some("lowercase")),
            ("acme_corp", Some("lowercase")),
            ("acme/../x", Some("lowercase")),
            ("acmé", Some("lowercase")),
            ("acme\n", Some("lowercase")),
        ];
        for (slug, want) in cases {
            match (validate_slug(slug), want) {
                (Ok(()), None) => {}
                (Err(why), Some(needle)) => assert!(why.contains(needle), "{slug:?}: {why}"),
                (got, want) => panic!("{slug:?}: got {got:?}, want error containing {want:?}"),
            }
        }
    }

    #[test]
    fn key_names() {
        let cases: &[(&str, bool)] = &[
            ("admin", true),
            ("línea 2 — turno noche", true),
            (&"é".repeat(64), true),
            ("", false),
            ("   ", false),
            (&"x".repeat(65), false),
            ("a\tb", false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_key_name(name).is_ok(), *ok, "{name:?}");
        }
    }

    async fn open(dir: &tempfile::TempDir) -> std::sync::Arc<dyn Store> {
        vigia_store::open("sqlite", &OpenContext::new(dir.path()))
            .await
            .expect("open store")
    }

    #[tokio::test]
    async fn new_tenant_gets_a_key_the_store_resolves_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir).await;
        let issued = create_key(store.as_ref(), "acme", "ops", Role::Operator)
            .await
            .expect("create");
        assert!(issued.tenant_created);
        assert_eq!(issued.tenant.slug, "acme");
        assert!(issued.key.starts_with("vg_"), "{}", issued.key);
        let found = store
            .catalog()
            .find_api_key(hash_key(&issued.key))
            .await
            .expect("find")
            .expect("the key is stored");
        assert_eq!(
            (found.id, found.tenant, found.name.as_str(), found.role),
            (issued.id, issued.tenant.id, "ops", Role::Operator)
        );
        assert_ne!(
            issued.tenant.id,
            store.catalog().default_tenant().await.expect("default").id
        );

        let again = create_key(store.as_ref(), "acme", "ops-2", Role::Admin)
            .await
            .expect("second key");
        assert!(!again.tenant_created);
        assert_eq!(again.tenant, issued.tenant);
        assert_eq!(store.catalog().count_api_keys().await.expect("count"), 2);
        store.close().await;
    }

    #[tokio::test]
    async fn default_tenant_takes_any_number_of_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir).await;
        let default = store.catalog().default_tenant().await.expect("default");
        let a = create_key(store.as_ref(), "default", "a", Role::Admin)
            .await
            .expect("first");
        let b = create_key(store.as_ref(), "default", "b", Role::Admin)
            .await
            .expect("second");
        assert!(!a.tenant_created && !b.tenant_created);
        assert_eq!((a.tenant.id, b.tenant.id), (default.id, default.id));
        assert_ne!(a.key, b.key);
        assert_eq!(store.catalog().count_api_keys().await.expect("count"), 2);
        store.close().await;
    }

    #[tokio::test]
    async fn bad_input_touches_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir).await;
        for (tenant, name, needle) in [
            ("Bad Slug", "admin", "invalid tenant slug `Bad Slug`"),
            ("acme", "", "invalid key name"),
        ] {
            let err = create_key(store.as_ref(), tenant, name, Role::Admin)
                .await
                .unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{err:#}");
        }
        assert_eq!(store.catalog().count_api_keys().await.expect("count"), 0);
        // `acme` was not created by the refused call: creating it now succeeds.
        assert!(
            create_key(store.as_ref(), "acme", "admin", Role::Admin)
                .await
                .expect("create")
                .tenant_created
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_missing_store_is_not_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().join("typo"),
            ..Config::default()
        };
        let err = create_in_configured_store(&config, "acme", "admin", Role::Admin)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("no store at"), "{err:#}");
        assert!(!dir.path().join("typo").exists());
    }
}
