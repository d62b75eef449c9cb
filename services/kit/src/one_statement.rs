//! Applying an event as one statement.
//!
//! A consumer's transaction costs a round trip to PostgreSQL for each of `BEGIN`, the
//! inbox row, the change, the outbox row of the answer and `COMMIT`. At a few events a
//! second each one wakes an idle process, so on deletion's path (three portals, then
//! device-service folding their receipts) those round trips were most of the latency. A
//! handler that can say its change as data-modifying CTEs
//! ([`Change::OneStatement`]) is applied by one statement instead: the inbox row, the
//! change, the events it emits with their `NOTIFY`, all or nothing, in one round trip
//! (between the serializable transaction's `BEGIN` and `COMMIT`).
//!
//! [`Change::OneStatement`]: crate::inbox::Change::OneStatement

use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;
use sqlx::{Arguments, Encode, Type};

use crate::outbox::Outbox;
use crate::sql::Schema;

/// A handler's change, as CTEs of the statement the consumer runs.
#[derive(Debug, Clone)]
pub struct OneStatement {
    /// `name AS (…)` CTEs, comma-separated. Data-modifying ones always run; a plain
    /// `SELECT` one runs only when another uses it. Tables of the consumer's schema may be
    /// named `{schema}.<table>` ([`crate::sql`]); values come from [`Params::bind`].
    pub ctes: String,
    /// The CTE among `ctes` whose rows `(event_id uuid, subject text, payload bytea,
    /// receipt jsonb)` go to the service's outbox, if the change emits events (see
    /// [`Outbox::insert_and_notify_sql`]).
    pub emits: Option<&'static str>,
}

impl OneStatement {
    /// The whole statement for a consumer whose inbox and outbox are in `schema`: the
    /// inbox row (`$1` consumer, `$2` event ID; plain, so a duplicate fails it), the
    /// handler's CTEs, then the outbox rows of what they emit, keeping `traceparent`
    /// (bound after the handler's values), and their `NOTIFY`.
    ///
    /// # Errors
    /// The encoding error of the first value in `params` that failed.
    pub(crate) fn into_query(
        self,
        schema: Schema,
        mut params: Params,
        traceparent: Option<String>,
    ) -> Result<Query<'static, Postgres, PgArguments>, sqlx::error::BoxDynError> {
        let tail = match self.emits {
            Some(source) => {
                let traceparent = params.bind(traceparent);
                format!(", {}", Outbox::insert_and_notify_sql(source, &traceparent))
            }
            None => " SELECT 1".to_owned(),
        };
        let template = format!(
            "WITH inbox AS (INSERT INTO {{schema}}.inbox (consumer, event_id) VALUES ($1, $2)), {}{tail}",
            self.ctes
        );
        Ok(sqlx::query_with(
            schema.sql(&template),
            params.into_arguments()?,
        ))
    }
}

/// The statement's parameters: the inbox row's first, then the handler's.
#[derive(Default)]
pub struct Params {
    args: PgArguments,
    error: Option<sqlx::error::BoxDynError>,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("len", &self.args.len())
            .finish()
    }
}

impl Params {
    /// Binds `value` and returns its placeholder (`$n`) for the SQL text.
    pub fn bind<'t, T>(&mut self, value: T) -> String
    where
        T: Encode<'t, Postgres> + Type<Postgres> + 't,
    {
        if let Err(err) = self.args.add(value) {
            self.error.get_or_insert(err);
        }
        format!("${}", self.args.len())
    }

    /// The arguments, or the first value that failed to encode.
    ///
    /// # Errors
    /// The encoding error of the first value that failed.
    pub fn into_arguments(self) -> Result<PgArguments, sqlx::error::BoxDynError> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(self.args),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_count_from_the_bound_values() {
        let mut params = Params::default();
        assert_eq!(params.bind("consumer"), "$1");
        assert_eq!(params.bind(7_i64), "$2");
        assert_eq!(params.bind(vec!["a".to_owned()]), "$3");
        assert!(params.into_arguments().is_ok());
    }
}
