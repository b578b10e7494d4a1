//! RBAC authorisation for ServiceAccount tokens, as kube-apiserver's RBAC authorizer.
//!
//! Only requests whose bearer token belongs to a ServiceAccount are checked: tokens
//! registered with [`crate::EmulatorHandle::add_token`] for a `system:serviceaccount:NS:NAME`
//! user, and the `data.token` of stored Secrets of type
//! `kubernetes.io/service-account-token`. Every other request (the kubeconfig's token,
//! anonymous ones, other users) stays allowed, as before.
//!
//! The stored Roles, ClusterRoles, RoleBindings and ClusterRoleBindings decide: a
//! ClusterRoleBinding grants its ClusterRole's rules everywhere; a RoleBinding grants its
//! Role's (or ClusterRole's) rules in its namespace. Rules match verbs, API groups,
//! resources (`plural`, `plural/sub`, `*`, `*/sub`) and `resourceNames`, like kube.
//! Discovery and other non-resource paths are always allowed (as `system:discovery`).

use std::collections::HashMap;

use base64::Engine;
use parking_lot::RwLock;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::resources::GroupResource;
use crate::store::State;

/// The API group of RBAC objects.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// The user-name prefix of ServiceAccounts.
const SA_PREFIX: &str = "system:serviceaccount:";

/// Tokens registered for users (`token → user name`).
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    map: RwLock<HashMap<String, String>>,
}

impl Tokens {
    /// Registers (or re-registers) a token.
    pub(crate) fn add(&self, token: &str, user: &str) {
        self.map.write().insert(token.to_owned(), user.to_owned());
    }

    /// Forgets a token.
    pub(crate) fn remove(&self, token: &str) {
        self.map.write().remove(token);
    }

    fn get(&self, token: &str) -> Option<String> {
        self.map.read().get(token).cloned()
    }
}

/// The signature of `resources::builtin`.
type BuiltinFn = fn(&str, &str, &str, &str, bool, &[&str], bool, bool, bool) -> crate::resources::ResourceDef;

/// The `rbac.authorization.k8s.io/v1` resources, served from the start.
pub(crate) fn builtins(builtin: BuiltinFn) -> Vec<crate::resources::ResourceDef> {
    [
        ("roles", "Role", true),
        ("rolebindings", "RoleBinding", true),
        ("clusterroles", "ClusterRole", false),
        ("clusterrolebindings", "ClusterRoleBinding", false),
    ]
    .into_iter()
    .map(|(plural, kind, namespaced)| {
        builtin(
            RBAC_GROUP,
            "v1",
            plural,
            kind,
            namespaced,
            &[],
            false,
            false,
            true,
        )
    })
    .collect()
}

/// What a request wants to do, in RBAC's terms.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'a str,
    /// API group, `""` for core.
    pub group: &'a str,
    /// Plural resource name.
    pub resource: &'a str,
    /// Subresource, e.g. `status`.
    pub subresource: Option<&'a str>,
    /// Namespace of the request, `None` at the cluster scope.
    pub namespace: Option<&'a str>,
    /// Object name, for requests on one object.
    pub name: Option<&'a str>,
}

/// The ServiceAccount user of a token, if the token belongs to one.
fn service_account_user(tokens: &Tokens, state: &State, token: &str) -> Option<String> {
    if let Some(user) = tokens.get(token) {
        return user.starts_with(SA_PREFIX).then_some(user);
    }
    let secrets = state.collections.get(&GroupResource {
        group: String::new(),
        resource: "secrets".into(),
    })?;
    let engine = base64::engine::general_purpose::STANDARD;
    secrets.objects.values().find_map(|stored| {
        let secret = stored.value();
        if secret.get("type").and_then(Value::as_str) != Some("kubernetes.io/service-account-token") {
            return None;
        }
        let encoded = secret.pointer("/data/token").and_then(Value::as_str)?;
        let decoded = engine.decode(encoded).ok()?;
        if decoded != token.as_bytes() {
            return None;
        }
        let ns = secret.pointer("/metadata/namespace").and_then(Value::as_str)?;
        let sa = secret
            .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
            .and_then(Value::as_str)?;
        Some(format!("{SA_PREFIX}{ns}:{sa}"))
    })
}

