//! Conformance checks for tenants, API keys and sensors.

use vigia_core::{
    AlertState, Role, Rule, RuleKind, SensorId, SensorKind, SensorSpec, Severity, TenantId,
    Timestamp,
};

use super::{
    api_key, assert_conflict, assert_not_found, provision, reading, readings_batch, setup, T0,
};
use crate::{AlertTransition, NewAlert, NewApiKey, SensorScope, Store, WriteBatch};

/// `ping` answers on a healthy store.
pub async fn ping(store: &dyn Store) {
    store.ping().await.expect("ping a fresh store");
}

/// The default tenant is created once; slugs are unique.
pub async fn tenants(store: &dyn Store) {
    let first = store
        .catalog()
        .default_tenant()
        .await
        .expect("default tenant");
    let again = store
        .catalog()
        .default_tenant()
        .await
        .expect("default tenant again");
    assert_eq!(
        first, again,
        "default_tenant must return the same tenant every time"
    );
    assert_eq!(first.slug, "default");

    let acme = store
        .catalog()
        .create_tenant("acme", "Acme Frío")
        .await
        .expect("create acme");
    assert_eq!(
        (acme.slug.as_str(), acme.name.as_str()),
        ("acme", "Acme Frío")
    );
    assert_ne!(acme.id, first.id);
    assert_conflict(
        store.catalog().create_tenant("acme", "Other").await,
        "duplicate tenant slug",
    );
    assert_conflict(
        store.catalog().create_tenant("default", "Other").await,
        "slug of the default tenant",
    );
    assert_eq!(
        store
            .catalog()
            .tenant_by_slug("acme")
            .await
            .expect("by slug"),
        Some(acme),
        "a tenant is found by its slug, unchanged by the refused duplicate"
    );
    assert_eq!(
        store
            .catalog()
            .tenant_by_slug("default")
            .await
            .expect("by slug"),
        Some(first)
    );
    assert_eq!(
        store
            .catalog()
            .tenant_by_slug("nobody")
            .await
            .expect("by slug"),
        None
    );
}

/// Keys are found by hash only; hashes are unique; the tenant must exist.
pub async fn api_keys_by_hash(store: &dyn Store) {
    let tenant = store
        .catalog()
        .default_tenant()
        .await
        .expect("default tenant");
    assert_eq!(store.catalog().count_api_keys().await.expect("count"), 0);
    assert_eq!(
        store.catalog().find_api_key([1; 32]).await.expect("find"),
        None
    );

    let id = store
        .catalog()
        .insert_api_key(&api_key(tenant.id, "admin", [1; 32]))
        .await
        .expect("insert key")
        .id;
    let other = store
        .catalog()
        .insert_api_key(&api_key(tenant.id, "ci", [2; 32]))
        .await
        .expect("insert key 2")
        .id;
    assert_ne!(id, other);
    assert_eq!(store.catalog().count_api_keys().await.expect("count"), 2);

    let found = store
        .catalog()
        .find_api_key([1; 32])
        .await
        .expect("find")
        .expect("key 1 exists");
    assert_eq!(
        (found.id, found.tenant, found.name.as_str()),
        (id, tenant.id, "admin")
    );
    assert_eq!(
        store.catalog().find_api_key([3; 32]).await.expect("find"),
        None,
        "unknown hash"
    );

    assert_conflict(
        store
            .catalog()
            .insert_api_key(&api_key(tenant.id, "again", [1; 32]))
            .await,
        "duplicate hash",
    );
    assert_not_found(
        store
            .catalog()
            .insert_api_key(&api_key(TenantId(i64::MAX - 3), "ghost", [4; 32]))
            .await,
        "api key for an unknown tenant",
    );
    assert_eq!(
        store.catalog().count_api_keys().await.expect("count"),
        2,
        "failed inserts stored nothing"
    );
}

fn freezer_spec() -> SensorSpec {
    SensorSpec {
        name: Some("Cámara 1".into()),
        kind: SensorKind::Freezer,
        unit: Some("°C".into()),
        rules: vec![Rule::threshold(Severity::Critical, None, Some(-18.0))],
        stock: Some(1200.0),
        product: Some("pollo".into()),
    }
}

