//! Which listed items a caller may use, asking Cedar once per caller and item.
//!
//! A list decision depends only on the caller (principal, groups, claims) and the item (its id
//! and the hints its server declared); policies and static entities are fixed for the VM's life.
//! So the answer is remembered per caller (`Authorizer::decision_key`: the claims without the
//! per-token ones, unless a policy reads those): clients list on every connect and on every
//! change notification, a refreshed token is the same caller, and 50 Cedar evaluations per list
//! are not worth repeating.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::annotations::ToolAnnotations;
use crate::authz::{Authorizer, Target, ANNOTATION_HINTS};
use crate::operation::{Feature, Kind};
use crate::uri;
use crate::verify::VerifiedToken;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    token: [u8; 32],
    kind: Kind,
    item: String,
    hints: u8,
}

pub struct ListMemo {
    decisions: HashMap<Key, bool>,
    capacity: usize,
}

impl ListMemo {
    pub fn new(capacity: usize) -> Self {
        Self {
            decisions: HashMap::new(),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }

    fn remember(&mut self, key: Key, allowed: bool) {
        if self.decisions.len() >= self.capacity {
            self.decisions.clear();
        }
        self.decisions.insert(key, allowed);
    }
}

/// One flag per item of a list answer: may `identity` use it. Tool hints are learned on the way.
/// A listed resource is decided on its canonical URI, as a read of it would be, so that a
/// policy on `test://x` also hides `TEST://x`; a URI with no canonical form is not shown.
pub fn keep_listed(
    authz: &Authorizer,
    memo: &mut ListMemo,
    annotations: &mut ToolAnnotations,
    identity: &VerifiedToken,
    kind: Kind,
    items: &[Value],
) -> Vec<bool> {
    if kind == Kind::Item(Feature::Tool) {
        annotations.learn(items);
    }
    let declared = |item| declared_hints(kind, item);
    let caller = authz.decision_key(identity);
    let keys: Vec<Option<Key>> = items
        .iter()
        .map(|item| {
            let id = item.get(kind.id_key()).and_then(Value::as_str)?;
            let id = if kind == Kind::Item(Feature::Resource) {
                uri::canonical(id).ok()?
            } else {
                id.to_owned()
            };
            Some(Key {
                token: caller,
                kind,
                item: id,
                hints: hint_bits(declared(item)),
            })
        })
        .collect();
    let mut flags: Vec<Option<bool>> = keys
        .iter()
        .map(|key| match key {
            Some(key) => memo.decisions.get(key).copied(),
            None => Some(false),
        })
        .collect();
    let unknown: Vec<(usize, &Key)> = keys
        .iter()
        .enumerate()
        .filter_map(|(i, key)| key.as_ref().filter(|_| flags[i].is_none()).map(|k| (i, k)))
        .collect();
    if !unknown.is_empty() {
        let decided: Vec<bool> = match authz.caller(identity) {
            Ok(caller) => {
                let targets: Vec<Target<'_>> = unknown
                    .iter()
                    .map(|&(i, key)| Target {
                        kind,
                        name: &key.item,
                        arguments: None,
                        annotations: declared(&items[i]),
                    })
                    .collect();
                authz
                    .decide_all(&caller, &targets)
                    .iter()
                    .map(|d| d.allowed)
                    .collect()
            }
            Err(_) => vec![false; unknown.len()],
        };
        for (&(i, key), allowed) in unknown.iter().zip(decided) {
            flags[i] = Some(allowed);
            memo.remember(key.clone(), allowed);
        }
    }
    flags
        .into_iter()
        .map(|flag| flag.unwrap_or(false))
        .collect()
}

/// The annotations a tool entry of a list declares (other items have none that count).
fn declared_hints(kind: Kind, item: &Value) -> Option<&Map<String, Value>> {
    item.get("annotations")
        .and_then(Value::as_object)
        .filter(|_| kind == Kind::Item(Feature::Tool))
}

/// Two bits per hint: absent, true or false.
fn hint_bits(annotations: Option<&Map<String, Value>>) -> u8 {
    let Some(annotations) = annotations else {
        return 0;
    };
    ANNOTATION_HINTS
        .iter()
        .enumerate()
        .fold(0, |bits, (i, hint)| {
            let value = match annotations.get(*hint).and_then(Value::as_bool) {
                None => 0,
                Some(true) => 1,
                Some(false) => 2,
            };
            bits | (value << (2 * i))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::CedarSettings;
    use serde_json::json;

    fn authz(policies: &[&str]) -> Authorizer {
        let settings: CedarSettings =
            serde_json::from_value(json!({"policies": policies})).unwrap();
        Authorizer::new(settings, None).unwrap()
    }

    fn who(groups: &[&str], digest: u8) -> VerifiedToken {
        VerifiedToken {
            issuer: "i".into(),
            subject: Some("u".into()),
            expires_at: 0,
            key_id: String::new(),
            claims: json!({"sub": "u", "groups": groups})
                .as_object()
                .cloned()
                .unwrap(),
            digest: [digest; 32],
        }
    }

    #[test]
    fn items_are_decided_once_per_token() {
        let authz = authz(&[
            r#"permit(principal in THVGroup::"dev", action, resource);"#,
            r#"forbid(principal, action, resource == Tool::"rm");"#,
        ]);
        let (mut memo, mut annotations) = (ListMemo::new(100), ToolAnnotations::default());
        let items = [json!({"name": "ls"}), json!({"name": "rm"})];
        let mut list = |user: &VerifiedToken, memo: &mut ListMemo| {
            keep_listed(
                &authz,
                memo,
                &mut annotations,
                user,
                Kind::Item(Feature::Tool),
                &items,
            )
        };
        let dev = who(&["dev"], 1);
        assert_eq!(list(&dev, &mut memo), [true, false]);
        assert_eq!(memo.len(), 2);
        assert_eq!(list(&dev, &mut memo), [true, false]);
        assert_eq!(memo.len(), 2, "answered from memory");
        assert_eq!(list(&who(&[], 2), &mut memo), [false, false]);
        assert_eq!(memo.len(), 4, "another token is decided afresh");
    }

    fn token(groups: &[&str], jti: &str) -> VerifiedToken {
        let mut token = who(groups, 0);
        token.claims.insert("jti".into(), json!(jti));
        token.claims.insert("exp".into(), json!(jti.len()));
        token.digest = crate::verify::digest(jti);
        token
    }

    #[test]
    fn a_new_token_of_a_known_caller_reuses_its_decisions_unless_a_policy_reads_it() {
        let items = [json!({"name": "ls"}), json!({"name": "rm"})];
        for (policies, shared) in [
            (
                vec![r#"permit(principal in THVGroup::"dev", action, resource);"#],
                true,
            ),
            (
                vec![r#"permit(principal, action, resource) when { context.claim_exp > 0 };"#],
                false,
            ),
        ] {
            let authz = authz(&policies);
            let (mut memo, mut annotations) = (ListMemo::new(100), ToolAnnotations::default());
            let mut list = |user: &VerifiedToken| {
                let kind = Kind::Item(Feature::Tool);
                keep_listed(&authz, &mut memo, &mut annotations, user, kind, &items)
            };
            let first = list(&token(&["dev"], "a"));
            let second = list(&token(&["dev"], "bb"));
            assert_eq!(first, second);
            let third = list(&token(&["ops"], "ccc"));
            assert_eq!(third, [!shared, !shared], "{policies:?}");
            let expected = if shared { 4 } else { 6 };
            assert_eq!(memo.len(), expected, "{policies:?}");
        }
    }

    #[test]
    fn a_change_of_declared_hints_is_decided_afresh() {
        let authz = authz(&[
            r#"permit(principal, action, resource) when { resource.readOnlyHint == true };"#,
        ]);
        let (mut memo, mut annotations) = (ListMemo::new(100), ToolAnnotations::default());
        let user = who(&[], 1);
        let read_only = [json!({"name": "t", "annotations": {"readOnlyHint": true}})];
        let writes = [json!({"name": "t", "annotations": {"readOnlyHint": false}})];
        assert_eq!(
            keep_listed(
                &authz,
                &mut memo,
                &mut annotations,
                &user,
                Kind::Item(Feature::Tool),
                &read_only
            ),
            [true]
        );
        assert_eq!(
            keep_listed(
                &authz,
                &mut memo,
                &mut annotations,
                &user,
                Kind::Item(Feature::Tool),
                &writes
            ),
            [false]
        );
        assert_eq!(
            annotations.get("t").unwrap()["readOnlyHint"],
            false,
            "hints learned from the list"
        );
    }

    #[test]
    fn the_memo_stays_bounded() {
        let authz = authz(&["permit(principal, action, resource);"]);
        let (mut memo, mut annotations) = (ListMemo::new(3), ToolAnnotations::default());
        let items: Vec<Value> = (0..5).map(|i| json!({"name": format!("t{i}")})).collect();
        keep_listed(
            &authz,
            &mut memo,
            &mut annotations,
            &who(&[], 1),
            Kind::Item(Feature::Tool),
            &items,
        );
        assert!(memo.len() <= 3);
    }

    #[test]
    fn resource_templates_are_entities_policies_can_name() {
        let authz = authz(&[
            r#"permit(principal, action == Action::"read_resource", resource is ResourceTemplate) when { resource.uriTemplate like "file:///pub/*" };"#,
        ]);
        let (mut memo, mut annotations) = (ListMemo::new(100), ToolAnnotations::default());
        let items = [
            json!({"uriTemplate": "file:///pub/{name}"}),
            json!({"uriTemplate": "file:///private/{name}"}),
            json!({"name": "no template"}),
        ];
        let user = who(&[], 1);
        assert_eq!(
            keep_listed(
                &authz,
                &mut memo,
                &mut annotations,
                &user,
                Kind::ResourceTemplate,
                &items
            ),
            [true, false, false]
        );
    }

    #[test]
    fn listed_resources_are_decided_on_their_canonical_uri() {
        let authz = authz(&[
            "permit(principal, action, resource);",
            r#"forbid(principal, action, resource == Resource::"test://x");"#,
        ]);
        let (mut memo, mut annotations) = (ListMemo::new(100), ToolAnnotations::default());
        let items = [
            json!({"uri": "TEST://x"}),
            json!({"uri": "test://y"}),
            json!({"uri": "file:///bad%zz"}),
        ];
        assert_eq!(
            keep_listed(
                &authz,
                &mut memo,
                &mut annotations,
                &who(&[], 1),
                Kind::Item(Feature::Resource),
                &items
            ),
            [false, true, false]
        );
    }
}
