//! Node properties: a node's data is a JSON object ("properties"); empty
//! data is `{}`. A property `NAME ->` whose value is a path is a link: the
//! child `NAME` of that node is found at the link's target, resolved
//! relative to the node (`workers -> ../app`).

use serde_json::{Map, Value};

/// A node's properties. Data that is not a JSON object is reported and
/// read as `{}`.
pub fn parse(path: &str, data: &[u8]) -> Map<String, Value> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Map::new();
    }
    match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            log::warn!("ZooKeeper node {path}: data is not a JSON object; ignored");
            Map::new()
        }
        Err(e) => {
            log::warn!("ZooKeeper node {path}: data is not JSON ({e}); ignored");
            Map::new()
        }
    }
}

/// Join `rel` onto `base` and remove `.` and `..` segments.
pub fn normalize(base: &str, rel: &str) -> String {
    let joined = if rel.starts_with('/') {
        rel.to_string()
    } else {
        format!("{}/{}", base.trim_end_matches('/'), rel)
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Resolve `path` component by component, following links found in the
/// properties of the nodes on the way. `props` reads a node's properties
/// (`None` if it does not exist). At most 32 links are followed.
pub fn resolve(path: &str, mut props: impl FnMut(&str) -> Option<Map<String, Value>>) -> String {
    let mut current = String::from("/");
    let mut hops = 0;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let link = props(&current)
            .and_then(|m| m.get(&format!("{comp} ->")).cloned())
            .and_then(|v| v.as_str().map(str::to_string));
        current = match link {
            Some(target) if hops < 32 => {
                hops += 1;
                normalize(&current, &target)
            }
            _ => normalize(&current, comp),
        };
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    #[test]
    fn parse_data() {
        assert!(parse("/a", b"").is_empty());
        assert!(parse("/a", b"  ").is_empty());
        assert!(parse("/a", b"[1]").is_empty());
        assert!(parse("/a", b"{bad").is_empty());
        assert_eq!(parse("/a", br#"{"x": 1}"#)["x"], 1);
    }

    #[test]
    fn normalizing() {
        assert_eq!(normalize("/lb", "../app"), "/app");
        assert_eq!(normalize("/lb/x", "./y/../z"), "/lb/x/z");
        assert_eq!(normalize("/lb", "/abs/path"), "/abs/path");
        assert_eq!(normalize("/", ".."), "/");
    }

    #[test]
    fn links_are_followed() {
        let tree: HashMap<&str, Value> = [
            ("/", json!({})),
            ("/lb", json!({"variance": 2, "workers ->": "../app"})),
            ("/app", json!({"history": 10})),
        ]
        .into_iter()
        .collect();
        let get = |p: &str| tree.get(p).and_then(|v| v.as_object().cloned());
        assert_eq!(resolve("/lb/workers/providers", get), "/app/providers");
        assert_eq!(resolve("/app/providers", get), "/app/providers");
        assert_eq!(resolve("/none/x", get), "/none/x");
    }
}
