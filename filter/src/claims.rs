//! Turning JWT claims and tool arguments into Cedar values, the way ToolHive does.

use cedar_policy::RestrictedExpression;
use mcp_mesh_claims::lookup;
use serde_json::{Map, Value};

/// Deeper nesting is dropped: policies never need it, and it bounds the work per token.
const MAX_DEPTH: usize = 10;
/// Cedar's `decimal` holds four fractional digits within about ±9.2e14.
const MAX_DECIMAL: f64 = 922_337_203_685_477.0;

/// A JSON value as a Cedar value: string, Bool, Long, Decimal (for fractions), Set, Record.
/// `null`, out-of-range numbers and too-deep nesting have no Cedar form and give `None`.
pub fn to_cedar(value: &Value) -> Option<RestrictedExpression> {
    convert(value, 0)
}

fn convert(value: &Value, depth: usize) -> Option<RestrictedExpression> {
    if depth > MAX_DEPTH {
        return None;
    }
    match value {
        Value::Null => None,
        Value::Bool(flag) => Some(RestrictedExpression::new_bool(*flag)),
        Value::String(text) => Some(RestrictedExpression::new_string(text.clone())),
        Value::Number(number) => number_to_cedar(number),
        Value::Array(items) => Some(RestrictedExpression::new_set(
            items.iter().filter_map(|item| convert(item, depth + 1)),
        )),
        Value::Object(fields) => RestrictedExpression::new_record(
            fields
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), convert(value, depth + 1)?))),
        )
        .ok(),
    }
}

/// An integral number is a `Long` however it is spelled (`0`, `-0`, `0.0`, `0e0`, `1.0e2`): a
/// policy `context.arg_replicas == 0` compares a `decimal` 0.0 as unequal to the `Long` 0, so a
/// client could slip past a forbid by re-spelling the number. Fractions become a `decimal` (four
/// fractional digits); integers beyond `i64`, and fractions beyond `decimal`, have no Cedar form.
///
/// serde_json is built without `arbitrary_precision`, so a number that is not a plain integer
/// arrives as the nearest double: integral spellings beyond 2^53 (`9007199254740993.0`) are read
/// as that double's integer, as JavaScript and Python servers read them too.
fn number_to_cedar(number: &serde_json::Number) -> Option<RestrictedExpression> {
    if let Some(long) = number.as_i64() {
        return Some(RestrictedExpression::new_long(long));
    }
    let float = number.as_f64().filter(|f| f.is_finite())?;
    // -2^63 and 2^63 are exact doubles; `as` is exact for integral doubles in between.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if float.fract() == 0.0 && (-LIMIT..LIMIT).contains(&float) {
        return Some(RestrictedExpression::new_long(float as i64));
    }
    (float.abs() < MAX_DECIMAL).then(|| RestrictedExpression::new_decimal(format!("{float:.4}")))
}

/// Every claim as `claim_<name>`, and the multi-valued ones also as a Set `claimset_<name>`
/// (an array's strings, or a space-separated string split, as OAuth `scope` is).
pub fn claim_attributes(
    claims: &Map<String, Value>,
    multi_valued: &[String],
) -> Vec<(String, RestrictedExpression)> {
    let mut attributes: Vec<(String, RestrictedExpression)> = claims
        .iter()
        .filter_map(|(name, value)| Some((format!("claim_{name}"), to_cedar(value)?)))
        .collect();
    for name in multi_valued {
        let members: Vec<String> = match claims.get(name) {
            Some(Value::String(text)) => text.split_ascii_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => continue,
        };
        attributes.push((
            format!("claimset_{name}"),
            RestrictedExpression::new_set(
                members.into_iter().map(RestrictedExpression::new_string),
            ),
        ));
    }
    attributes
}

/// Longest delegation chain read from `act`: deeper actors are not named to policies.
const MAX_ACTORS: usize = 8;

/// Who acts for the token's subject (RFC 8693 §4.1 `act`), for policies that grant an agent
/// something only on behalf of some users: `actor` is the party presenting the token (the
/// outermost `act.sub`), `actor_chain` every actor from the current one back to the first.
/// A token without `act` (the subject acts for itself) has neither attribute, so policies test
/// `context has actor`. Only `sub` names an actor: the other members of `act` are identity
/// details, not the identity. An `act` that names no actor, or a chain longer than policies are
/// shown, is an error: dropped silently, it would pass `forbid … when { context has actor }`.
pub fn delegation_attributes(
    claims: &Map<String, Value>,
) -> Result<Vec<(String, RestrictedExpression)>, String> {
    let mut chain = Vec::new();
    let mut act = claims.get("act");
    while let Some(actor) = act {
        let Some(Value::String(sub)) = actor.get("sub") else {
            return Err("its `act` claim names no actor (an object with a string `sub`)".into());
        };
        if chain.len() == MAX_ACTORS {
            return Err(format!(
                "its `act` chain is longer than {MAX_ACTORS} actors"
            ));
        }
        chain.push(sub.clone());
        act = actor.get("act");
    }
    let Some(current) = chain.first().cloned() else {
        return Ok(Vec::new());
    };
    Ok(vec![
        (
            "actor".to_owned(),
            RestrictedExpression::new_string(current),
        ),
        (
            "actor_chain".to_owned(),
            RestrictedExpression::new_set(chain.into_iter().map(RestrictedExpression::new_string)),
        ),
    ])
}

