//! Tasks (MCP 2025-11-25) bound to the principal that created them, with no state in the filter.
//!
//! The server's task ids never reach the client: the answer that creates a task, and every
//! answer about one, carries the id sealed to the caller (`binding`). A `tasks/get`,
//! `tasks/result` or `tasks/cancel` must present a sealed id that opens for the caller; the
//! server then sees its own id again. Another principal holding the sealed id (leaked in a log, a
//! shared screen) cannot open it, on any worker or replica that shares the `binding_key`.
//!
//! `tasks/list` is the hard case: the server lists its own ids, and nothing in a task tells whose
//! it is. Sealing those to the caller would hand them every task the server lists, so a listed
//! task is kept only when its id already opens for the caller; with a server that lists raw ids
//! the caller sees an empty list, and keeps using the ids it was given at creation.

use serde_json::{json, Map, Value};

use crate::authz::PRINCIPAL_CLAIMS;
use crate::binding::{BindingError, BindingKey, Purpose};
use crate::verify::VerifiedToken;

/// `_meta` key under which a `tasks/result` answer names its task.
pub const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";

/// Whose tasks: the token's issuer and principal (as Cedar names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
}

impl<'a> Owner<'a> {
    /// `None` when the token names no principal; such a caller can own no task.
    pub fn of(token: &'a VerifiedToken) -> Option<Self> {
        let subject = PRINCIPAL_CLAIMS
            .iter()
            .find_map(|claim| token.claims.get(*claim).and_then(Value::as_str))?;
        Some(Self {
            issuer: &token.issuer,
            subject,
        })
    }
}

/// Why an answer about tasks cannot be passed on (it is then withheld: fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskAnswerError {
    #[error("the answer names task `{found}` where the request was about `{asked}`")]
    OtherTask { found: String, asked: String },
    #[error("the answer's `taskId` is not a string: `{0}`")]
    NotAString(String),
}

/// The server's id behind the sealed `params.taskId` of `tasks/get|result|cancel`, if it is the
/// caller's own.
pub fn open_id(key: &BindingKey, owner: Owner<'_>, sealed: &str) -> Result<String, BindingError> {
    key.open(Purpose::Task, sealed, owner.issuer, owner.subject)
}

/// The request to forward: the client's, with `params.taskId` the server's id again.
pub fn forward_request(
    id: Option<&Value>,
    method: &str,
    params: &Map<String, Value>,
    server_id: &str,
) -> Vec<u8> {
    let mut params = params.clone();
    params.insert("taskId".into(), Value::String(server_id.to_owned()));
    let mut request = json!({"jsonrpc": "2.0", "method": method, "params": params});
    if let Some(id) = id {
        request["id"] = id.clone();
    }
    request.to_string().into_bytes()
}

/// Seals the task ids in the answer to `request_id`: `result.task.taskId` (a task-augmented
/// call's `CreateTaskResult`), `result.taskId` (`tasks/get`, `tasks/cancel`) and the related-task
/// `_meta` of a `tasks/result`. With `asked` (the id a task method opened), an answer naming any
/// other task is refused rather than sealed, so a confused server cannot hand out a foreign task.
/// Returns whether the message changed; other messages and error answers are left alone.
pub fn seal_answer(
    key: &BindingKey,
    owner: Owner<'_>,
    message: &mut Value,
    request_id: &Value,
    asked: Option<&str>,
) -> Result<bool, TaskAnswerError> {
    if message.get("id") != Some(request_id) {
        return Ok(false);
    }
    let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
        return Ok(false);
    };
    let mut changed = false;
    let mut seal = |slot: &mut Value| -> Result<(), TaskAnswerError> {
        let id = slot
            .as_str()
            .ok_or_else(|| TaskAnswerError::NotAString(slot.to_string()))?;
        if let Some(asked) = asked.filter(|asked| *asked != id) {
            return Err(TaskAnswerError::OtherTask {
                found: id.to_owned(),
                asked: asked.to_owned(),
            });
        }
        *slot = Value::String(key.seal(Purpose::Task, id, owner.issuer, owner.subject));
        changed = true;
        Ok(())
    };
    if let Some(slot) = result.get_mut("taskId") {
        seal(slot)?;
    }
    if let Some(slot) = result
        .get_mut("task")
        .and_then(|task| task.get_mut("taskId"))
    {
        seal(slot)?;
    }
    let related = result
        .get_mut("_meta")
        .and_then(|meta| meta.get_mut(RELATED_TASK))
        .and_then(|related| related.get_mut("taskId"));
    if let Some(slot) = related {
        seal(slot)?;
    }
    Ok(changed)
}

