//! Parsing one CPI request (`{"method","arguments","context","api_version"}`) and its arguments.

use serde_json::{Map, Value};

use crate::error::CpiError;

/// One CPI request, as the director sends it on stdin.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The method name, e.g. `create_vm`.
    pub method: String,
    /// The method's arguments.
    pub arguments: Vec<Value>,
    /// The context (director keys plus the CPI config's properties).
    pub context: Map<String, Value>,
    /// The CPI API version of the call (absent means 1).
    pub api_version: u64,
}

impl Request {
    /// Parse a request from the bytes read on stdin.
    pub fn parse(bytes: &[u8]) -> Result<Request, CpiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(CpiError::EmptyRequest);
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| CpiError::InvalidJson(e.to_string()))?;
        let Value::Object(mut object) = value else {
            return Err(CpiError::MalformedRequest(format!(
                "expected a json object, got {}",
                kind(&value)
            )));
        };
        let method = match object.remove("method") {
            Some(Value::String(method)) if !method.is_empty() => method,
            Some(other) => {
                return Err(CpiError::MalformedRequest(format!(
                    "'method' must be a non-empty string, got {}",
                    kind(&other)
                )));
            }
            None => {
                return Err(CpiError::MalformedRequest(
                    "must provide 'method' key".into(),
                ));
            }
        };
        let arguments = match object.remove("arguments") {
            Some(Value::Array(arguments)) => arguments,
            Some(other) => {
                return Err(CpiError::MalformedRequest(format!(
                    "'arguments' must be an array, got {}",
                    kind(&other)
                )));
            }
            None => {
                return Err(CpiError::MalformedRequest(
                    "must provide 'arguments' key".into(),
                ));
            }
        };
        let context = match object.remove("context") {
            Some(Value::Object(context)) => context,
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                return Err(CpiError::MalformedRequest(format!(
                    "'context' must be an object, got {}",
                    kind(&other)
                )));
            }
        };
        let api_version = match object.remove("api_version") {
            None | Some(Value::Null) => 1,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v @ 1..) => v,
                _ => {
                    return Err(CpiError::MalformedRequest(format!(
                        "'api_version' must be a positive integer, got {n}"
                    )));
                }
            },
            Some(other) => {
                return Err(CpiError::MalformedRequest(format!(
                    "'api_version' must be a positive integer, got {}",
                    kind(&other)
                )));
            }
        };
        Ok(Request {
            method,
            arguments,
            context,
            api_version,
        })
    }

    /// The arguments of this call, checked one by one.
    pub fn args(&self) -> Args<'_> {
        Args {
            method: &self.method,
            values: &self.arguments,
        }
    }
}

/// Typed access to a request's positional arguments; every mismatch is an `InvalidCall`.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    method: &'a str,
    values: &'a [Value],
}

impl<'a> Args<'a> {
    /// An `InvalidCall` error for argument `index` of this call.
    pub fn invalid(&self, index: usize, name: &'static str, reason: String) -> CpiError {
        CpiError::InvalidArgument {
            method: self.method.to_string(),
            index,
            name,
            reason,
        }
    }

    fn get(&self, index: usize, name: &'static str) -> Result<&'a Value, CpiError> {
        self.values
            .get(index)
            .ok_or_else(|| self.invalid(index, name, "is missing".into()))
    }

    /// A required non-empty string.
    pub fn string(&self, index: usize, name: &'static str) -> Result<&'a str, CpiError> {
        match self.get(index, name)? {
            Value::String(s) if !s.is_empty() => Ok(s),
            Value::String(_) => Err(self.invalid(index, name, "must not be empty".into())),
            other => Err(self.invalid(
                index,
                name,
                format!("must be a string, got {}", kind(other)),
            )),
        }
    }

    /// A required integer.
    pub fn integer(&self, index: usize, name: &'static str) -> Result<i64, CpiError> {
        match self.get(index, name)? {
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| self.invalid(index, name, format!("must be an integer, got {n}"))),
            other => Err(self.invalid(
                index,
                name,
                format!("must be an integer, got {}", kind(other)),
            )),
        }
    }

    /// A required JSON object.
    pub fn object(
        &self,
        index: usize,
        name: &'static str,
    ) -> Result<&'a Map<String, Value>, CpiError> {
        match self.get(index, name)? {
            Value::Object(map) => Ok(map),
            other => Err(self.invalid(
                index,
                name,
                format!("must be an object, got {}", kind(other)),
            )),
        }
    }