/// `put_sensor` creates, then replaces every writable field of, the same sensor.
pub async fn put_sensor_creates_then_updates(store: &dyn Store) {
    let tenant = store
        .catalog()
        .default_tenant()
        .await
        .expect("default tenant");
    let spec = freezer_spec();
    let (created, was_created) = store
        .catalog()
        .put_sensor(tenant.id, "CF-1", &spec, "test", Timestamp(T0))
        .await
        .map(|p| (p.sensor, p.created))
        .expect("create");
    assert!(was_created, "first put creates");
    assert_eq!(created.key, "CF-1");
    assert_eq!(created.tenant, tenant.id);
    assert_eq!(created.name, "Cámara 1");
    assert_eq!(created.kind, SensorKind::Freezer);
    assert_eq!(created.unit.as_deref(), Some("°C"));
    assert_eq!(created.rules, spec.rules);
    assert_eq!(created.stock, Some(1200.0));
    assert_eq!(created.product.as_deref(), Some("pollo"));

    let plain = SensorSpec::default();
    let (updated, was_created) = store
        .catalog()
        .put_sensor(tenant.id, "CF-1", &plain, "test", Timestamp(T0))
        .await
        .map(|p| (p.sensor, p.created))
        .expect("update");
    assert!(!was_created, "second put updates");
    assert_eq!(updated.id, created.id, "same sensor");
    assert_eq!(updated.created_at, created.created_at, "creation time kept");
    assert_eq!(updated.name, "CF-1", "name defaults to the key");
    assert_eq!(updated.kind, SensorKind::Generic);
    assert_eq!(
        (updated.unit, updated.stock, updated.product),
        (None, None, None),
        "fields replaced"
    );
    assert!(updated.rules.is_empty());

    let fetched = store
        .catalog()
        .get_sensor(tenant.id, "CF-1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(fetched.name, "CF-1");
    assert_eq!(
        store
            .catalog()
            .get_sensor(tenant.id, "CF-9")
            .await
            .expect("get"),
        None
    );
    assert_not_found(
        store
            .catalog()
            .put_sensor(TenantId(i64::MAX - 3), "X", &plain, "test", Timestamp(T0))
            .await,
        "put_sensor in an unknown tenant",
    );
}

/// Provisioning creates missing keys only, keeps existing ones unchanged and answers
/// in the order asked; listing is by key.
pub async fn provision_sensors_is_idempotent_and_ordered(store: &dyn Store) {
    let tenant = store
        .catalog()
        .default_tenant()
        .await
        .expect("default tenant");
    let (configured, _) = store
        .catalog()
        .put_sensor(tenant.id, "B", &freezer_spec(), "test", Timestamp(T0))
        .await
        .map(|p| (p.sensor, p.created))
        .expect("put B");

    let keys = ["C", "A", "B"];
    let first = provision(store, &tenant, &keys).await;
    let got: Vec<&str> = first.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(got, keys, "order of the request");
    assert_eq!(
        first[2], configured,
        "an existing sensor is returned unchanged"
    );
    assert_eq!(first[0].name, "C", "defaults: name is the key");
    assert_eq!(first[0].kind, SensorKind::Generic);
    assert!(first[0].rules.is_empty());

    let second = provision(store, &tenant, &["B", "A", "C", "D"]).await;
    assert_eq!(second[0], first[2]);
    assert_eq!(second[1], first[1]);
    assert_eq!(second[2], first[0]);
    assert_eq!(second[3].key, "D");

    let listed: Vec<String> = store
        .catalog()
        .list_sensors(tenant.id, None, usize::MAX)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(listed, ["A", "B", "C", "D"], "listed by key, each once");
    assert!(store
        .catalog()
        .provision_sensors(tenant.id, &[])
        .await
        .expect("empty")
        .is_empty());
    assert_not_found(
        store
            .catalog()
            .provision_sensors(TenantId(i64::MAX - 3), &["Z".to_string()])
            .await,
        "provisioning in an unknown tenant",
    );
}

/// One tenant's sensors are invisible to another; keys are per tenant.
pub async fn tenant_isolation_of_sensors(store: &dyn Store) {
    let (a, a_sensors) = setup(store, &["CF-1", "CF-2"]).await;
    let b = store
        .catalog()
        .create_tenant("b", "B")
        .await
        .expect("tenant b");

    assert!(store
        .catalog()
        .list_sensors(b.id, None, usize::MAX)
        .await
        .expect("list b")
        .is_empty());
    assert_eq!(
        store
            .catalog()
            .get_sensor(b.id, "CF-1")
            .await
            .expect("get in b"),
        None
    );

    let b_sensors = provision(store, &b, &["CF-1"]).await;
    assert_ne!(
        b_sensors[0].id, a_sensors[0].id,
        "same key, different tenant, different sensor"
    );
    assert_eq!(b_sensors[0].tenant, b.id);
    let (updated, created) = store
        .catalog()
        .put_sensor(b.id, "CF-1", &freezer_spec(), "test", Timestamp(T0))
        .await
        .map(|p| (p.sensor, p.created))
        .expect("put in b");
    assert!(!created);
    assert_eq!(updated.id, b_sensors[0].id);
    let a_cf1 = store
        .catalog()
        .get_sensor(a.id, "CF-1")
        .await
        .expect("get in a")
        .expect("exists");
    assert_eq!(a_cf1, a_sensors[0], "a's sensor untouched by b's put");

    let all = store.catalog().all_sensors().await.expect("all sensors");
    assert_eq!(all.len(), 3, "all_sensors spans tenants");
}

/// Keys carry a role; revoked keys stop authenticating at once, stay counted (so the
/// bootstrap never re-opens) and vanish from the list; listing and revoking are tenant
/// scoped.
pub async fn api_key_roles_listing_and_revocation(store: &dyn Store) {
    let catalog = store.catalog();
    let a = catalog.default_tenant().await.expect("default tenant");
    let b = catalog.create_tenant("b", "B").await.expect("tenant b");
    let device = catalog
        .insert_api_key(&NewApiKey {
            tenant: a.id,
            name: "gateway".into(),
            role: Role::Device,
            hash: [7; 32],
        })
        .await
        .expect("device key");
    assert_eq!(
        (device.name.as_str(), device.role),
        ("gateway", Role::Device)
    );
    let admin = catalog
        .insert_api_key(&api_key(a.id, "admin", [8; 32]))
        .await
        .expect("admin key");
    catalog
        .insert_api_key(&api_key(b.id, "other", [9; 32]))
        .await
        .expect("key of b");

    let found = catalog
        .find_api_key([7; 32])
        .await
        .expect("find")
        .expect("device key found");
    assert_eq!(
        (found.id, found.tenant, found.role),
        (device.id, a.id, Role::Device)
    );

    let listed: Vec<_> = catalog
        .list_api_keys(a.id)
        .await
        .expect("list")
        .into_iter()
        .map(|k| (k.id, k.role))
        .collect();
    assert_eq!(
        listed,
        [(device.id, Role::Device), (admin.id, Role::Admin)],
        "the tenant's keys, oldest first, never another tenant's"
    );

    assert_not_found(
        catalog.revoke_api_key(b.id, device.id, Timestamp(T0)).await,
        "revoking another tenant's key",
    );
    let hash = catalog
        .revoke_api_key(a.id, device.id, Timestamp(T0))
        .await
        .expect("revoke");
    assert_eq!(hash, [7; 32], "revoke returns the hash for cache eviction");
    assert!(
        catalog.find_api_key([7; 32]).await.expect("find").is_none(),
        "a revoked key no longer authenticates"
    );
    assert_not_found(
        catalog.revoke_api_key(a.id, device.id, Timestamp(T0)).await,
        "revoking twice",
    );
    let listed: Vec<_> = catalog
        .list_api_keys(a.id)
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, [admin.id], "revoked keys are not listed");
    assert_eq!(
        catalog.count_api_keys().await.expect("count"),
        3,
        "revoked keys still count, so bootstrap never runs again"
    );
}

