//! The OpenAPI document checked against the router.

use serde_json::Value;
use usher_server::http::{OPENAPI, ROUTES};

use super::{http, start};

/// The OpenAPI document: valid 3.1 (parsed by `oas3`), every `$ref` resolves, and its
/// paths are exactly the router's routes, each answering with a status it documents.
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_route() {
    let spec = oas3::from_json(OPENAPI).expect("oas3 parses the document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not in the document"))[*method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        assert!(
            op["responses"].is_object(),
            "{method} {path} has no responses"
        );
        assert!(op["summary"].is_string(), "{method} {path} has no summary");
        // Authenticated exactly when it is an /api/ route.
        assert_eq!(
            op.get("security").is_some(),
            path.starts_with("/api/"),
            "{method} {path}"
        );
    }
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "the document describes {method} {path}, which the router does not serve"
            );
        }
    }
    // Every $ref points at a schema that exists.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").expect(&r);
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling {r}"
        );
    }

    // The router serves each documented route (the read-only ones, with the token), with a
    // status the document lists, and the open document itself is this one.
    let (_lic, server) = start().await;
    let served = http(server.admin.unwrap(), "GET", "/openapi.json", None, None).await;
    assert_eq!(served.json(), doc);
    for (method, path) in ROUTES.iter().filter(|(m, _)| *m == "get") {
        let path_q = if *path == "/api/v1/usage" {
            "/api/v1/usage?feature=cad"
        } else {
            path
        };
        let r = server.get(path_q).await;
        let documented = doc["paths"][*path][*method]["responses"]
            .as_object()
            .unwrap();
        assert!(
            documented.contains_key(&r.status.to_string()),
            "{method} {path} answered {} which is not documented: {}",
            r.status,
            r.body
        );
        let _ = method;
    }
}
