//! Conformance checks for products and prices: per tenant, exact amounts, idempotent
//! imports that are all or nothing, and the price in force at an instant.

use vigia_core::Timestamp;

use super::{setup, T0};
use crate::products::{DEFAULT_DISCARD_AFTER_MS, DEFAULT_KEEP_BELOW_MS};
use crate::{ImportCounts, NewPrice, PriceFilter, PricePerKg, ProductPut, Store, StoreError};

fn product(code: &str, name: &str) -> ProductPut {
    ProductPut {
        code: code.into(),
        name: name.into(),
        weight_kg: None,
        keep_below_ms: DEFAULT_KEEP_BELOW_MS,
        discard_after_ms: DEFAULT_DISCARD_AFTER_MS,
    }
}

fn price(product: &str, currency: &str, micros: i64, valid_from: i64, source: &str) -> NewPrice {
    NewPrice {
        product: product.into(),
        currency: currency.into(),
        per_kg: PricePerKg(micros),
        valid_from: Timestamp(valid_from),
        source: source.into(),
    }
}

/// A put creates then replaces a product (reporting which); products list by code in
/// keyset pages; another tenant sees none of them; a deleted product is gone, and
/// deleting it again is `NotFound`.
pub async fn products_are_kept_per_tenant(store: &dyn Store) {
    let (tenant, _) = setup(store, &[]).await;
    let other = store
        .catalog()
        .create_tenant("other", "Other")
        .await
        .expect("second tenant");
    let products = store.products();
    assert!(matches!(
        products.get(tenant.id, "beef").await,
        Err(StoreError::NotFound)
    ));

    let (stored, created) = products
        .put(tenant.id, product("beef", "Beef"), Timestamp(T0))
        .await
        .expect("create");
    assert!(created, "the first put creates");
    assert_eq!(stored.name, "Beef");
    let replaced = ProductPut {
        weight_kg: Some(12.5),
        keep_below_ms: 3_600_000,
        discard_after_ms: 7_200_000,
        ..product("beef", "Beef, frozen")
    };
    let (stored, created) = products
        .put(tenant.id, replaced, Timestamp(T0 + 1))
        .await
        .expect("replace");
    assert!(!created, "the second put replaces");
    let got = products.get(tenant.id, "beef").await.expect("get");
    assert_eq!(got, stored, "read back as written");
    assert_eq!(
        (
            got.name.as_str(),
            got.weight_kg,
            got.keep_below_ms,
            got.discard_after_ms
        ),
        ("Beef, frozen", Some(12.5), 3_600_000, 7_200_000)
    );
    assert_eq!(got.updated_at, Timestamp(T0 + 1));

    for code in ["fish", "chicken", "Zucchini", "ice-cream"] {
        products
            .put(tenant.id, product(code, code), Timestamp(T0))
            .await
            .expect("put");
    }
    products
        .put(other.id, product("beef", "Other's beef"), Timestamp(T0))
        .await
        .expect("put other");

    // Byte order, as every backend compares codes: upper case first.
    let first = products.list(tenant.id, None, 3).await.expect("page 1");
    let codes: Vec<&str> = first.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(codes, ["Zucchini", "beef", "chicken"]);
    let rest = products
        .list(tenant.id, Some("chicken"), 10)
        .await
        .expect("page 2");
    let codes: Vec<&str> = rest.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(codes, ["fish", "ice-cream"]);
    assert_eq!(
        products.get(other.id, "beef").await.expect("other").name,
        "Other's beef",
        "tenants apart"
    );
    assert!(matches!(
        products.get(other.id, "fish").await,
        Err(StoreError::NotFound)
    ));

    products.delete(tenant.id, "fish").await.expect("delete");
    assert!(matches!(
        products.get(tenant.id, "fish").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        products.delete(tenant.id, "fish").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        products.delete(other.id, "chicken").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        products
            .list(tenant.id, None, 10)
            .await
            .expect("list")
            .len(),
        4
    );
}

/// Importing the same rows again changes nothing; a row stored with another amount is
/// replaced; an import with one identity twice is a `Conflict` that stores none of its
/// rows; amounts come back exactly; the price in force is the latest valid from not after
/// the instant (ties: the last imported); lists filter, page newest first and keep
/// tenants apart.
pub async fn price_imports_are_idempotent_and_exact(store: &dyn Store) {
    let (tenant, _) = setup(store, &[]).await;
    let other = store
        .catalog()
        .create_tenant("other", "Other")
        .await
        .expect("second tenant");
    let prices = store.prices();
    let day = 86_400_000;
    let rows = vec![
        price("beef", "USD", 2_400_000, T0, "csv"),
        price("beef", "USD", 2_550_000, T0 + day, "csv"),
        price("beef", "EUR", 2_200_000, T0, "csv"),
        // Exactness at both ends: one millionth, and more than a float keeps.
        price("fish", "USD", 1, T0, "csv"),
        price("fish", "USD", 9_007_199_254_740_993, T0 + day, "market"),
    ];
    let counts = prices
        .import(tenant.id, rows.clone(), Timestamp(T0))
        .await
        .expect("import");
    assert_eq!(
        counts,
        ImportCounts {
            imported: 5,
            updated: 0,
            unchanged: 0
        }
    );
    let again = prices
        .import(tenant.id, rows.clone(), Timestamp(T0 + 5))
        .await
        .expect("re-import");
    assert_eq!(
        again,
        ImportCounts {
            imported: 0,
            updated: 0,
            unchanged: 5
        },
        "a re-import changes nothing"
    );
    let all = |filter: PriceFilter| async move {
        prices
            .list(
                tenant.id,
                &PriceFilter {
                    limit: 100,
                    ..filter
                },
            )
            .await
            .expect("list")
    };
    let listed = all(PriceFilter::default()).await;
    assert_eq!(listed.len(), 5);
    assert!(
        listed.iter().all(|p| p.imported_at == Timestamp(T0)),
        "nothing rewritten by the re-import"
    );
    assert!(listed.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let huge = listed
        .iter()
        .find(|p| p.source == "market")
        .expect("market row");
    assert_eq!(
        huge.price_per_kg,
        PricePerKg(9_007_199_254_740_993),
        "exact"
    );

    // A correction replaces the amount under the same identity; a new row beside it.
    let corrected = vec![
        price("beef", "USD", 2_450_000, T0, "csv"),
        price("beef", "USD", 2_550_000, T0 + day, "csv"),
        price("beef", "USD", 2_600_000, T0 + day, "market"),
    ];
    let counts = prices
        .import(tenant.id, corrected, Timestamp(T0 + 10))
        .await
        .expect("correction");
    assert_eq!(
        counts,
        ImportCounts {
            imported: 1,
            updated: 1,
            unchanged: 1
        }
    );

    // One identity twice: refused whole, even its new rows.
    let twice = vec![
        price("lamb", "USD", 5_000_000, T0, "csv"),
        price("beef", "EUR", 1_000_000, T0, "csv"),
        price("beef", "EUR", 1_100_000, T0, "csv"),
    ];
    assert!(matches!(
        prices.import(tenant.id, twice, Timestamp(T0 + 20)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        all(PriceFilter {
            product: Some("lamb".into()),
            ..PriceFilter::default()
        })
        .await
        .is_empty(),
        "nothing of a refused import is stored"
    );

    // In force: the latest valid_from not after the instant.
    let in_force = |product: &'static str, currency: Option<&'static str>, at: i64| async move {
        prices
            .in_force(tenant.id, product, currency, Timestamp(at))
            .await
            .expect("in force")
            .map(|p| (p.price_per_kg.0, p.source))
    };
    assert_eq!(
        in_force("beef", Some("USD"), T0 - 1).await,
        None,
        "before any"
    );
    assert_eq!(
        in_force("beef", Some("USD"), T0).await,
        Some((2_450_000, "csv".into())),
        "valid from its instant on, corrected"
    );
    assert_eq!(
        in_force("beef", Some("USD"), T0 + day - 1).await,
        Some((2_450_000, "csv".into()))
    );
    assert_eq!(
        in_force("beef", Some("USD"), T0 + 10 * day).await,
        Some((2_600_000, "market".into())),
        "two valid from one instant: the last imported"
    );
    assert_eq!(
        in_force("beef", Some("EUR"), T0 + 10 * day).await,
        Some((2_200_000, "csv".into()))
    );
    assert_eq!(
        in_force("beef", None, T0).await.map(|p| p.0),
        Some(2_200_000),
        "any currency: the last imported of the latest instant"
    );
    assert_eq!(in_force("lamb", None, T0 + day).await, None);
    assert_eq!(
        prices
            .in_force(other.id, "beef", None, Timestamp(T0 + day))
            .await
            .expect("other"),
        None,
        "tenants apart"
    );

    // Filters and pages.
    let usd_beef = all(PriceFilter {
        product: Some("beef".into()),
        currency: Some("USD".into()),
        ..PriceFilter::default()
    })
    .await;
    assert_eq!(usd_beef.len(), 3);
    let eur = all(PriceFilter {
        currency: Some("EUR".into()),
        ..PriceFilter::default()
    })
    .await;
    assert_eq!(eur.len(), 1);
    let first = prices
        .list(
            tenant.id,
            &PriceFilter {
                limit: 4,
                ..PriceFilter::default()
            },
        )
        .await
        .expect("page 1");
    let second = prices
        .list(
            tenant.id,
            &PriceFilter {
                limit: 4,
                before: first.last().map(|p| p.id),
                ..PriceFilter::default()
            },
        )
        .await
        .expect("page 2");
    assert_eq!(
        (first.len(), second.len()),
        (4, 2),
        "six prices in two pages"
    );
    assert!(first.last().expect("last").id > second[0].id);
    assert!(prices
        .list(
            other.id,
            &PriceFilter {
                limit: 10,
                ..PriceFilter::default()
            }
        )
        .await
        .expect("other list")
        .is_empty());
}
