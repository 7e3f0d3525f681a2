//! `vigia prices import FILE`: imports a price file straight into the configured store,
//! with the same checks as `POST /api/v1/prices/import` (any bad row refuses the whole
//! file; every bad row and column is named), so an operator can load prices without an
//! API key. Like `vigia keys`, it is safe while a server runs on the same store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use vigia_core::{ApiKeyId, Role};
use vigia_services::{AuditTrail, Caller, PriceImportError, PriceService};
use vigia_store::ImportCounts;

use crate::config::{Config, Overrides};
use crate::keys::{open_configured_store, validate_slug, DEFAULT_TENANT};

/// `vigia prices …` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PricesCommand {
    /// Import a CSV price file (header `product,currency,price_per_kg,valid_from[,source]`)
    /// into a tenant: all rows or none; importing it again changes nothing.
    Import(ImportArgs),
}

/// Arguments of `vigia prices import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// Tenant slug whose prices these are.
    #[arg(long, default_value = DEFAULT_TENANT)]
    pub tenant: String,
    /// TOML config file (default: ./vigia.toml when present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory of the server [default: ./vigia-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Store URL (as for `vigia serve --store`).
    #[arg(long)]
    pub store: Option<String>,
}

/// Runs a `vigia prices` subcommand; the counts go to stdout, problems to the error.
pub async fn run(command: PricesCommand) -> anyhow::Result<()> {
    match command {
        PricesCommand::Import(args) => {
            validate_slug(&args.tenant)
                .map_err(|why| anyhow::anyhow!("invalid tenant slug `{}`: {why}", args.tenant))?;
            let overrides = Overrides {
                data_dir: args.data_dir.clone(),
                store: args.store.clone(),
                ..Overrides::default()
            };
            let config = Config::load(args.config.as_deref(), &overrides)?;
            let counts = import_file(&config, &args.tenant, &args.file).await?;
            println!(
                "imported {}, updated {}, unchanged {}",
                counts.imported, counts.updated, counts.unchanged
            );
            Ok(())
        }
    }
}

/// Reads `file` (at most `prices.max_import_bytes`) and imports it into `tenant`'s prices
/// in the store `config` names.
pub async fn import_file(
    config: &Config,
    tenant: &str,
    file: &Path,
) -> anyhow::Result<ImportCounts> {
    let limit = config.prices.max_import_bytes;
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if size > limit as u64 {
        anyhow::bail!(
            "{} is {size} bytes, over the {limit}-byte limit (prices.max_import_bytes); split it",
            file.display()
        );
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let store = open_configured_store(config).await?;
    let result = import_into(store.clone(), tenant, &bytes, limit).await;
    store.close().await;
    result.map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))
}

async fn import_into(
    store: Arc<dyn vigia_store::Store>,
    tenant: &str,
    bytes: &[u8],
    limit: usize,
) -> anyhow::Result<ImportCounts> {
    let catalog = store.catalog();
    let tenant = if tenant == DEFAULT_TENANT {
        catalog.default_tenant().await?
    } else {
        catalog
            .tenant_by_slug(tenant)
            .await?
            .with_context(|| format!("no tenant `{tenant}` (create it with `vigia keys create`)"))?
    };
    // The command line acts as an administrator of the tenant, as `vigia keys` does; the
    // audit log names it `key:0:vigia-cli`.
    let caller = Caller {
        tenant: tenant.id,
        key_id: ApiKeyId(0),
        key_name: "vigia-cli".into(),
        role: Role::Admin,
    };
    let service = PriceService::new(store.clone(), AuditTrail::new(store), limit);
    service
        .import_csv(&caller, bytes, "cli")
        .await
        .map_err(|e| match e {
            PriceImportError::Refused(refusal) => {
                let mut text = format!(
                    "refused whole, nothing stored: {} bad row(s)",
                    refusal.rows_with_errors
                );
                for error in &refusal.errors {
                    text.push_str(&format!("\n  {error}"));
                }
                if refusal.errors.len() < refusal.rows_with_errors {
                    text.push_str("\n  (only the first bad cells are listed)");
                }
                anyhow::anyhow!(text)
            }
            other => anyhow::Error::new(other),
        })
}
