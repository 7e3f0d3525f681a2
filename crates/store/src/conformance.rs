//! The conformance suites every [`Store`] backend must pass, one per port, so backends
//! cannot drift apart. Enabled by the `conformance` feature.
//!
//! Each check is a plain `async fn(&dyn Store)` that panics with a message naming the
//! broken invariant; each expects a FRESH, empty store. A port's checks are listed once,
//! in its `for_each_*_check!` macro; [`for_each_store_check!`] lists them all, and
//! [`run_all`] runs every check, each on its own new store. A backend's test file makes
//! one test per check from the same lists (a second list would drift). A new port adds
//! its module, its macro, and one line to `for_each_store_check!`.

mod alerts;
mod audit;
mod catalog;
mod dead_letters;
mod excursions;
mod leases;
mod outbox;
mod prices;
mod readings;
mod robots;
mod rollups;

use std::future::Future;

use vigia_core::{Sensor, SensorId, Tenant, Timestamp, DEFAULT_METRIC};

use crate::{SensorReading, Store, StoreError, WriteBatch};

pub use alerts::{
    ack_and_resolve_semantics, alert_details_round_trip_and_stay_null_when_absent,
    alert_listing_filters, auto_resolve_then_reopen_creates_new_alert,
    batch_rejects_alert_for_sensor_of_other_tenant,
    one_open_alert_per_rule_across_concurrent_batches, one_open_alert_per_rule_in_one_batch,
    tenant_isolation_of_alerts, unresolved_counts_per_sensor,
};
pub use audit::audit_aggregates_per_minute;
pub use catalog::{
    api_key_roles_listing_and_revocation, api_keys_by_hash, ping,
    provision_sensors_is_idempotent_and_ordered, put_sensor_creates_then_updates,
    put_sensor_resolves_alerts_of_removed_rules, sensor_pages_and_their_scopes,
    tenant_isolation_of_sensors, tenants,
};
pub use dead_letters::dead_letters_are_kept_whole_per_tenant;
pub use excursions::{
    excursions_are_idempotent_and_never_move_back, excursions_list_by_range_in_pages,
    excursions_open_extend_and_close, excursions_refuse_the_whole_batch_when_wrong,
};
pub use leases::leases_one_holder_at_a_time;
pub use outbox::outbox_has_one_event_per_alert_change;
pub use prices::{price_imports_are_idempotent_and_exact, products_are_kept_per_tenant};
pub use readings::{
    batch_is_atomic, concurrent_batches_fail_alone, housekeeping_keeps_data,
    large_batches_count_exactly, latest_of_one_sensor, latest_only_moves_forward,
    readings_are_idempotent, recent_readings_for_rebuild, series_limit_and_range,
    series_step_buckets, tenant_isolation_of_readings,
};
pub use robots::{
    robots_cancel_rules, robots_claim_order_priority_then_tenants,
    robots_claim_throughput_is_reported, robots_cleanup_deletes_only_past_the_cutoff,
    robots_concurrent_claimers_never_share_a_robot, robots_create_get_and_tenant_isolation,
    robots_dead_then_retry, robots_idempotent_create, robots_lease_expiry_requeues,
    robots_list_pages_once_in_order, robots_modules_and_instances, robots_not_before_is_respected,
    robots_stale_attempts_are_refused_and_recorded,
};
pub use rollups::{
    closed_ranges_roll_up_exactly_and_the_open_range_waits,
    late_readings_fix_their_buckets_and_tenants_stay_apart,
    retention_deletes_what_is_older_in_chunks_and_keeps_alerted_sensors,
    the_row_budget_stops_at_a_bucket_boundary,
};

/// The catalog port's checks (tenants, keys, sensors).
#[macro_export]
macro_rules! for_each_catalog_check {
    ($callback:ident) => {
        $callback!(
            ping,
            tenants,
            api_keys_by_hash,
            api_key_roles_listing_and_revocation,
            put_sensor_creates_then_updates,
            put_sensor_resolves_alerts_of_removed_rules,
            provision_sensors_is_idempotent_and_ordered,
            tenant_isolation_of_sensors,
            sensor_pages_and_their_scopes,
        );
    };
}

/// The readings port's checks, with the unit of work's atomicity.
#[macro_export]
macro_rules! for_each_reading_check {
    ($callback:ident) => {
        $callback!(
            readings_are_idempotent,
            large_batches_count_exactly,
            batch_is_atomic,
            concurrent_batches_fail_alone,
            latest_only_moves_forward,
            latest_of_one_sensor,
            housekeeping_keeps_data,
            recent_readings_for_rebuild,
            series_limit_and_range,
            series_step_buckets,
            tenant_isolation_of_readings,
        );
    };
}

/// The alerts port's checks.
#[macro_export]
macro_rules! for_each_alert_check {
    ($callback:ident) => {
        $callback!(
            one_open_alert_per_rule_in_one_batch,
            one_open_alert_per_rule_across_concurrent_batches,
            auto_resolve_then_reopen_creates_new_alert,
            ack_and_resolve_semantics,
            alert_listing_filters,
            unresolved_counts_per_sensor,
            batch_rejects_alert_for_sensor_of_other_tenant,
            tenant_isolation_of_alerts,
            alert_details_round_trip_and_stay_null_when_absent,
        );
    };
}

/// The audit port's checks.
#[macro_export]
macro_rules! for_each_audit_check {
    ($callback:ident) => {
        $callback!(audit_aggregates_per_minute);
    };
}

