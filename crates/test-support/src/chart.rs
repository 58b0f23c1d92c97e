//! What a chart passes to its service, read from the chart in this checkout.

/// What a chart may pass to its service: for every `ENV: {{ .Values.config.<path> … }}` line
/// of `<chart>/templates/configmap.yaml`, the values its `values.schema.json` allows at the
/// edges (an integer's or number's minimum and maximum, every enum value), as
/// `(ENV, value)`. A service test feeds each to its config parser, which must accept it.
/// `chart` is a directory of `charts/` in this checkout.
pub fn chart_config_edges(chart: &str) -> Vec<(String, String)> {
    let chart_dir = crate::repo_root().join("charts").join(chart);
    let read = |file: &str| {
        std::fs::read_to_string(chart_dir.join(file))
            .unwrap_or_else(|e| panic!("{}/{file}: {e}", chart_dir.display()))
    };
    let schema: serde_json::Value =
        serde_json::from_str(&read("values.schema.json")).expect("values.schema.json is JSON");
    let mut edges = Vec::new();
    for line in read("templates/configmap.yaml").lines() {
        let Some((env, rest)) = line.trim().split_once(": {{ .Values.config.") else {
            continue;
        };
        let path = rest.split_whitespace().next().unwrap_or_default();
        let property = path
            .split('.')
            .fold(&schema["properties"]["config"], |node, key| {
                &node["properties"][key]
            });
        assert!(
            property.is_object(),
            "{env}: config.{path} is not in values.schema.json"
        );
        let mut values: Vec<String> = Vec::new();
        if let Some(choices) = property["enum"].as_array() {
            values.extend(choices.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        }
        if matches!(property["type"].as_str(), Some("integer" | "number")) {
            for bound in ["minimum", "maximum"] {
                if let Some(n) = property[bound].as_number() {
                    values.push(n.to_string());
                }
            }
        }
        edges.extend(values.into_iter().map(|v| (env.to_owned(), v)));
    }
    edges
}
