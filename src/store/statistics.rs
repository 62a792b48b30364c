//! PostgreSQL's planner statistics, kept up with the data between autovacuum's rounds: the
//! processor calls [`Store::refresh_statistics`] with each baseline refresh.

use super::{Backend, Store, StoreError};

/// The advisory lock under which one replica at a time refreshes the statistics.
const STATISTICS_LOCK: i64 = 0x7265_6673_7461_7404;

impl Store {
    /// PostgreSQL: take fresh statistics of every table of ours that changed by more than half
    /// (and at least 1,000 rows) since its last ANALYZE; returns the tables analysed. Autovacuum
    /// looks at a database once a minute, so after a new deployment, an import or the first
    /// minute of a burst the planner plans by statistics of a table a fraction of its size, or
    /// without the values it holds now.
    pub async fn refresh_statistics(&self) -> Result<Vec<String>, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(Vec::new());
        };
        let mut connection = pool.acquire().await?;
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(STATISTICS_LOCK)
            .fetch_one(&mut *connection)
            .await?;
        if !got {
            return Ok(Vec::new());
        }
        let analysed = async {
            let stale: Vec<(String,)> = sqlx::query_as(
                "SELECT quote_ident(s.relname) FROM pg_stat_user_tables s \
                 JOIN pg_class c ON c.oid = s.relid \
                 WHERE s.schemaname = current_schema() \
                   AND s.n_mod_since_analyze > GREATEST(1000, c.reltuples / 2) \
                 ORDER BY s.relname",
            )
            .fetch_all(&mut *connection)
            .await?;
            for (table,) in &stale {
                sqlx::query(&format!("ANALYZE {table}"))
                    .execute(&mut *connection)
                    .await?;
            }
            Ok::<_, StoreError>(stale.into_iter().map(|(t,)| t).collect())
        }
        .await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(STATISTICS_LOCK)
            .execute(&mut *connection)
            .await?;
        analysed
    }
}
