//! Schema migrations: the files of `migrations/`, applied in order.
//!
//! [`migrate`] takes a session advisory lock, creates `schema_migrations`
//! if needed, applies every migration not recorded there — each in its own
//! transaction, recorded in the same transaction — and unlocks. Nodes that
//! start together queue on the lock; the first applies, the others find
//! everything recorded.
//!
//! What this module must never do: apply a migration twice, apply one
//! partly, or run against a schema newer than it knows.

use tokio_postgres::Client;

use crate::PgError;

/// One schema migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version (applied in ascending order).
    pub version: i32,
    /// A short name.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../migrations/0001_init.sql"),
}];

/// The advisory lock key (`"ternqueu"` in ASCII).
const LOCK_KEY: i64 = 0x7465_726e_7175_6575;

/// Bring the schema up to date; returns the versions applied now (empty
/// when it already was).
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, PgError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(PgError::db("take the migration lock"))?;
    let result = apply(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .map_err(PgError::db("release the migration lock"));
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn apply(client: &mut Client) -> Result<Vec<i32>, PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(PgError::db("create schema_migrations"))?;
    let done: Vec<i32> = client
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(PgError::db("read schema_migrations"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(&found) = done.iter().max()
        && found > known
    {
        return Err(PgError::SchemaTooNew { found, known });
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        let failed = |source| PgError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        applied.push(m.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_in_order_and_named_like_their_files() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i32::try_from(i).unwrap() + 1);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
