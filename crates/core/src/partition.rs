//! Sensor affinity: which readings partition a sensor's readings travel on, so that one
//! worker process judges all of a sensor's readings (rate windows, resolve holds and
//! duration totals need them in one place).
//!
//! The hash must give the same answer in every process and every build, for as long as
//! a bus holds messages: it is FNV-1a 64 over the tenant id (little-endian) and the
//! sensor key's bytes, written out here rather than taken from `std` (whose hashers are
//! seeded per process or may change between releases).

use crate::TenantId;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// The stable hash of (tenant, sensor key).
pub fn sensor_hash(tenant: TenantId, sensor: &str) -> u64 {
    // The tenant is always 8 bytes, so (tenant, key) pairs cannot run into each other.
    let hash = fnv1a(FNV_OFFSET, &tenant.0.to_le_bytes());
    fnv1a(hash, sensor.as_bytes())
}

/// The partition (0 ≤ p < `partitions`) of a sensor's readings; always 0 for one
/// partition (or zero, taken as one).
pub fn partition_of(tenant: TenantId, sensor: &str, partitions: usize) -> usize {
    if partitions <= 1 {
        return 0;
    }
    (sensor_hash(tenant, sensor) % partitions as u64) as usize
}

/// The rendezvous weight of `member` for `partition`: the member with the highest weight
/// owns the partition (`vigia_ingest::affinity`). FNV-1a over the member name and the
/// partition number, then a 64-bit finaliser (from SplitMix64), because FNV alone leaves
/// names that differ in their last byte with weights close together; fixed like
/// [`sensor_hash`], so every process ranks the members alike.
pub fn member_weight(member: &str, partition: usize) -> u64 {
    let hash = fnv1a(FNV_OFFSET, member.as_bytes());
    let mut z = fnv1a(hash, &(partition as u32).to_le_bytes());
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fixed_across_processes_and_builds() {
        // Changing these values moves sensors between partitions on a live bus: a worker
        // would judge readings without their history. Never change them.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(sensor_hash(TenantId(1), "CF-1"), 0x5726d06982d04577);
        assert_eq!(partition_of(TenantId(1), "CF-1", 8), 7);
        assert_eq!(partition_of(TenantId(1), "CF-1", 16), 7);
    }

    #[test]
    fn tenants_and_keys_spread_over_the_partitions() {
        assert_eq!(partition_of(TenantId(3), "x", 1), 0);
        assert_eq!(partition_of(TenantId(3), "x", 0), 0);
        let mut counts = [0usize; 8];
        for tenant in 1..=4 {
            for i in 0..1000 {
                counts[partition_of(TenantId(tenant), &format!("CF-{i}"), 8)] += 1;
            }
        }
        // 4,000 sensors over 8 partitions: 500 each on average; none far off.
        for (p, &n) in counts.iter().enumerate() {
            assert!(
                (400..=600).contains(&n),
                "partition {p} got {n}: {counts:?}"
            );
        }
        // The tenant takes part: the same keys of two tenants land elsewhere mostly.
        let same = (0..1000)
            .filter(|i| {
                let key = format!("CF-{i}");
                partition_of(TenantId(1), &key, 16) == partition_of(TenantId(2), &key, 16)
            })
            .count();
        assert!(
            same < 150,
            "{same} of 1,000 keys share a partition across tenants"
        );
    }
}
