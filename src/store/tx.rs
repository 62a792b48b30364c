//! [`Tx`]: one open transaction on either backend. Domain workers (the inbox processor, the reward
//! engine) run several store operations inside one `Tx`, so a domain change and the outbox rows it
//! causes commit together or not at all. The SQL itself stays in `store/` as methods on `Tx`.

use sqlx::{Postgres, Sqlite, Transaction};

use super::{Backend, BackendKind, Store, StoreError};

pub(crate) enum TxInner {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// An open transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    pub(crate) inner: TxInner,
}

/// Runs `$body` with `$conn` bound to the transaction's connection, compiled once per backend.
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match &mut $tx.inner {
            crate::store::tx::TxInner::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            crate::store::tx::TxInner::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use on_tx;

impl Store {
    /// Begin a read-only snapshot for a report (PostgreSQL: repeatable read).
    pub async fn begin_read(&self) -> Result<Tx, StoreError> {
        let inner = match &self.backend {
            Backend::Sqlite(pool) => TxInner::Sqlite(pool.begin_with("BEGIN").await?),
            Backend::Postgres(pool) => TxInner::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
            ),
        };
        Ok(Tx { inner })
    }

    /// Begin a write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`),
    /// so a transaction that reads then writes never fails halfway with SQLITE_BUSY.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let inner = match &self.backend {
            Backend::Sqlite(pool) => TxInner::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres(pool) => TxInner::Postgres(pool.begin().await?),
        };
        Ok(Tx { inner })
    }
}

impl Tx {
    pub fn kind(&self) -> BackendKind {
        match self.inner {
            TxInner::Sqlite(_) => BackendKind::Sqlite,
            TxInner::Postgres(_) => BackendKind::Postgres,
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self.inner {
            TxInner::Sqlite(t) => t.commit().await?,
            TxInner::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    /// Roll back now. Dropping a `Tx` rolls back too, but only when its connection is next used:
    /// until then the locks it took (partitions, the reconcile lock) stay held, so a worker
    /// giving up a transaction calls this.
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.inner {
            TxInner::Sqlite(t) => t.rollback().await?,
            TxInner::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }

    /// Mark a point to roll back to if one step of a batch fails.
    pub async fn savepoint(&mut self) -> Result<(), StoreError> {
        on_tx!(self, |c| sqlx::query("SAVEPOINT step")
            .execute(c)
            .await?
            .rows_affected());
        Ok(())
    }

    pub async fn release_savepoint(&mut self) -> Result<(), StoreError> {
        on_tx!(self, |c| sqlx::query("RELEASE SAVEPOINT step")
            .execute(c)
            .await?
            .rows_affected());
        Ok(())
    }

    pub async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        on_tx!(self, |c| {
            sqlx::query("ROLLBACK TO SAVEPOINT step")
                .execute(&mut *c)
                .await?;
            sqlx::query("RELEASE SAVEPOINT step")
                .execute(c)
                .await?
                .rows_affected()
        });
        Ok(())
    }
}
