//! The schema migrations each backend runs: the SQL files of `src/store/migrations/`, the same
//! for both backends, plus the few whose SQL cannot be the same, written once per backend under
//! the same number (`src/store/sqlite/V9__search.sql` and `src/store/postgres/V9__search.sql`:
//! SQLite's FTS5 and PostgreSQL's text search differ).
//!
//! Both backends end with the same tables and columns, so that the move copies them unchanged;
//! what differs is only how the search index is kept (see `crate::store::search`).

use refinery::{Migration, Runner};

mod embedded {
    refinery::embed_migrations!("src/store/migrations");
}

/// The migrations of an SQLite database.
pub(crate) fn sqlite_migrations() -> Runner {
    with_own(&[("V9__search", include_str!("sqlite/V9__search.sql"))])
}

/// The migrations of a PostgreSQL database.
#[cfg(feature = "postgres")]
pub(crate) fn postgres_migrations() -> Runner {
    with_own(&[("V9__search", include_str!("postgres/V9__search.sql"))])
}

/// The shared migrations with a backend's own, in version order.
fn with_own(own: &[(&str, &str)]) -> Runner {
    let mut migrations = embedded::migrations::runner().get_migrations().clone();
    for (name, sql) in own {
        // The names are constants of this file, checked by the tests below.
        let migration = Migration::unapplied(name, sql).expect("a backend migration's name");
        migrations.push(migration);
    }
    migrations.sort_by_key(Migration::version);
    Runner::new(&migrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_migration_numbers() {
        let versions = |runner: Runner| -> Vec<i64> {
            runner.get_migrations().iter().map(|m| i64::from(m.version())).collect()
        };
        let sqlite = versions(sqlite_migrations());
        assert!(sqlite.windows(2).all(|pair| pair[0] < pair[1]), "{sqlite:?}");
        #[cfg(feature = "postgres")]
        assert_eq!(sqlite, versions(postgres_migrations()));
    }
}