/// Tool or prompt arguments: scalars as `arg_<key>`; objects and arrays only as
/// `arg_<key>_present: true` (their content is the server's business, not the policy's).
pub fn argument_attributes(
    arguments: Option<&Map<String, Value>>,
) -> Vec<(String, RestrictedExpression)> {
    let Some(arguments) = arguments else {
        return Vec::new();
    };
    arguments
        .iter()
        .filter_map(|(key, value)| match value {
            Value::Object(_) | Value::Array(_) => Some((
                format!("arg_{key}_present"),
                RestrictedExpression::new_bool(true),
            )),
            scalar => Some((format!("arg_{key}"), to_cedar(scalar)?)),
        })
        .collect()
}

/// The groups of a caller: the configured group claim, or else the first present of `groups`,
/// `roles`, `cognito:groups`; then the role claim's values. Only arrays count.
pub fn groups(
    claims: &Map<String, Value>,
    group_claim: Option<&str>,
    role_claim: Option<&str>,
) -> Vec<String> {
    let mut found = Vec::new();
    let configured = group_claim.and_then(|name| lookup(claims, name));
    let primary = configured.or_else(|| {
        ["groups", "roles", "cognito:groups"]
            .into_iter()
            .find_map(|name| claims.get(name))
    });
    let roles = role_claim.and_then(|name| lookup(claims, name));
    for value in [primary, roles].into_iter().flatten() {
        match value {
            Value::Array(items) => {
                for group in items.iter().filter_map(Value::as_str) {
                    if !found.iter().any(|g| g == group) {
                        found.push(group.to_owned());
                    }
                }
            }
            Value::String(_) => {
                log::warn!(
                    "mcp-mesh-auth: a group or role claim is a string, not an array; it is ignored"
                );
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn groups_come_from_the_configured_claim_or_the_usual_ones() {
        let claims = map(json!({"groups": ["a", "b"], "roles": ["admin"], "custom": ["c"]}));
        assert_eq!(groups(&claims, None, None), ["a", "b"]);
        assert_eq!(groups(&claims, Some("custom"), None), ["c"]);
        assert_eq!(
            groups(&claims, Some("absent"), None),
            ["a", "b"],
            "absent configured claim falls back"
        );
        assert_eq!(groups(&claims, None, Some("roles")), ["a", "b", "admin"]);
        let cognito = map(json!({"cognito:groups": ["x"]}));
        assert_eq!(groups(&cognito, None, None), ["x"]);
    }

    #[test]
    fn group_claims_may_be_url_keys_or_dot_paths() {
        let claims =
            map(json!({"https://example.com/groups": ["g"], "realm_access": {"roles": ["r"]}}));
        assert_eq!(
            groups(&claims, Some("https://example.com/groups"), None),
            ["g"]
        );
        assert_eq!(groups(&claims, Some("realm_access.roles"), None), ["r"]);
    }

    #[test]
    fn a_string_group_claim_is_ignored() {
        let claims = map(json!({"groups": "mcp-admin"}));
        assert!(groups(&claims, None, None).is_empty());
    }

    #[test]
    fn claims_become_cedar_values_of_their_type() {
        let claims = map(
            json!({"sub": "a", "n": 3, "f": 1.5, "b": true, "set": ["x"], "obj": {"k": "v"}, "nil": null}),
        );
        let names: Vec<String> = claim_attributes(&claims, &[])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for expected in [
            "claim_sub",
            "claim_n",
            "claim_f",
            "claim_b",
            "claim_set",
            "claim_obj",
        ] {
            assert!(
                names.contains(&expected.to_owned()),
                "{expected} in {names:?}"
            );
        }
        assert!(!names.contains(&"claim_nil".to_owned()));
    }

    #[test]
    fn multi_valued_claims_become_sets() {
        let claims = map(json!({"scope": "a b", "scp": ["c"]}));
        let names: Vec<String> =
            claim_attributes(&claims, &["scope".into(), "scp".into(), "absent".into()])
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        assert!(
            names.contains(&"claimset_scope".to_owned())
                && names.contains(&"claimset_scp".to_owned())
        );
        assert!(!names.iter().any(|n| n == "claimset_absent"));
    }

    #[test]
    fn nesting_beyond_ten_levels_is_dropped() {
        let mut deep = json!("leaf");
        for _ in 0..12 {
            deep = json!([deep]);
        }
        assert!(to_cedar(&deep).is_some(), "the outer levels stay");
        assert!(convert(&json!("x"), MAX_DEPTH + 1).is_none());
    }

    #[test]
    fn arguments_keep_scalars_and_flag_structures() {
        let args = map(json!({"ns": "prod", "n": 2, "opts": {"a": 1}, "list": [1]}));
        let mut names: Vec<String> = argument_attributes(Some(&args))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["arg_list_present", "arg_n", "arg_ns", "arg_opts_present"]
        );
    }
}
