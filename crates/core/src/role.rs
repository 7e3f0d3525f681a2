//! What a caller may do: the role of an API key (and, later, of a user).

use serde::{Deserialize, Serialize};

/// The role of an API key. Every key of a tenant has exactly one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including keys and the audit log.
    #[default]
    Admin,
    /// Reads, acts on alerts and sensors, and may post readings.
    Operator,
    /// Reads only.
    Viewer,
    /// Posts readings only (a device or gateway).
    Device,
}

/// What a request needs to be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Post readings.
    Ingest,
    /// Read sensors, readings, alerts and live feeds.
    Read,
    /// Change sensors and alerts.
    Operate,
    /// Manage keys, read the audit log and jobs.
    Administer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Viewer, Role::Device];

    /// The name used in the API, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Device => "device",
        }
    }

    /// Whether this role grants `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(permission, Ingest | Read | Operate),
            Role::Viewer => matches!(permission, Read),
            Role::Device => matches!(permission, Ingest),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}`: expected admin, operator, viewer or device")
            })
    }
}

impl Permission {
    /// The name used in problem details (`403 … needs the `operate` permission`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Ingest => "ingest",
            Permission::Read => "read",
            Permission::Operate => "operate",
            Permission::Administer => "administer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_by_role() {
        use Permission::*;
        let table = [
            (Role::Admin, [true, true, true, true]),
            (Role::Operator, [true, true, true, false]),
            (Role::Viewer, [false, true, false, false]),
            (Role::Device, [true, false, false, false]),
        ];
        for (role, expected) in table {
            let got = [Ingest, Read, Operate, Administer].map(|p| role.allows(p));
            assert_eq!(got, expected, "{role}");
        }
    }

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .contains("expected admin"));
    }
}
