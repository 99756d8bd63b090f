//! Where policies come from: Cedar files, or the filter configuration inside an Envoy or Istio
//! file (exactly what the filter gets), turned into the filter's own `FilterConfig`.

use std::path::{Path, PathBuf};

use mcp_mesh_auth_filter::config::FilterConfig;
use serde_json::{json, Value};

use crate::CliError;

/// The options that name a policy set.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicySource {
    /// Cedar policy files (each may hold several policies; give them `@id("…")`).
    #[arg(long = "policies", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// An Envoy or Istio YAML (or the filter's JSON configuration): its `cedar` section is used,
    /// with its `schema`, entities and group claims, as the filter would load it.
    #[arg(long, value_name = "FILE", conflicts_with = "files")]
    pub config: Option<PathBuf>,
    /// Which filter configuration of `--config`, when the file holds several (0-based).
    #[arg(long, value_name = "N", requires = "config")]
    pub which: Option<usize>,
    /// A Cedar schema (`.cedarschema`, or `.json`) the policies must validate against.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// Cedar JSON entities (group hierarchies), with `--policies`.
    #[arg(long, value_name = "FILE", requires = "files")]
    pub entities: Option<PathBuf>,
    /// The claim holding the caller's groups, with `--policies` (default: `groups`, `roles`, …).
    #[arg(long, value_name = "CLAIM", requires = "files")]
    pub group_claim: Option<String>,
    /// The filter's `server_name`: the `MCP::"<name>"` parent of every tool, with `--policies`.
    #[arg(long, value_name = "NAME", requires = "files")]
    pub server_name: Option<String>,
}

/// A policy set, ready to decide with.
pub struct LoadedPolicies {
    /// Where each policy text came from (`file` or `file: cedar.policies[i]`), by text index.
    pub origins: Vec<String>,
    pub texts: Vec<String>,
    /// The filter configuration (JSON) the set decides under.
    pub config: Value,
}

impl LoadedPolicies {
    /// The filter's configuration, checked as Envoy would have the filter check it.
    pub fn filter_config(&self) -> Result<FilterConfig, CliError> {
        FilterConfig::from_json(self.config.to_string().as_bytes())
            .map_err(|err| CliError::Policies(err.to_string()))
    }

    /// Where policy text `index` is, for messages.
    pub fn origin(&self, index: Option<usize>) -> String {
        index
            .and_then(|index| self.origins.get(index))
            .cloned()
            .unwrap_or_else(|| "(policies)".into())
    }
}

pub fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|err| CliError::Input(format!("{}: {err}", path.display())))
}

/// `text` as JSON, or as YAML (which JSON is a part of).
pub fn parse_document(path: &Path, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).or_else(|_| {
        serde_yaml::from_str::<Value>(text).map_err(|err| {
            CliError::Input(format!("{}: neither JSON nor YAML: {err}", path.display()))
        })
    })
}

