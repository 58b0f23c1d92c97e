//! The domain's enums and ids in text columns: each is stored as its `as_str`, exactly the text the
//! columns held as `String`s, and read back through its `FromStr` (a value this release
//! does not know is a deserialisation error, as it was an unparsable row before).

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

use crate::domain::{
    AttemptId, AttemptKind, AttemptOutcome, InvoiceStatus, RunId, RunKind, RunStatus, Sent,
    Trigger, WorkerId,
};

macro_rules! text_column {
    ($($ty:ident => $proxy:ident),* $(,)?) => {$(
        // Diesel's derives for a type of another module (so `domain` imports no diesel);
        // the struct itself is never built.
        #[allow(dead_code)]
        #[derive(AsExpression, FromSqlRow)]
        #[diesel(foreign_derive, sql_type = Text)]
        struct $proxy($ty);

        impl<DB: Backend> ToSql<Text, DB> for $ty
        where
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                self.as_str().to_sql(out)
            }
        }

        impl<DB: Backend> FromSql<Text, DB> for $ty
        where
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                Ok(String::from_sql(bytes)?.parse::<$ty>()?)
            }
        }
    )*};
}

text_column! {
    InvoiceStatus => InvoiceStatusColumn,
    RunStatus => RunStatusColumn,
    AttemptOutcome => AttemptOutcomeColumn,
    Sent => SentColumn,
    RunId => RunIdColumn,
    AttemptId => AttemptIdColumn,
    WorkerId => WorkerIdColumn,
    Trigger => TriggerColumn,
    RunKind => RunKindColumn,
    AttemptKind => AttemptKindColumn,
}
