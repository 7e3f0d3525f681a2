//! The roles a `vigia serve` process can take, as a registry by name: `--roles
//! ingest,worker,api,scheduler,robots` (`VIGIA_ROLES`; default `all`). Later issues add
//! `relay` and `analytics` by adding an entry here; `serve` starts what each
//! selected role needs and nothing else. Every process serves `/healthz`, `/readyz` and
//! `/metrics` whatever its roles.

use std::collections::BTreeSet;

/// One role: its name and what it makes a process do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleInfo {
    pub name: &'static str,
    pub does: &'static str,
    /// Whether the role publishes to or consumes from the bus.
    pub uses_bus: bool,
}

/// Every role, in the order `serve` starts them.
pub const REGISTRY: &[RoleInfo] = &[
    RoleInfo {
        name: "ingest",
        does: "takes readings (POST /api/v1/readings) and makes them durable on the bus",
        uses_bus: true,
    },
    RoleInfo {
        name: "worker",
        does: "judges readings from the bus by the rules and commits them with their alerts",
        uses_bus: true,
    },
    RoleInfo {
        name: "api",
        does: "serves reads, sensor and alert actions, keys, live push and the page",
        uses_bus: false,
    },
    RoleInfo {
        name: "scheduler",
        does: "runs the named background jobs (one leader when scaled out)",
        uses_bus: false,
    },
    RoleInfo {
        name: "robots",
        does: "claims queued robots and runs them on their modules' instances (several processes share the queue)",
        uses_bus: false,
    },
];

/// The roles a process took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(BTreeSet<&'static str>);

impl Roles {
    /// Every registered role.
    pub fn all() -> Self {
        Roles(REGISTRY.iter().map(|r| r.name).collect())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Whether any of the roles needs the bus.
    pub fn use_bus(&self) -> bool {
        REGISTRY.iter().any(|r| r.uses_bus && self.has(r.name))
    }

    /// The names, in registry order, comma separated.
    pub fn describe(&self) -> String {
        REGISTRY
            .iter()
            .filter(|r| self.has(r.name))
            .map(|r| r.name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Parses `all` or a comma-separated list of registered role names.
pub fn parse(text: &str) -> Result<Roles, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("all") {
        return Ok(Roles::all());
    }
    let mut roles = BTreeSet::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let role = REGISTRY
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!(
                    "unknown role `{name}`; known roles: {} (or `all`)",
                    REGISTRY
                        .iter()
                        .map(|r| r.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        roles.insert(role.name);
    }
    if roles.is_empty() {
        return Err(
            "no role given; use `all` or some of ingest, worker, api, scheduler, robots".into(),
        );
    }
    Ok(Roles(roles))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_all() {
        assert_eq!(parse("all").unwrap(), Roles::all());
        let r = parse(" api , ingest").unwrap();
        assert_eq!(r.describe(), "ingest,api");
        assert!(r.use_bus());
        assert!(!parse("api,scheduler").unwrap().use_bus());
        for (bad, needle) in [
            ("cook", "unknown role `cook`"),
            ("", "no role"),
            (",", "no role"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }
}
