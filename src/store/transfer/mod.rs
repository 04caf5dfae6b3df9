//! Moving Hearth's data from one backend to the other, table by table, as the migrator
//! (`crate::migrate`) needs it: the schema as data, rows as plain values, order-independent
//! digests that prove a copy, and a change log that catches what changed during the copy.
//! Each backend has a source side and a target side: `sqlite` and `postgres` for the move to
//! PostgreSQL, `postgres_source` and `sqlite_target` for the move back.
//!
//! The table list, the columns and their types are read from the source database's own schema,
//! never listed by hand: a table or column added by a later migration is copied without anyone
//! touching this module, and a column type the move does not know stops it before anything is
//! written.

pub mod postgres;
pub mod postgres_source;
pub mod retire;
pub mod sqlite;
pub mod sqlite_target;

use sha2::{Digest as _, Sha256};

/// Tables of the database that are not Hearth's data: the migration tool's bookkeeping (each
/// backend runs the migrations itself) and the move's own change log.
pub(crate) fn is_data_table(name: &str) -> bool {
    name != "refinery_schema_history"
        && !name.starts_with("sqlite_")
        && !name.starts_with(CHANGE_LOG_PREFIX)
}

/// Names of the move's own tables and triggers start with this.
pub(crate) const CHANGE_LOG_PREFIX: &str = "hearth_move_";

/// A column's type in the shared schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `INTEGER`: a 64-bit integer on SQLite, `int4` on PostgreSQL (flags and small counters).
    Integer,
    /// `BIGINT`: 64 bits on both.
    BigInt,
    Text,
}

impl ColumnType {
    /// The type of a declared SQL type of the shared schema.
    pub fn from_declared(declared: &str) -> Option<Self> {
        match declared.to_ascii_uppercase().as_str() {
            "INTEGER" => Some(Self::Integer),
            "BIGINT" => Some(Self::BigInt),
            "TEXT" => Some(Self::Text),
            _ => None,
        }
    }
}

/// A column of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub column_type: ColumnType,
}

/// A table as the move sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<Column>,
    /// Indices into `columns` of the primary key, in key order.
    pub primary_key: Vec<usize>,
    /// Tables this one references with foreign keys: they are copied first.
    pub references: Vec<String>,
}

impl TableSchema {
    /// The column list for SQL, e.g. `user_id, device_id`.
    pub(crate) fn column_list(&self) -> String {
        self.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The primary key's values of a row.
    pub fn key_of(&self, row: &[Value]) -> Vec<Value> {
        self.primary_key.iter().map(|&i| row[i].clone()).collect()
    }
}

/// A value of a column.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Integer(i64),
    Text(String),
}

/// One row, its values in column order.
pub type Row = Vec<Value>;

/// Orders tables so that every table comes after those it references. Fails on a reference to
/// an unknown table or on a cycle, which the shared schema never has.
pub fn dependency_order(mut tables: Vec<TableSchema>) -> anyhow::Result<Vec<TableSchema>> {
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut ordered: Vec<TableSchema> = Vec::with_capacity(tables.len());
    while !tables.is_empty() {
        let ready = tables.iter().position(|table| {
            table
                .references
                .iter()
                .all(|r| r == &table.name || ordered.iter().any(|t| &t.name == r))
        });
        let Some(ready) = ready else {
            let names: Vec<_> = tables.iter().map(|t| t.name.as_str()).collect();
            anyhow::bail!("the tables {names:?} reference unknown tables or each other in a cycle");
        };
        ordered.push(tables.remove(ready));
    }
    Ok(ordered)
}

/// An order-independent fingerprint of a table's rows: how many there are and the wrapping sum
/// of a SHA-256 prefix of each. Two tables with the same rows, read in any order, have the same
/// digest; a missing, extra or changed row changes it (but for a 2⁻¹²⁸ chance).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    pub rows: u64,
    pub sum: u128,
}

impl Digest {
    pub fn add(&mut self, row: &[Value]) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(row_hash(row));
    }
}

fn row_hash(row: &[Value]) -> u128 {
    let mut hasher = Sha256::new();
    for value in row {
        match value {
            Value::Null => hasher.update([0u8]),
            Value::Integer(n) => {
                hasher.update([1u8]);
                hasher.update(n.to_be_bytes());
            }
            Value::Text(text) => {
                hasher.update([2u8]);
                hasher.update((text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
        }
    }
    let hash = hasher.finalize();
    let mut prefix = [0u8; 16];
    prefix.copy_from_slice(&hash[..16]);
    u128::from_be_bytes(prefix)
}

/// A change the log recorded: the table and the primary key of a row that was inserted, updated
/// or deleted after the log started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub id: i64,
    pub table: String,
    pub key: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, references: &[&str]) -> TableSchema {
        TableSchema {
            name: name.to_owned(),
            columns: Vec::new(),
            primary_key: Vec::new(),
            references: references.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn referenced_tables_come_first() {
        let tables = vec![
            table("access_tokens", &["devices"]),
            table("devices", &["users"]),
            table("users", &[]),
            table("node", &["node"]),
        ];
        let names: Vec<String> =
            dependency_order(tables).unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["node", "users", "devices", "access_tokens"]);
        assert!(dependency_order(vec![table("a", &["b"]), table("b", &["a"])]).is_err());
        assert!(dependency_order(vec![table("a", &["missing"])]).is_err());
    }

    #[test]
    fn digests_ignore_order_and_see_every_change() {
        let rows = [
            vec![Value::Integer(1), Value::Text("a".into())],
            vec![Value::Integer(2), Value::Null],
        ];
        let digest = |rows: &[Row]| {
            let mut digest = Digest::default();
            rows.iter().for_each(|row| digest.add(row));
            digest
        };
        let forward = digest(&rows);
        let backward = digest(&[rows[1].clone(), rows[0].clone()]);
        assert_eq!(forward, backward);
        let changed =
            digest(&[rows[0].clone(), vec![Value::Integer(2), Value::Text(String::new())]]);
        assert_ne!(forward, changed, "NULL and the empty string differ");
        let shifted = digest(&[vec![Value::Text("1a".into())], rows[1].clone()]);
        assert_ne!(forward, shifted, "values do not run into each other");
    }

    #[test]
    fn only_the_shared_schema_types_are_known() {
        assert_eq!(ColumnType::from_declared("bigint"), Some(ColumnType::BigInt));
        assert_eq!(ColumnType::from_declared("REAL"), None);
        assert!(!is_data_table("refinery_schema_history"));
        assert!(!is_data_table("hearth_move_changes"));
        assert!(is_data_table("events"));
    }
}