/// Cuts a `tasks/list` answer to the tasks whose ids open for `owner`; returns how many were cut.
pub fn keep_own_tasks(
    key: &BindingKey,
    owner: Owner<'_>,
    message: &mut Value,
    request_id: &Value,
) -> usize {
    if message.get("id") != Some(request_id) {
        return 0;
    }
    let Some(tasks) = message
        .get_mut("result")
        .and_then(|result| result.get_mut("tasks"))
        .and_then(Value::as_array_mut)
    else {
        return 0;
    };
    let before = tasks.len();
    tasks.retain(|task| {
        task.get("taskId")
            .and_then(Value::as_str)
            .is_some_and(|id| open_id(key, owner, id).is_ok())
    });
    before - tasks.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BindingKey {
        BindingKey::from_base64("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap()
    }

    const ALICE: Owner<'static> = Owner {
        issuer: "https://as",
        subject: "alice",
    };
    const BOB: Owner<'static> = Owner {
        issuer: "https://as",
        subject: "bob",
    };

    fn sealed(id: &str, owner: Owner<'_>) -> String {
        key().seal(Purpose::Task, id, owner.issuer, owner.subject)
    }

    #[test]
    fn a_created_task_reaches_the_client_sealed_and_opens_only_for_its_creator() {
        let mut answer = json!({"jsonrpc": "2.0", "id": 1,
            "result": {"task": {"taskId": "t-1", "status": "working"}}});
        assert_eq!(
            seal_answer(&key(), ALICE, &mut answer, &json!(1), None),
            Ok(true)
        );
        let id = answer["result"]["task"]["taskId"].as_str().unwrap();
        assert_ne!(id, "t-1");
        assert_eq!(open_id(&key(), ALICE, id), Ok("t-1".into()));
        assert!(matches!(
            open_id(&key(), BOB, id),
            Err(BindingError::Foreign(_))
        ));
    }

    #[test]
    fn task_get_and_result_answers_are_sealed_when_they_name_the_task_asked() {
        let mut get = json!({"id": 2, "result": {"taskId": "t-1", "status": "completed"}});
        assert_eq!(
            seal_answer(&key(), ALICE, &mut get, &json!(2), Some("t-1")),
            Ok(true)
        );
        assert_eq!(get["result"]["taskId"], sealed("t-1", ALICE));
        let mut result = json!({"id": 3, "result": {"content": [],
            "_meta": {RELATED_TASK: {"taskId": "t-1"}}}});
        assert_eq!(
            seal_answer(&key(), ALICE, &mut result, &json!(3), Some("t-1")),
            Ok(true)
        );
        assert_eq!(
            result["result"]["_meta"][RELATED_TASK]["taskId"],
            sealed("t-1", ALICE)
        );
    }

    #[test]
    fn an_answer_about_another_task_is_withheld_not_sealed() {
        let mut get = json!({"id": 2, "result": {"taskId": "t-9"}});
        assert_eq!(
            seal_answer(&key(), ALICE, &mut get, &json!(2), Some("t-1")),
            Err(TaskAnswerError::OtherTask {
                found: "t-9".into(),
                asked: "t-1".into()
            })
        );
        let mut odd = json!({"id": 2, "result": {"taskId": 5}});
        assert!(seal_answer(&key(), ALICE, &mut odd, &json!(2), None).is_err());
    }

    #[test]
    fn other_messages_and_errors_are_left_alone() {
        let untouched = [
            json!({"id": 9, "result": {"taskId": "t"}}),
            json!({"id": 1, "error": {"code": -32602, "message": "no such task"}}),
            json!({"method": "notifications/tasks/status", "params": {"taskId": "t"}}),
        ];
        for message in untouched {
            let mut copy = message.clone();
            assert_eq!(
                seal_answer(&key(), ALICE, &mut copy, &json!(1), None),
                Ok(false)
            );
            assert_eq!(copy, message);
        }
    }

    #[test]
    fn a_task_list_shows_only_the_callers_own_tasks() {
        let mut list = json!({"id": 4, "result": {"tasks": [
            {"taskId": sealed("a", ALICE)},
            {"taskId": sealed("b", BOB)},
            {"taskId": "raw-server-id"},
            {"status": "working"},
        ], "nextCursor": "c"}});
        assert_eq!(keep_own_tasks(&key(), ALICE, &mut list, &json!(4)), 3);
        assert_eq!(
            list["result"]["tasks"],
            json!([{"taskId": sealed("a", ALICE)}])
        );
        assert_eq!(list["result"]["nextCursor"], "c");
    }

    #[test]
    fn the_forwarded_request_carries_the_servers_id() {
        let params = json!({"taskId": "b1.x.y", "_meta": {"k": 1}});
        let body = forward_request(
            Some(&json!(5)),
            "tasks/get",
            params.as_object().unwrap(),
            "t-1",
        );
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            sent,
            json!({"jsonrpc": "2.0", "id": 5, "method": "tasks/get",
                   "params": {"taskId": "t-1", "_meta": {"k": 1}}})
        );
    }

    #[test]
    fn the_owner_is_the_principal_cedar_names() {
        let token = |claims: Value| VerifiedToken {
            issuer: "https://as".into(),
            subject: None,
            expires_at: 0,
            key_id: String::new(),
            digest: [0; 32],
            claims: claims.as_object().cloned().unwrap(),
        };
        let machine = token(json!({"client_id": "svc"}));
        assert_eq!(
            Owner::of(&machine),
            Some(Owner {
                issuer: "https://as",
                subject: "svc"
            })
        );
        assert_eq!(Owner::of(&token(json!({"aud": "x"}))), None);
    }
}
