//! Conformance checks for leases: one holder at a time, renewal, expiry, release.

use std::time::Duration;

use vigia_core::Timestamp;

use super::T0;
use crate::Store;

/// A free lease is taken; a held one is refused to others and renewed for its holder;
/// an expired one is taken over; release frees it only for its holder.
pub async fn leases_one_holder_at_a_time(store: &dyn Store) {
    let leases = store.leases();
    let ttl = Duration::from_secs(10);
    let at = |ms: i64| Timestamp(T0 + ms);
    assert!(leases
        .try_acquire("scheduler", "a", ttl, at(0))
        .await
        .expect("acquire"));
    assert!(
        !leases
            .try_acquire("scheduler", "b", ttl, at(1_000))
            .await
            .expect("b tries"),
        "held by a"
    );
    assert!(
        leases
            .try_acquire("scheduler", "a", ttl, at(9_000))
            .await
            .expect("renew"),
        "a renews"
    );
    assert!(
        !leases
            .try_acquire("scheduler", "b", ttl, at(12_000))
            .await
            .expect("b tries"),
        "the renewal moved the expiry to 19 s"
    );
    assert!(
        leases
            .try_acquire("other", "b", ttl, at(12_000))
            .await
            .expect("other lease"),
        "leases are independent by name"
    );
    assert!(
        leases
            .try_acquire("scheduler", "b", ttl, at(19_000))
            .await
            .expect("take over"),
        "an expired lease is taken over"
    );
    leases
        .release("scheduler", "a")
        .await
        .expect("release by a non-holder");
    assert!(
        !leases
            .try_acquire("scheduler", "a", ttl, at(20_000))
            .await
            .expect("a tries"),
        "a release by a non-holder changes nothing"
    );
    leases.release("scheduler", "b").await.expect("release");
    assert!(
        leases
            .try_acquire("scheduler", "a", ttl, at(20_000))
            .await
            .expect("a again"),
        "a released lease is free"
    );

    // Who holds what under a prefix: live leases only, by name, other prefixes left out.
    for (name, holder) in [("p/2", "w1"), ("p/0", "w2"), ("p/1", "w1"), ("q/0", "w3")] {
        assert!(leases
            .try_acquire(name, holder, ttl, at(30_000))
            .await
            .unwrap());
    }
    assert!(leases
        .try_acquire("p/3", "w2", Duration::from_secs(1), at(30_000))
        .await
        .unwrap());
    let held = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, h)| (n.to_string(), h.to_string()))
            .collect()
    };
    assert_eq!(
        leases.holders("p/", at(30_500)).await.expect("holders"),
        held(&[("p/0", "w2"), ("p/1", "w1"), ("p/2", "w1"), ("p/3", "w2")])
    );
    assert_eq!(
        leases.holders("p/", at(31_000)).await.expect("holders"),
        held(&[("p/0", "w2"), ("p/1", "w1"), ("p/2", "w1")]),
        "an expired lease holds nothing"
    );
    leases.release("p/1", "w1").await.unwrap();
    assert_eq!(
        leases.holders("p/", at(31_000)).await.unwrap(),
        held(&[("p/0", "w2"), ("p/2", "w1")])
    );
    assert_eq!(
        leases.holders("none/", at(31_000)).await.unwrap(),
        held(&[])
    );
}
