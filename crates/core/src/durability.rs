//! How durable a commit is before it returns: one setting shared by the store, the bus
//! and the configuration, so nothing maps one enum onto another.

/// How durable a commit (a bus publish, a store write) is before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// fsync on every commit: survives power loss.
    #[default]
    Full,
    /// Handed to the OS: survives `kill -9` of the process, not power loss; faster.
    Os,
}
