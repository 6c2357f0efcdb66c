//! Database errors translated into what they mean to sluice.

/// What can go wrong in the store, by meaning rather than by driver error code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is shutting down: worth retrying later (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A uniqueness or state rule was violated (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The configuration cannot work (bad URL, unknown scheme).
    #[error("{0}")]
    Config(String),
    /// Migrations failed or are not current.
    #[error("migrations: {0}")]
    Migration(String),
    /// A bug or an unexpected database answer; logged, shown to clients as a generic 500.
    #[error("database error: {0}")]
    Internal(#[source] sqlx::Error),
    /// Stored data that does not decode (e.g. an unknown state string).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            sqlx::Error::Database(db) => {
                // Postgres: admin shutdown / cannot connect now / too many connections /
                // connection failures / database not accepting connections (55000).
                // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6) after the busy timeout.
                let transient = matches!(
                    db.code().as_deref(),
                    Some(
                        "57P01"
                            | "57P02"
                            | "57P03"
                            | "53300"
                            | "08000"
                            | "08001"
                            | "08003"
                            | "08004"
                            | "08006"
                            | "55000"
                            | "5"
                            | "6"
                    )
                );
                if transient {
                    StoreError::Unavailable(error)
                } else {
                    StoreError::Internal(error)
                }
            }
            _ => StoreError::Internal(error),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            sqlx::migrate::MigrateError::Execute(e) => StoreError::from(e),
            other => StoreError::Migration(other.to_string()),
        }
    }
}