/// `put_sensor` resolves the unresolved alerts of rules the new spec drops, in the same
/// call, and leaves the alerts of kept rules alone.
pub async fn put_sensor_resolves_alerts_of_removed_rules(store: &dyn Store) {
    let tenant = store
        .catalog()
        .default_tenant()
        .await
        .expect("default tenant");
    let mut spec = freezer_spec();
    spec.rules
        .push(Rule::threshold(Severity::Warning, None, Some(-10.0)));
    spec.normalise().expect("valid spec");
    let put = store
        .catalog()
        .put_sensor(tenant.id, "CF-1", &spec, "test", Timestamp(T0))
        .await
        .expect("create");
    let names: Vec<String> = put.sensor.rules.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names.len(), 2, "two rules: {names:?}");
    let mut alerts = Vec::new();
    for name in &names {
        alerts.push(AlertTransition::Open(NewAlert {
            tenant: tenant.id,
            sensor: put.sensor.id,
            rule: name.clone(),
            kind: RuleKind::Threshold,
            severity: Severity::Critical,
            metric: "temperature".into(),
            value: -5.0,
            message: "warm".into(),
            opened_at: Timestamp(T0),
            details: None,
        }));
    }
    store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: Vec::new(),
            alerts,
        })
        .await
        .expect("open two alerts");

    let mut keep_first = spec.clone();
    keep_first.rules.truncate(1);
    let put = store
        .catalog()
        .put_sensor(
            tenant.id,
            "CF-1",
            &keep_first,
            "ops (rule removed)",
            Timestamp(T0 + 10),
        )
        .await
        .expect("update");
    assert_eq!(
        put.resolved.len(),
        1,
        "one alert resolved: {:?}",
        put.resolved
    );
    let resolved = &put.resolved[0];
    assert_eq!(resolved.rule, names[1]);
    assert_eq!(resolved.state, AlertState::Resolved);
    assert_eq!(resolved.resolved_by.as_deref(), Some("ops (rule removed)"));
    assert_eq!(resolved.resolved_at, Some(Timestamp(T0 + 10)));
    let unresolved: Vec<String> = store
        .alerts()
        .unresolved()
        .await
        .expect("unresolved")
        .into_iter()
        .map(|a| a.rule)
        .collect();
    assert_eq!(
        unresolved,
        [names[0].clone()],
        "the kept rule's alert stays open"
    );
}

