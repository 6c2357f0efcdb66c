//! What differs between the two databases' SQL — the [`Dialect`] each backend implements —
//! and the sqlx bounds the shared queries need, stated here once.
//!
//! sqlx's generic bounds (`T: Encode<'q, DB>`, executors over `&mut DB::Connection`) are not
//! implied by a trait's where clauses, so they would have to be repeated on every generic
//! function. Instead they are supertraits of [`Dialect`] ([`Binds`], [`Decodes`], [`Run`]),
//! which are implied: code generic over `D: Dialect` needs no other bound.

use crate::model::Timestamp;
use crate::StoreError;
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::migrate::Migrate;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};
use std::str::FromStr;

/// A database the shared queries run on; implemented by each backend for its sqlx database.
pub(crate) trait Dialect:
    Database<Connection: Migrate>
    + Run
    + Binds<i64>
    + Binds<Option<i64>>
    + Binds<bool>
    + Binds<Option<bool>>
    + Binds<String>
    + Binds<Option<String>>
    + Binds<Json<Value>>
    + Binds<f64>
    + Binds<Option<f64>>
    + Decodes<i64>
    + Decodes<Option<i64>>
    + Decodes<bool>
    + Decodes<String>
    + Decodes<Option<String>>
    + Decodes<f64>
    + Decodes<Option<f64>>
{
    /// Appended to a `SELECT` to lock its rows until the transaction ends (empty where the
    /// database serialises writers anyway).
    const FOR_UPDATE: &'static str;
    /// Appended to a `SELECT` to lock its rows, passing over those another transaction holds.
    const SKIP_LOCKED: &'static str;
    /// The size in bytes of the `payload` column as JSON text, computed by the database (so
    /// a listing can be cut to a byte budget before any payload is fetched).
    const PAYLOAD_BYTES: &'static str;
    /// A `FROM` clause of the queue (`q`) and its events (`e`: id, type, state, external_id,
    /// created_at) that the planner must read queue first — a listing of pending events then
    /// costs the queue, never a walk through the settled history in date order.
    const QUEUED_EVENTS: &'static str;

    /// Binds a timestamp in the form the database stores it.
    fn push_timestamp(query: &mut QueryBuilder<'_, Self>, at: Timestamp);
    /// The current time: the database's own clock where it has one, else `now` bound.
    fn push_now(query: &mut QueryBuilder<'_, Self>, now: Timestamp);
    /// `column IN (ids)`, written the way the database takes a list best.
    fn push_in_ids(query: &mut QueryBuilder<'_, Self>, column: &str, ids: &[i64]);
    /// `column IN (values)`, written the way the database takes a list best.
    fn push_in_texts(query: &mut QueryBuilder<'_, Self>, column: &str, values: &[String]);

    fn timestamp(row: &Self::Row, column: &str) -> Result<Timestamp, StoreError>;
    fn opt_timestamp(row: &Self::Row, column: &str) -> Result<Option<Timestamp>, StoreError>;
    fn json(row: &Self::Row, column: &str) -> Result<Value, StoreError>;
}

/// The database can bind a `T`.
pub(crate) trait Binds<T>: Database {
    fn push_bind_value(query: &mut QueryBuilder<'_, Self>, value: T);
}

impl<DB: Database, T> Binds<T> for DB
where
    T: 'static + for<'q> Encode<'q, DB> + Type<DB>,
{
    fn push_bind_value(query: &mut QueryBuilder<'_, DB>, value: T) {
        query.push_bind(value);
    }
}

/// The database can decode a `T` from a named column.
pub(crate) trait Decodes<T>: Database {
    fn decode_column(row: &Self::Row, column: &str) -> Result<T, sqlx::Error>;
}

impl<DB: Database, T> Decodes<T> for DB
where
    T: for<'r> Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    fn decode_column(row: &DB::Row, column: &str) -> Result<T, sqlx::Error> {
        row.try_get(column)
    }
}

/// Runs a built query on a connection. Implemented per database (by one macro) because what
/// a query builder's arguments need to run (`IntoArguments`) is implemented by each driver for
/// its own argument type, which no generic bound can name.
pub(crate) trait Run: Database {
    fn fetch_all<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<'_, Self>,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>>;
    fn fetch_optional<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<'_, Self>,
    ) -> BoxFuture<'c, Result<Option<Self::Row>, sqlx::Error>>;
    fn fetch_one<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<'_, Self>,
    ) -> BoxFuture<'c, Result<Self::Row, sqlx::Error>>;
    fn execute<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<'_, Self>,
    ) -> BoxFuture<'c, Result<Self::QueryResult, sqlx::Error>>;
}

macro_rules! impl_run {
    ($database:ty) => {
        impl Run for $database {
            fn fetch_all<'c>(
                conn: &'c mut Self::Connection,
                query: &'c mut QueryBuilder<'_, Self>,
            ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>> {
                Box::pin(query.build().fetch_all(conn))
            }
            fn fetch_optional<'c>(
                conn: &'c mut Self::Connection,
                query: &'c mut QueryBuilder<'_, Self>,
            ) -> BoxFuture<'c, Result<Option<Self::Row>, sqlx::Error>> {
                Box::pin(query.build().fetch_optional(conn))
            }
            fn fetch_one<'c>(
                conn: &'c mut Self::Connection,
                query: &'c mut QueryBuilder<'_, Self>,
            ) -> BoxFuture<'c, Result<Self::Row, sqlx::Error>> {
                Box::pin(query.build().fetch_one(conn))
            }
            fn execute<'c>(
                conn: &'c mut Self::Connection,
                query: &'c mut QueryBuilder<'_, Self>,
            ) -> BoxFuture<'c, Result<Self::QueryResult, sqlx::Error>> {
                Box::pin(query.build().execute(conn))
            }
        }
    };
}

