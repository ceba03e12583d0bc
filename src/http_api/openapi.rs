//! `GET /api/openapi.json`: an OpenAPI 3.1 document built from the route
//! table ([`super::table`]), with JSON schemas inferred from each route's
//! examples.

use axum::Json;
use serde_json::{Map, Value, json};

use super::{Auth, table};

/// A JSON schema describing `example` (types, properties, array items).
pub fn schema_of(example: &Value) -> Value {
    match example {
        Value::Null => json!({}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"type": "integer"}),
        Value::Number(_) => json!({"type": "number"}),
        Value::String(_) => json!({"type": "string"}),
        Value::Array(items) => match items.first() {
            Some(first) => json!({"type": "array", "items": schema_of(first)}),
            None => json!({"type": "array"}),
        },
        Value::Object(map) => {
            let props: Map<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), schema_of(v))).collect();
            json!({"type": "object", "properties": props})
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in table() {
        let mut op = Map::new();
        op.insert("tags".into(), json!([route.tag]));
        op.insert("summary".into(), json!(route.summary));
        if !route.description.is_empty() {
            op.insert("description".into(), json!(route.description));
        }
        let mut params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(route.query.iter().map(|(name, desc)| {
            json!({"name": name, "in": "query", "required": false, "description": desc, "schema": {"type": "string"}})
        }));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(example) = &route.request {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": schema_of(example), "example": example}}}),
            );
        }
        let (status, example) = &route.response;
        let mut responses = Map::new();
        let ok = match example {
            Value::Null => json!({"description": "OK", "content": {"application/json": {}}}),
            _ => {
                json!({"description": "OK", "content": {"application/json": {"schema": schema_of(example), "example": example}}})
            }
        };
        responses.insert(status.to_string(), ok);
        if route.request.is_some() || route.path.contains('{') {
            responses.insert(
                "400".into(),
                error_response("Invalid input; the message says what to fix"),
            );
        }
        match route.auth {
            Auth::ApiKey | Auth::ApiKeyOrClient | Auth::Client => {
                responses.insert(
                    "401".into(),
                    error_response("Missing or wrong API key or connection credentials"),
                );
                if route.auth == Auth::ApiKey {
                    op.insert("security".into(), json!([{"apiKey": []}]));
                } else if route.auth == Auth::ApiKeyOrClient {
                    op.insert("security".into(), json!([{"apiKey": []}, {}]));
                } else {
                    op.insert("security".into(), json!([{}]));
                }
            }
            Auth::None => {
                op.insert("security".into(), json!([{}]));
            }
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        if let Value::Object(methods) = entry {
            methods.insert(
                route.method.as_str().to_ascii_lowercase(),
                Value::Object(op),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "rollcall HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Server-side API of rollcall: publish and send messages, channel members and counts, user presence, presence leases and privacy. Errors are {\"error\":{\"code\",\"message\"}}."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "the server's --api-key"}},
            "schemas": {"Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "example": "INVALID_CHANNEL_NAME"},
                    "message": {"type": "string", "example": "channel must be 1 to 256 characters"}
                }}}
            }}
        }
    })
}

pub(super) async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_follow_the_examples() {
        assert_eq!(
            schema_of(&json!({"ids": ["a"], "ttl_ms": 1, "ok": true})),
            json!({"type": "object", "properties": {
                "ids": {"type": "array", "items": {"type": "string"}},
                "ttl_ms": {"type": "integer"},
                "ok": {"type": "boolean"}
            }})
        );
    }

    #[test]
    fn the_document_lists_every_route_of_the_table() {
        let doc = document();
        for route in table() {
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} missing", route.method, route.path);
        }
        let refresh = &doc["paths"]["/api/presence/refresh"]["post"];
        assert_eq!(
            refresh["requestBody"]["content"]["application/json"]["example"]["user"],
            "u1"
        );
        assert_eq!(
            doc["paths"]["/api/users/{uid}"]["get"]["parameters"][0]["name"],
            "uid"
        );
    }
}