/// Keyset pages of sensors: in byte order of their keys, each sensor exactly once, and
/// the per-sensor reads of one page (latest values, unresolved counts) cover exactly the
/// page's sensors.
pub async fn sensor_pages_and_their_scopes(store: &dyn Store) {
    // Byte order: digits < upper case < lower case < multi-byte UTF-8.
    let keys = ["b", "10", "9", "B", "a b", "ä", "z"];
    let (tenant, sensors) = setup(store, &keys).await;
    let other = store
        .catalog()
        .create_tenant("other", "Other")
        .await
        .expect("tenant");
    provision(store, &other, &["a", "c"]).await;
    let mut batch = readings_batch(sensors.iter().map(|s| reading(s.id, 0, 1.0)).collect());
    batch.alerts = sensors
        .iter()
        .map(|s| {
            AlertTransition::Open(NewAlert {
                tenant: tenant.id,
                sensor: s.id,
                rule: "high".into(),
                kind: RuleKind::Threshold,
                severity: Severity::Critical,
                metric: "temperature".into(),
                value: 1.0,
                message: "warm".into(),
                opened_at: Timestamp(T0),
                details: None,
            })
        })
        .collect();
    store.write_batch(batch).await.expect("readings and alerts");

    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .catalog()
            .list_sensors(tenant.id, after.as_deref(), 3)
            .await
            .expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3, "a page holds at most its limit");
        let through = page.last().expect("non-empty").key.clone();
        let scope = SensorScope::Keys {
            after: after.clone(),
            through: through.clone(),
        };
        let page_ids: Vec<SensorId> = page.iter().map(|s| s.id).collect();
        let mut latest: Vec<SensorId> = store
            .readings()
            .latest(tenant.id, &scope)
            .await
            .expect("latest of the page")
            .into_iter()
            .map(|l| l.sensor)
            .collect();
        let mut counted: Vec<SensorId> = store
            .alerts()
            .unresolved_counts(tenant.id, &scope)
            .await
            .expect("counts of the page")
            .into_iter()
            .map(|(s, n)| {
                assert_eq!(n, 1, "one open alert per sensor");
                s
            })
            .collect();
        let mut want = page_ids.clone();
        want.sort();
        latest.sort();
        counted.sort();
        assert_eq!(latest, want, "latest values of exactly the page's sensors");
        assert_eq!(counted, want, "counts of exactly the page's sensors");
        pages.push(page.into_iter().map(|s| s.key).collect::<Vec<_>>());
        after = Some(through);
    }
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    assert_eq!(
        pages.concat(),
        sorted,
        "pages follow byte order, each sensor once"
    );
    assert_eq!(pages.len(), 3, "7 sensors in pages of 3: {pages:?}");
    let none = SensorScope::Keys {
        after: Some("zz".into()),
        through: "zzz".into(),
    };
    assert!(store
        .readings()
        .latest(tenant.id, &none)
        .await
        .expect("empty range")
        .is_empty());
    // Another tenant's range holds none of these sensors.
    let all = SensorScope::Keys {
        after: None,
        through: "\u{10FFFF}".into(),
    };
    let theirs = store
        .alerts()
        .unresolved_counts(other.id, &all)
        .await
        .expect("other tenant");
    assert!(theirs.is_empty(), "{theirs:?}");
}