    /// An object that may be absent or `null` (then empty).
    pub fn optional_object(
        &self,
        index: usize,
        name: &'static str,
    ) -> Result<Map<String, Value>, CpiError> {
        match self.values.get(index) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(map)) => Ok(map.clone()),
            Some(other) => Err(self.invalid(
                index,
                name,
                format!("must be an object or null, got {}", kind(other)),
            )),
        }
    }

    /// A string that may be absent or `null`.
    pub fn optional_string(
        &self,
        index: usize,
        name: &'static str,
    ) -> Result<Option<&'a str>, CpiError> {
        match self.values.get(index) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.invalid(
                index,
                name,
                format!("must be a string or null, got {}", kind(other)),
            )),
        }
    }

    /// An array of strings that may be absent or `null` (then empty).
    pub fn optional_strings(
        &self,
        index: usize,
        name: &'static str,
    ) -> Result<Vec<&'a str>, CpiError> {
        match self.values.get(index) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(self.invalid(
                        index,
                        name,
                        format!("must hold strings, got {}", kind(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.invalid(
                index,
                name,
                format!("must be an array or null, got {}", kind(other)),
            )),
        }
    }

    /// Reject arguments beyond the `expected` count.
    pub fn at_most(&self, expected: usize) -> Result<(), CpiError> {
        if self.values.len() > expected {
            return Err(CpiError::InvalidArgument {
                method: self.method.to_string(),
                index: expected,
                name: "(extra)",
                reason: format!(
                    "is one too many: {} takes {expected} arguments, got {}",
                    self.method,
                    self.values.len()
                ),
            });
        }
        Ok(())
    }
}

/// The JSON kind of a value, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_director_request() {
        let request = Request::parse(
            br#"{"method":"has_vm","arguments":["1a2b3c4d"],"context":{"director_uuid":"d"},"api_version":2}"#,
        )
        .expect("parses");
        assert_eq!(request.method, "has_vm");
        assert_eq!(request.api_version, 2);
        assert_eq!(
            request.args().string(0, "vm_cid").expect("string"),
            "1a2b3c4d"
        );
        assert_eq!(request.context["director_uuid"], json!("d"));
    }

    #[test]
    fn api_version_defaults_to_one() {
        let request = Request::parse(br#"{"method":"info","arguments":[]}"#).expect("parses");
        assert_eq!(request.api_version, 1);
        assert!(request.context.is_empty());
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let err = |input: &str| Request::parse(input.as_bytes()).unwrap_err().to_string();
        assert!(err("").contains("empty"));
        assert!(err("{-}").contains("not valid json"));
        assert!(err("[1]").contains("got an array"));
        assert!(err(r#"{"arguments":[]}"#).contains("'method'"));
        assert!(err(r#"{"method":1,"arguments":[]}"#).contains("got a number"));
        assert!(err(r#"{"method":"info"}"#).contains("'arguments'"));
        assert!(err(r#"{"method":"info","arguments":{}}"#).contains("must be an array"));
        assert!(err(r#"{"method":"info","arguments":[],"context":3}"#).contains("'context'"));
        assert!(
            err(r#"{"method":"info","arguments":[],"api_version":"2"}"#).contains("'api_version'")
        );
    }

    #[test]
    fn argument_types_are_checked() {
        let request = Request::parse(br#"{"method":"create_disk","arguments":["ten",{},7]}"#)
            .expect("parses");
        let args = request.args();
        let err = args.integer(0, "size").unwrap_err();
        assert_eq!(err.bosh_type(), "InvalidCall");
        assert!(
            err.to_string()
                .contains("argument 0 (size) must be an integer, got a string")
        );
        assert!(args.object(1, "cloud_properties").is_ok());
        assert!(args.optional_string(2, "vm_locality").is_err());
        assert!(
            args.string(5, "nothing")
                .unwrap_err()
                .to_string()
                .contains("is missing")
        );
        assert!(args.at_most(2).is_err());
        assert!(args.at_most(3).is_ok());
    }
}