fn objects(state: &State, resource: &str) -> Vec<Value> {
    state
        .collections
        .get(&GroupResource {
            group: RBAC_GROUP.into(),
            resource: resource.into(),
        })
        .map(|c| c.objects.values().map(|s| s.value()).collect())
        .unwrap_or_default()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether a binding's subjects include the ServiceAccount `ns:name`.
fn binds(binding: &Value, user: &str, sa_ns: &str, sa_name: &str) -> bool {
    let Some(subjects) = binding.get("subjects").and_then(Value::as_array) else {
        return false;
    };
    subjects.iter().any(|s| {
        let field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or_default();
        match field("kind") {
            "ServiceAccount" => field("name") == sa_name && field("namespace") == sa_ns,
            "User" => field("name") == user,
            "Group" => {
                let g = field("name");
                g == "system:serviceaccounts"
                    || g == format!("system:serviceaccounts:{sa_ns}")
                    || g == "system:authenticated"
            }
            _ => false,
        }
    })
}

/// Whether one `PolicyRule` allows the request.
fn rule_allows(rule: &Value, a: &Attributes<'_>) -> bool {
    let verbs = strings(rule, "verbs");
    let groups = strings(rule, "apiGroups");
    let resources = strings(rule, "resources");
    let names = strings(rule, "resourceNames");
    let verb_ok = verbs.iter().any(|v| v == "*" || v == a.verb);
    let group_ok = groups.iter().any(|g| g == "*" || g == a.group);
    let resource_ok = resources.iter().any(|r| match a.subresource {
        None => r == "*" || r == a.resource,
        Some(sub) => r == "*" || *r == format!("{}/{sub}", a.resource) || *r == format!("*/{sub}"),
    });
    let names_ok = names.is_empty() || a.name.is_some_and(|n| names.iter().any(|x| x == n));
    verb_ok && group_ok && resource_ok && names_ok
}

/// The rules of a role reference, or none if the role does not exist.
fn role_rules(roles: &[Value], cluster_roles: &[Value], role_ref: &Value, ns: &str) -> Vec<Value> {
    let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = role_ref.get("name").and_then(Value::as_str).unwrap_or_default();
    let (pool, want_ns) = match kind {
        "ClusterRole" => (cluster_roles, None),
        "Role" => (roles, Some(ns)),
        _ => return vec![],
    };
    pool.iter()
        .filter(|r| r.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
        .filter(|r| {
            want_ns.is_none_or(|n| r.pointer("/metadata/namespace").and_then(Value::as_str) == Some(n))
        })
        .flat_map(|r| {
            r.get("rules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// Decides a request: `Ok` when allowed (or not subject to RBAC), a 403 `Forbidden` otherwise.
pub(crate) fn authorize(
    tokens: &Tokens,
    state: &State,
    token: &str,
    a: &Attributes<'_>,
) -> Result<(), ApiError> {
    if token == crate::KUBECONFIG_USER || token == "anonymous" || token.is_empty() {
        return Ok(());
    }
    let Some(user) = service_account_user(tokens, state, token) else {
        return Ok(());
    };
    let Some((sa_ns, sa_name)) = user.strip_prefix(SA_PREFIX).and_then(|r| r.split_once(':')) else {
        return Ok(());
    };
    let roles = objects(state, "roles");
    let cluster_roles = objects(state, "clusterroles");
    let mut rules = Vec::new();
    for binding in objects(state, "clusterrolebindings") {
        if binds(&binding, &user, sa_ns, sa_name)
            && let Some(role_ref) = binding.get("roleRef")
            && role_ref.get("kind").and_then(Value::as_str) == Some("ClusterRole")
        {
            rules.extend(role_rules(&roles, &cluster_roles, role_ref, ""));
        }
    }
    if let Some(ns) = a.namespace {
        for binding in objects(state, "rolebindings") {
            if binding.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
                && binds(&binding, &user, sa_ns, sa_name)
                && let Some(role_ref) = binding.get("roleRef")
            {
                rules.extend(role_rules(&roles, &cluster_roles, role_ref, ns));
            }
        }
    }
    if rules.iter().any(|r| rule_allows(r, a)) {
        return Ok(());
    }
    Err(forbidden(&user, a))
}

/// kube-apiserver's 403 for an RBAC denial.
pub(crate) fn forbidden(user: &str, a: &Attributes<'_>) -> ApiError {
    let qualified = crate::error::qualified(a.group, a.resource);
    let subject = match a.name {
        Some(n) => format!("{qualified} \"{n}\""),
        None => qualified,
    };
    let resource = match a.subresource {
        Some(sub) => format!("{}/{sub}", a.resource),
        None => a.resource.to_owned(),
    };
    let scope = match a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    ApiError {
        code: 403,
        reason: "Forbidden".into(),
        message: format!(
            "{subject} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            a.verb, a.group
        ),
        details: Some(json!({"name": a.name.unwrap_or_default(), "group": a.group, "kind": a.resource})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_like_kube() {
        let a = Attributes {
            verb: "patch",
            group: "kopf.dev",
            resource: "kopfexamples",
            subresource: Some("status"),
            namespace: Some("default"),
            name: Some("x"),
        };
        let rule = |r: Value| rule_allows(&r, &a);
        assert!(rule(
            json!({"verbs": ["patch"], "apiGroups": ["kopf.dev"], "resources": ["kopfexamples/status"]})
        ));
        assert!(rule(
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        ));
        assert!(rule(
            json!({"verbs": ["patch"], "apiGroups": ["kopf.dev"], "resources": ["*/status"]})
        ));
        assert!(!rule(
            json!({"verbs": ["patch"], "apiGroups": ["kopf.dev"], "resources": ["kopfexamples"]})
        ));
        assert!(!rule(
            json!({"verbs": ["get"], "apiGroups": ["kopf.dev"], "resources": ["kopfexamples/status"]})
        ));
        assert!(!rule(
            json!({"verbs": ["patch"], "apiGroups": [""], "resources": ["kopfexamples/status"]})
        ));
        assert!(rule(
            json!({"verbs": ["patch"], "apiGroups": ["kopf.dev"], "resources": ["*"], "resourceNames": ["x"]})
        ));
        assert!(!rule(
            json!({"verbs": ["patch"], "apiGroups": ["kopf.dev"], "resources": ["*"], "resourceNames": ["y"]})
        ));
    }

    #[test]
    fn forbidden_reads_like_kube_apiserver() {
        let a = Attributes {
            verb: "patch",
            group: "kopf.dev",
            resource: "kopfexamples",
            subresource: None,
            namespace: Some("default"),
            name: Some("kopf-example-1"),
        };
        let e = forbidden("system:serviceaccount:ns:sa", &a);
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "kopfexamples.kopf.dev \"kopf-example-1\" is forbidden: User \"system:serviceaccount:ns:sa\" \
             cannot patch resource \"kopfexamples\" in API group \"kopf.dev\" in the namespace \"default\""
        );
        let list = Attributes {
            verb: "list",
            group: "",
            resource: "pods",
            ..Default::default()
        };
        assert!(
            forbidden("u", &list)
                .message
                .ends_with("cannot list resource \"pods\" in API group \"\" at the cluster scope")
        );
    }
}