/// A schema file as the filter's `cedar.schema` takes it: Cedar syntax as a string, or JSON.
pub fn schema_value(path: &Path) -> Result<Value, CliError> {
    let text = read(path)?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

impl PolicySource {
    pub fn load(&self) -> Result<LoadedPolicies, CliError> {
        let mut loaded = match &self.config {
            Some(path) => self.load_config(path)?,
            None => self.load_files()?,
        };
        if let Some(path) = &self.schema {
            loaded.config["cedar"]["schema"] = schema_value(path)?;
        }
        Ok(loaded)
    }

    fn load_files(&self) -> Result<LoadedPolicies, CliError> {
        if self.files.is_empty() {
            return Err(CliError::Usage(
                "name the policies: --policies FILE (repeatable) or --config envoy.yaml".into(),
            ));
        }
        let texts = self
            .files
            .iter()
            .map(|path| read(path))
            .collect::<Result<Vec<_>, _>>()?;
        let mut cedar = json!({"policies": texts});
        if let Some(path) = &self.entities {
            cedar["entities"] = parse_document(path, &read(path)?)?;
        }
        if let Some(claim) = &self.group_claim {
            cedar["group_claim"] = json!(claim);
        }
        // A configuration that decides like the filter but verifies nothing: the CLI is given
        // claims (`jwt_authn` mode takes them as verified, which is what the CLI needs).
        let mut config = json!({
            "resource": "https://mcp.invalid/mcp",
            "issuers": [{"issuer": "https://issuer.invalid"}],
            "jwt_authn": {"metadata_namespace": "mcp-mesh-auth-cli", "payload_in_metadata": "claims"},
            "cedar": cedar,
        });
        if let Some(name) = &self.server_name {
            config["server_name"] = json!(name);
        }
        Ok(LoadedPolicies {
            origins: self.files.iter().map(|p| p.display().to_string()).collect(),
            texts,
            config,
        })
    }

    fn load_config(&self, path: &Path) -> Result<LoadedPolicies, CliError> {
        let text = read(path)?;
        let mut found = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_yaml::Value = serde::Deserialize::deserialize(document)
                .map_err(|err| CliError::Input(format!("{}: not YAML: {err}", path.display())))?;
            collect_filter_configs(&value, &mut found);
        }
        if found.is_empty() {
            if let Ok(config) = serde_json::from_str::<Value>(&text) {
                collect_json(&config, &mut found);
            }
        }
        let count = found.len();
        let index = match (self.which, count) {
            (_, 0) => {
                return Err(CliError::Input(format!(
                    "{}: no filter configuration with a `cedar` section found",
                    path.display()
                )))
            }
            (None, 1) => 0,
            (None, _) => {
                return Err(CliError::Usage(format!(
                    "{} holds {count} filter configurations with a `cedar` section: choose one with --which 0..{}",
                    path.display(),
                    count - 1
                )))
            }
            (Some(which), _) if which < count => which,
            (Some(which), _) => {
                return Err(CliError::Usage(format!(
                    "--which {which}: {} holds only {count} filter configurations",
                    path.display()
                )))
            }
        };
        let config = found.swap_remove(index);
        let texts: Vec<String> = config["cedar"]["policies"]
            .as_array()
            .map(|policies| {
                policies
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(LoadedPolicies {
            origins: (0..texts.len())
                .map(|i| format!("{}: cedar.policies[{i}]", path.display()))
                .collect(),
            texts,
            config,
        })
    }
}

/// Filter configurations in a YAML tree: a string holding JSON with `cedar` (Envoy's
/// `StringValue`), or a mapping with `cedar.policies` (Istio's `pluginConfig`).
fn collect_filter_configs(value: &serde_yaml::Value, found: &mut Vec<Value>) {
    match value {
        serde_yaml::Value::String(text) => {
            if let Ok(config) = serde_json::from_str::<Value>(text) {
                collect_json(&config, found);
            }
        }
        serde_yaml::Value::Mapping(mapping) => {
            if let Ok(config) = serde_json::to_value(mapping) {
                if is_filter_config(&config) {
                    found.push(config);
                    return;
                }
            }
            for (_, child) in mapping {
                collect_filter_configs(child, found);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for child in items {
                collect_filter_configs(child, found);
            }
        }
        serde_yaml::Value::Tagged(tagged) => collect_filter_configs(&tagged.value, found),
        _ => {}
    }
}

fn collect_json(config: &Value, found: &mut Vec<Value>) {
    if is_filter_config(config) {
        found.push(config.clone());
    }
}

fn is_filter_config(value: &Value) -> bool {
    value.get("cedar").and_then(|c| c.get("policies")).is_some() && value.get("resource").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(config: &str) -> PolicySource {
        PolicySource {
            files: vec![],
            config: Some(PathBuf::from(config)),
            which: None,
            schema: None,
            entities: None,
            group_claim: None,
            server_name: None,
        }
    }

    fn repo(path: &str) -> String {
        format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn the_shipped_envoy_and_istio_configs_are_found_and_load() {
        for file in [
            "envoy/demo.yaml",
            "envoy/filter-example.yaml",
            "envoy/direct-okta.yaml",
            "istio/wasmplugin-sidecar.yaml",
        ] {
            let loaded = source(&repo(file)).load().unwrap();
            assert!(!loaded.texts.is_empty(), "{file}");
            loaded.filter_config().unwrap();
        }
    }

    #[test]
    fn several_filter_configurations_need_a_choice() {
        let err = source(&repo("envoy/two-teams.yaml")).load().err().unwrap();
        assert!(err.to_string().contains("--which 0..1"), "{err}");
        let mut chosen = source(&repo("envoy/two-teams.yaml"));
        chosen.which = Some(1);
        let loaded = chosen.load().unwrap();
        assert!(loaded.texts.iter().any(|t| t.contains("mcp-sales")));
    }
}
