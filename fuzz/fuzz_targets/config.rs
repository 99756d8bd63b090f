//! `FilterConfig::from_json` on arbitrary bytes (Cedar policies, JWKS, paths, methods
//! included) never panics. The corpus starts from the configurations in envoy/*.yaml.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_mesh_auth_filter::config::FilterConfig;
use mcp_mesh_auth_filter::engine::Engine;

fuzz_target!(|data: &[u8]| {
    match FilterConfig::from_json(data) {
        Ok(config) => {
            // What the filter then builds from an accepted configuration.
            assert!(!config.issuers.is_empty());
            assert!(config.mcp_path.starts_with('/'));
            let _ = serde_json::from_str::<serde_json::Value>(&config.metadata_document)
                .expect("the metadata document is JSON");
            let _ = Engine::new(config);
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
});