impl_run!(sqlx::Postgres);
impl_run!(sqlx::Sqlite);

/// Typed reads of a row of any [`Dialect`], so each `*_from_row` is written once.
pub(crate) trait RowExt {
    type Dialect: Dialect;

    fn value<T>(&self, column: &str) -> Result<T, StoreError>
    where
        Self::Dialect: Decodes<T>;
    /// A closed-set column (state, status, …); an unknown value is a corrupt row.
    fn text_enum<T: FromStr<Err = String>>(&self, column: &str) -> Result<T, StoreError>;
    fn timestamp(&self, column: &str) -> Result<Timestamp, StoreError>;
    fn opt_timestamp(&self, column: &str) -> Result<Option<Timestamp>, StoreError>;
    fn json(&self, column: &str) -> Result<Value, StoreError>;
}

impl<R, D> RowExt for R
where
    R: Row<Database = D>,
    D: Dialect<Row = R>,
{
    type Dialect = D;

    fn value<T>(&self, column: &str) -> Result<T, StoreError>
    where
        D: Decodes<T>,
    {
        Ok(D::decode_column(self, column)?)
    }

    fn text_enum<T: FromStr<Err = String>>(&self, column: &str) -> Result<T, StoreError> {
        parse_text(self.value(column)?)
    }

    fn timestamp(&self, column: &str) -> Result<Timestamp, StoreError> {
        D::timestamp(self, column)
    }

    fn opt_timestamp(&self, column: &str) -> Result<Option<Timestamp>, StoreError> {
        D::opt_timestamp(self, column)
    }

    fn json(&self, column: &str) -> Result<Value, StoreError> {
        D::json(self, column)
    }
}

/// Decodes a closed-set column (state, status, …); an unknown value is a corrupt row.
pub(crate) fn parse_text<T: FromStr<Err = String>>(text: String) -> Result<T, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

/// The [`Dialect`]'s pieces as methods of the query builder, so shared queries read as SQL.
pub(crate) trait QueryBuilderExt<D: Dialect> {
    /// `push_bind` for code generic over the database.
    fn push_value<T>(&mut self, value: T) -> &mut Self
    where
        D: Binds<T>;
    fn push_timestamp(&mut self, at: Timestamp) -> &mut Self;
    fn push_now(&mut self, now: Timestamp) -> &mut Self;
    fn push_in_ids(&mut self, column: &str, ids: &[i64]) -> &mut Self;
    fn push_in_texts(&mut self, column: &str, values: &[String]) -> &mut Self;

    fn fetch_all<'c>(
        &'c mut self,
        conn: &'c mut D::Connection,
    ) -> BoxFuture<'c, Result<Vec<D::Row>, sqlx::Error>>;
    fn fetch_optional<'c>(
        &'c mut self,
        conn: &'c mut D::Connection,
    ) -> BoxFuture<'c, Result<Option<D::Row>, sqlx::Error>>;
    fn fetch_one<'c>(
        &'c mut self,
        conn: &'c mut D::Connection,
    ) -> BoxFuture<'c, Result<D::Row, sqlx::Error>>;
    fn execute<'c>(
        &'c mut self,
        conn: &'c mut D::Connection,
    ) -> BoxFuture<'c, Result<D::QueryResult, sqlx::Error>>;
}

impl<D: Dialect> QueryBuilderExt<D> for QueryBuilder<'_, D> {
    fn push_value<T>(&mut self, value: T) -> &mut Self
    where
        D: Binds<T>,
    {
        D::push_bind_value(self, value);
        self
    }

    fn push_timestamp(&mut self, at: Timestamp) -> &mut Self {
        D::push_timestamp(self, at);
        self
    }

    fn push_now(&mut self, now: Timestamp) -> &mut Self {
        D::push_now(self, now);
        self
    }

    fn push_in_ids(&mut self, column: &str, ids: &[i64]) -> &mut Self {
        D::push_in_ids(self, column, ids);
        self
    }

    fn push_in_texts(&mut self, column: &str, values: &[String]) -> &mut Self {
        D::push_in_texts(self, column, values);
        self
    }

    fn fetch_all<'c>(
        &'c mut self,
        conn: &'c mut D::Connection,
    ) -> BoxFuture<'c, Result<Vec<D::Row>, sqlx::Error>> {
        D::fetch_all(conn, self)
    }

    fn fetch_optional<'c>(
        &'c mut self,
        conn: &'c mut D::Connection,
    ) -> BoxFuture<'c, Result<Option<D::Row>, sqlx::Error>> {
        D::fetch_optional(conn, self)
    }

    fn fetch_one<'c>(
        &'c mut self,
        conn: &'c mut D::Connection,
    ) -> BoxFuture<'c, Result<D::Row, sqlx::Error>> {
        D::fetch_one(conn, self)
    }

    fn execute<'c>(
        &'c mut self,
        conn: &'c mut D::Connection,
    ) -> BoxFuture<'c, Result<D::QueryResult, sqlx::Error>> {
        D::execute(conn, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Postgres, Sqlite};

    #[test]
    fn id_lists_are_an_array_on_postgres_and_placeholders_on_sqlite() {
        let mut query = QueryBuilder::<Postgres>::new("SELECT 1 WHERE ");
        query.push_in_ids("id", &[1, 2, 3]);
        assert_eq!(query.sql(), "SELECT 1 WHERE id = ANY($1::bigint[])");

        let mut query = QueryBuilder::<Sqlite>::new("SELECT 1 WHERE ");
        query.push_in_ids("id", &[1, 2, 3]);
        assert_eq!(query.sql(), "SELECT 1 WHERE id IN (?, ?, ?)");
    }
}
