//! Tests that talk to a real service (PostgreSQL, MariaDB, Redis, NATS, Mosquitto, a
//! browser) skip with a printed notice when it is unreachable, and fail instead when
//! `VIGIA_REQUIRE_SERVICES=1` (CI), so a stopped service can never turn CI green.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The environment variable CI sets to make missing services fail tests.
pub const REQUIRE_SERVICES_ENV: &str = "VIGIA_REQUIRE_SERVICES";

/// True when missing services must fail tests rather than skip them.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV).is_ok_and(|v| v == "1")
}

/// Skips (prints a notice, returns `false`) or fails (panics, under
/// `VIGIA_REQUIRE_SERVICES=1`) a test that cannot run because of `why`.
pub fn skip_or_fail(test: &str, why: &str) -> bool {
    if services_required() {
        panic!("{test} cannot run: {why} ({REQUIRE_SERVICES_ENV}=1)");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// Whether `service` answers a TCP connect at `addr` (`host:port`) within two seconds;
/// when it does not, the test is skipped or failed as [`skip_or_fail`] says.
pub fn service_available(service: &str, addr: &str) -> bool {
    let reachable = addr.to_socket_addrs().ok().is_some_and(|mut addrs| {
        addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    });
    reachable || skip_or_fail(service, &format!("nothing answers at {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_port_is_unavailable_unless_required() {
        // Port 1 on loopback is never a service here.
        if !services_required() {
            assert!(!service_available("nothing", "127.0.0.1:1"));
        }
    }
}
