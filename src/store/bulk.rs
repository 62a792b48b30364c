//! Set-based statements: many rows in one statement, whatever the backend. The rows travel as ONE
//! bound JSON array, read as a table by PostgreSQL (`json_to_recordset`) or SQLite (`json_each`),
//! so a batch of a thousand events costs a handful of statements instead of thousands, and the SQL
//! around the row source is written once for both backends.

use serde::Serialize;

use super::BackendKind;

/// The SQL type of one column of a row source.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    Text,
    BigInt,
    Bool,
}

impl Col {
    fn postgres(self) -> &'static str {
        match self {
            Col::Text => "text",
            Col::BigInt => "bigint",
            Col::Bool => "boolean",
        }
    }
}

/// `template` with every `{rows}` replaced by a table of `columns` read from the JSON array bound
/// as `$1` (aliased `r`). JSON `null` and missing keys read as SQL NULL; booleans read as
/// `boolean` on PostgreSQL and as 0/1 on SQLite (where `BOOLEAN` columns hold integers anyway).
pub(crate) fn with_rows(kind: BackendKind, template: &str, columns: &[(&str, Col)]) -> String {
    let source = match kind {
        BackendKind::Postgres => format!(
            "json_to_recordset($1::json) AS r({})",
            columns
                .iter()
                .map(|(name, col)| format!("{name} {}", col.postgres()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        BackendKind::Sqlite => format!(
            "(SELECT {} FROM json_each($1)) AS r",
            columns
                .iter()
                .map(|(name, _)| format!("value ->> '{name}' AS {name}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    template.replace("{rows}", &source)
}

/// `template` with `{list}` replaced by a one-column table `l(v)` of the strings bound as `$1`.
pub(crate) fn with_list(kind: BackendKind, template: &str) -> String {
    let source = match kind {
        BackendKind::Postgres => "json_array_elements_text($1::json) AS l(v)",
        BackendKind::Sqlite => "(SELECT value AS v FROM json_each($1)) AS l",
    };
    template.replace("{list}", source)
}

/// The JSON text bound as a row source.
pub(crate) fn json<T: Serialize + ?Sized>(rows: &T) -> String {
    serde_json::to_string(rows).expect("rows of plain data serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sources_name_the_same_columns_on_both_backends() {
        let cols = [
            ("crm", Col::Text),
            ("at", Col::BigInt),
            ("removed", Col::Bool),
        ];
        let pg = with_rows(BackendKind::Postgres, "SELECT r.crm FROM {rows}", &cols);
        let lite = with_rows(BackendKind::Sqlite, "SELECT r.crm FROM {rows}", &cols);
        assert_eq!(
            pg,
            "SELECT r.crm FROM json_to_recordset($1::json) AS r(crm text, at bigint, removed boolean)"
        );
        assert_eq!(
            lite,
            "SELECT r.crm FROM (SELECT value ->> 'crm' AS crm, value ->> 'at' AS at, \
             value ->> 'removed' AS removed FROM json_each($1)) AS r"
        );
    }
}
