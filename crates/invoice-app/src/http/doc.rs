//! What one operation takes and answers, for the OpenAPI document: written beside its
//! handler, from the same wire types (their `ToSchema`), and collecting the schemas it
//! names. Its method, path, security and the answers its access brings (401, 403, 503) come
//! from the route table (`openapi::document`).

use std::collections::BTreeMap;

use api_contract::PROBLEM_JSON;
use utoipa::ToSchema;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, OperationBuilder, Parameter, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Content, Ref, RefOr, Required, Response, ResponseBuilder};

use crate::error::Problem;

/// An operation's description and the named schemas it refers to.
pub struct Doc {
    operation: OperationBuilder,
    responses: BTreeMap<u16, Response>,
    schemas: Vec<(String, RefOr<Schema>)>,
}

impl Doc {
    pub fn new(operation_id: &str) -> Self {
        Doc {
            operation: OperationBuilder::new().operation_id(Some(operation_id)),
            responses: BTreeMap::new(),
            schemas: Vec::new(),
        }
    }

    pub fn summary(mut self, summary: &str) -> Self {
        self.operation = self.operation.summary(Some(summary));
        self
    }

    /// A parameter whose schema is written here, or inlined from a type's.
    pub fn param(
        mut self,
        name: &str,
        location: ParameterIn,
        required: bool,
        schema: impl Into<RefOr<Schema>>,
        description: Option<&str>,
    ) -> Self {
        let required = if required {
            Required::True
        } else {
            Required::False
        };
        self.operation = self.operation.parameter(
            Parameter::builder()
                .name(name)
                .parameter_in(location)
                .required(required)
                .description(description)
                .schema(Some(schema)),
        );
        self
    }

    /// A parameter of a named type (a reference to its schema).
    pub fn param_of<T: ToSchema>(
        mut self,
        name: &str,
        location: ParameterIn,
        required: bool,
        description: Option<&str>,
    ) -> Self {
        let schema = self.named::<T>();
        self.param(name, location, required, schema, description)
    }

    /// A required path parameter: any text (a well-formed id that names nothing is a 404,
    /// and so is anything else).
    pub fn path_param(self, name: &str) -> Self {
        self.param(
            name,
            ParameterIn::Path,
            true,
            ObjectBuilder::new().schema_type(Type::String),
            None,
        )
    }

    /// A JSON request body of `T`, required.
    pub fn body<T: ToSchema>(self) -> Self {
        self.body_of::<T>(Required::True)
    }

    /// A JSON request body of `T` that may be left out.
    pub fn optional_body<T: ToSchema>(self) -> Self {
        self.body_of::<T>(Required::False)
    }

    fn body_of<T: ToSchema>(mut self, required: Required) -> Self {
        let body = RequestBodyBuilder::new()
            .required(Some(required))
            .content("application/json", Content::new(Some(self.named::<T>())))
            .build();
        self.operation = self.operation.request_body(Some(body));
        self
    }

    /// A JSON answer of `T`.
    pub fn answers<T: ToSchema>(self, status: u16, description: &str) -> Self {
        self.answers_with::<T>(status, description, [])
    }

    /// A JSON answer of `T` with headers.
    pub fn answers_with<T: ToSchema>(
        mut self,
        status: u16,
        description: &str,
        headers: impl IntoIterator<Item = (&'static str, Header)>,
    ) -> Self {
        let schema = self.named::<T>();
        let response = headers
            .into_iter()
            .fold(ResponseBuilder::new(), |r, (name, h)| r.header(name, h))
            .description(description)
            .content("application/json", Content::new(Some(schema)))
            .build();
        self.responses.insert(status, response);
        self
    }

    /// An answer as it is given (no body, another media type).
    pub fn answer(mut self, status: u16, response: impl Into<Response>) -> Self {
        self.responses.insert(status, response.into());
        self
    }

    /// A problem+json answer.
    pub fn problem(self, status: u16, description: &str) -> Self {
        self.problem_with(status, description, [])
    }

    /// A problem+json answer with headers.
    pub fn problem_with(
        mut self,
        status: u16,
        description: &str,
        headers: impl IntoIterator<Item = (&'static str, Header)>,
    ) -> Self {
        let schema = self.named::<Problem>();
        let response = headers
            .into_iter()
            .fold(ResponseBuilder::new(), |r, (name, h)| r.header(name, h))
            .description(description)
            .content(PROBLEM_JSON, Content::new(Some(schema)))
            .build();
        self.responses.insert(status, response);
        self
    }

    /// Who may call it: `[]` for anyone, else the schemes and scopes (from the table).
    pub fn security(mut self, requirements: Vec<SecurityRequirement>) -> Self {
        self.operation = self.operation.securities(Some(requirements));
        self
    }

    /// Whether it says what it answers with `status`.
    pub fn answers_status(&self, status: u16) -> bool {
        self.responses.contains_key(&status)
    }

    /// The operation and the schemas it names (with the schemas those name).
    pub fn build(self) -> (Operation, Vec<(String, RefOr<Schema>)>) {
        let mut operation = self.operation.build();
        for (status, response) in self.responses {
            operation
                .responses
                .responses
                .insert(status.to_string(), RefOr::T(response));
        }
        (operation, self.schemas)
    }

    /// A reference to `T`'s schema, collected for the components.
    fn named<T: ToSchema>(&mut self) -> RefOr<Schema> {
        self.schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(&mut self.schemas);
        Ref::from_schema_name(T::name()).into()
    }
}

/// A header with `schema`. OpenAPI 3.1 headers may be `required`, which utoipa's `Header`
/// does not model: it is carried among its (flattened) extensions.
pub fn header(
    schema: impl Into<RefOr<Schema>>,
    description: Option<&str>,
    required: bool,
) -> Header {
    let mut header = Header::new(schema);
    header.description = description.map(str::to_owned);
    if required {
        header.extensions = Some([("required", true)].into_iter().collect());
    }
    header
}

/// A string schema.
pub fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// An integer schema.
pub fn integer() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Integer)
}

/// An object schema.
pub fn object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object)
}

/// The schema of text that is one of `values` (an enum stored and shown as text).
pub fn one_of_texts(values: impl IntoIterator<Item = &'static str>) -> Schema {
    string().enum_values(Some(values)).build().into()
}

/// The `WWW-Authenticate` challenge of a 401 or 403.
pub fn challenge() -> Header {
    header(string(), Some("RFC 6750 challenge"), true)
}
