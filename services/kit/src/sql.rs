//! Statements over a service's own schema: the kit's one way of building SQL at run time.
//!
//! Each service keeps its tables in a schema of its own (`customer`, `device`, `msp`,
//! `reporting`), and the kit's runtime (the outbox relay, the inbox, one-statement
//! applies) runs the same statements in whichever schema it serves. The schema's name is
//! therefore the only part of those statements not known when they are written. A
//! statement is a template that names its tables `{schema}.<table>`; [`Schema::sql`] puts
//! the name in; every value is bound (`$1`, `$2`, …), never written into the text.
//!
//! A name is checked when the [`Schema`] is made (at compile time for a `const`), so the
//! text it puts in can only be a plain identifier.

use sqlx::AssertSqlSafe;

/// The placeholder [`Schema::sql`] replaces with the schema's name.
pub const SCHEMA_PLACEHOLDER: &str = "{schema}";

/// A service's PostgreSQL schema, as the one dynamic part of the kit's SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema(&'static str);

impl Schema {
    /// The schema `name`.
    ///
    /// # Panics
    /// When `name` is not a plain lowercase identifier (`[a-z_][a-z0-9_]*`, as every
    /// service's schema is): at compile time when called in a `const`.
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(!bytes.is_empty(), "a schema name is not empty");
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let letter = b.is_ascii_lowercase() || b == b'_';
            assert!(
                letter || (i > 0 && b.is_ascii_digit()),
                "a schema name is a plain lowercase identifier"
            );
            i += 1;
        }
        Self(name)
    }

    /// The schema's name.
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// `template` with every `{schema}` replaced by the schema's name, for `sqlx::query`
    /// and its kin. The template holds SQL and `$n` placeholders only: values are bound.
    pub fn sql(self, template: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(template.replace(SCHEMA_PLACEHOLDER, self.0))
    }
}

/// Appends `value` to a line of `COPY … FROM STDIN`'s text format, escaped: `\`, tab,
/// newline and carriage return, the characters that format gives a meaning
/// (PostgreSQL's documentation, "COPY", "Text Format").
pub fn push_copy_field(buf: &mut Vec<u8>, value: &str) {
    for byte in value.bytes() {
        match byte {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            other => buf.push(other),
        }
    }
}

/// Runs `copy` (a `COPY … FROM STDIN` in the text format) with `data` under a savepoint of
/// the open transaction `conn`: `true` when every row went in, `false` (rolled back to
/// the savepoint, the transaction usable) when a row broke a unique constraint. A
/// projection's fast path for many rows, with its exact statement as the fallback.
///
/// # Errors
/// Database errors other than a unique violation (SQLSTATE 23505).
pub async fn copy_unless_conflict(
    conn: &mut sqlx::PgConnection,
    copy: &'static str,
    data: Vec<u8>,
) -> Result<bool, sqlx::Error> {
    sqlx::query("SAVEPOINT copy_rows")
        .execute(&mut *conn)
        .await?;
    let copied = async {
        let mut stream = conn.copy_in_raw(copy).await?;
        stream.send(data).await?;
        stream.finish().await
    }
    .await;
    match copied {
        Ok(_) => {
            sqlx::query("RELEASE SAVEPOINT copy_rows")
                .execute(&mut *conn)
                .await?;
            Ok(true)
        }
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
            sqlx::query("ROLLBACK TO SAVEPOINT copy_rows")
                .execute(&mut *conn)
                .await?;
            Ok(false)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_replaces_every_placeholder() {
        let AssertSqlSafe(sql) = Schema::new("msp")
            .sql("INSERT INTO {schema}.inbox SELECT * FROM {schema}.outbox WHERE id = $1");
        assert_eq!(
            sql,
            "INSERT INTO msp.inbox SELECT * FROM msp.outbox WHERE id = $1"
        );
    }

    #[test]
    #[should_panic(expected = "plain lowercase identifier")]
    fn a_name_that_is_not_an_identifier_is_refused() {
        Schema::new("msp; DROP TABLE x");
    }

    #[test]
    #[should_panic(expected = "plain lowercase identifier")]
    fn a_name_may_not_start_with_a_digit() {
        Schema::new("1msp");
    }
}
