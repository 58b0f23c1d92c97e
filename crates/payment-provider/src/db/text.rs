//! The domain's enums in text columns: each is stored as its `as_str` and read back through
//! its `FromStr` (a value this release does not know is a deserialisation error).

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

use crate::domain::AccountStatus;

// Diesel's derives for a type of another module (so `domain` imports no diesel); the
// struct itself is never built.
#[allow(dead_code)]
#[derive(AsExpression, FromSqlRow)]
#[diesel(foreign_derive, sql_type = Text)]
struct AccountStatusColumn(AccountStatus);

impl<DB: Backend> ToSql<Text, DB> for AccountStatus
where
    str: ToSql<Text, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        self.as_str().to_sql(out)
    }
}

impl<DB: Backend> FromSql<Text, DB> for AccountStatus
where
    String: FromSql<Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        Ok(String::from_sql(bytes)?.parse::<AccountStatus>()?)
    }
}