/// The leases port's checks.
#[macro_export]
macro_rules! for_each_lease_check {
    ($callback:ident) => {
        $callback!(leases_one_holder_at_a_time);
    };
}

/// The outbox port's checks.
#[macro_export]
macro_rules! for_each_outbox_check {
    ($callback:ident) => {
        $callback!(outbox_has_one_event_per_alert_change);
    };
}

/// The products and prices ports' checks.
#[macro_export]
macro_rules! for_each_price_check {
    ($callback:ident) => {
        $callback!(
            products_are_kept_per_tenant,
            price_imports_are_idempotent_and_exact,
        );
    };
}

/// The dead-letter port's checks.
#[macro_export]
macro_rules! for_each_dead_letter_check {
    ($callback:ident) => {
        $callback!(dead_letters_are_kept_whole_per_tenant);
    };
}

/// The excursions port's checks, with their part of the unit of work.
#[macro_export]
macro_rules! for_each_excursion_check {
    ($callback:ident) => {
        $callback!(
            excursions_open_extend_and_close,
            excursions_are_idempotent_and_never_move_back,
            excursions_list_by_range_in_pages,
            excursions_refuse_the_whole_batch_when_wrong,
        );
    };
}

/// The robots port's checks, through [`crate::Store::robots`].
#[macro_export]
macro_rules! for_each_robot_check {
    ($callback:ident) => {
        $callback!(
            robots_create_get_and_tenant_isolation,
            robots_idempotent_create,
            robots_claim_order_priority_then_tenants,
            robots_concurrent_claimers_never_share_a_robot,
            robots_lease_expiry_requeues,
            robots_stale_attempts_are_refused_and_recorded,
            robots_not_before_is_respected,
            robots_dead_then_retry,
            robots_cancel_rules,
            robots_list_pages_once_in_order,
            robots_cleanup_deletes_only_past_the_cutoff,
            robots_modules_and_instances,
            robots_claim_throughput_is_reported,
        );
    };
}

/// The rollups port's checks, through [`crate::Store::rollups`]. Outside
/// [`for_each_store_check!`] so a backend's test file names them; every backend runs them
/// (sqlite, volatile, postgres, mysql), and [`run_all`] includes them.
#[macro_export]
macro_rules! for_each_rollup_check {
    ($callback:ident) => {
        $callback!(
            closed_ranges_roll_up_exactly_and_the_open_range_waits,
            late_readings_fix_their_buckets_and_tenants_stay_apart,
            the_row_budget_stops_at_a_bucket_boundary,
            retention_deletes_what_is_older_in_chunks_and_keeps_alerted_sensors,
        );
    };
}

/// Calls `$callback` once per port with that port's checks, so a backend's test file can
/// make one test per check: `vigia_store::for_each_store_check!(my_test_macro);`.
#[macro_export]
macro_rules! for_each_store_check {
    ($callback:ident) => {
        $crate::for_each_catalog_check!($callback);
        $crate::for_each_reading_check!($callback);
        $crate::for_each_alert_check!($callback);
        $crate::for_each_audit_check!($callback);
        $crate::for_each_lease_check!($callback);
        $crate::for_each_outbox_check!($callback);
        $crate::for_each_dead_letter_check!($callback);
        $crate::for_each_price_check!($callback);
        $crate::for_each_robot_check!($callback);
        $crate::for_each_excursion_check!($callback);
    };
}

/// Runs every check (the rollups port's too), each against a new store from `new_store`.
pub async fn run_all<F, Fut, S>(new_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    S: Store,
{
    macro_rules! run {
        ($($check:ident),* $(,)?) => {$(
            eprintln!("store conformance: {}", stringify!($check));
            $check(&new_store().await).await;
        )*};
    }
    for_each_store_check!(run);
    for_each_rollup_check!(run);
}

/// An instant well inside the range every backend handles.
const T0: i64 = 1_700_000_000_000;

/// The default tenant and `keys` provisioned in it.
async fn setup(store: &dyn Store, keys: &[&str]) -> (Tenant, Vec<Sensor>) {
    let tenant = store
        .catalog()
        .default_tenant()
        .await
        .expect("default tenant");
    let sensors = provision(store, &tenant, keys).await;
    (tenant, sensors)
}

async fn provision(store: &dyn Store, tenant: &Tenant, keys: &[&str]) -> Vec<Sensor> {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    store
        .catalog()
        .provision_sensors(tenant.id, &keys)
        .await
        .expect("provision sensors")
}

/// A reading of the default metric at `T0 + offset_ms`.
fn reading(sensor: SensorId, offset_ms: i64, value: f64) -> SensorReading {
    SensorReading {
        sensor,
        metric: DEFAULT_METRIC.to_string(),
        ts: Timestamp(T0 + offset_ms),
        value,
    }
}

fn readings_batch(readings: Vec<SensorReading>) -> WriteBatch {
    WriteBatch {
        excursions: Vec::new(),
        readings,
        alerts: Vec::new(),
    }
}

/// A new admin key of `tenant` with this name and hash.
fn api_key(tenant: vigia_core::TenantId, name: &str, hash: [u8; 32]) -> crate::NewApiKey {
    crate::NewApiKey {
        tenant,
        name: name.to_string(),
        role: vigia_core::Role::Admin,
        hash,
    }
}

/// A sensor id no backend can have handed out in a fresh store.
const MISSING_SENSOR: SensorId = SensorId(i64::MAX - 7);

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "{what}: expected NotFound, got {result:?}"
    );
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "{what}: expected Conflict, got {result:?}"
    );
}
