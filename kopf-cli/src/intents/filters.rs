//! Static filter matching of handlers against objects, as Kopf's `registries.match` and
//! `prematch`: labels, annotations, field values, field changes. Callback filters (and
//! `when=`) are evaluated by the plugin; here they yield [`FilterMatch::NeedsCallback`]
//! unless a static filter already rules the handler out.

use std::collections::BTreeMap;

use kopf_abi::protocol::{FilterValue, Filters};
use serde_json::{Map, Value};

use crate::structs::pyjson::py_eq;
use crate::structs::selectors::{LabelRequirement, LabelSelector};
use crate::structs::{bodies::Body, dicts};

/// The result of static filter matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterMatch {
    /// All filters match.
    Match,
    /// Some static filter does not match.
    NoMatch,
    /// All static filters match; callback filters must decide.
    NeedsCallback,
}

impl FilterMatch {
    fn and(self, other: FilterMatch) -> FilterMatch {
        match (self, other) {
            (Self::NoMatch, _) | (_, Self::NoMatch) => Self::NoMatch,
            (Self::NeedsCallback, _) | (_, Self::NeedsCallback) => Self::NeedsCallback,
            _ => Self::Match,
        }
    }

    fn from_bool(b: bool) -> Self {
        if b { Self::Match } else { Self::NoMatch }
    }
}

/// What the filters are matched against.
#[derive(Debug, Clone, Copy)]
pub struct FilterSubject<'a> {
    /// The object body (labels and annotations are always taken from it).
    pub body: &'a Value,
    /// For changing causes: the old and new essences (field filters use them instead of the
    /// body; either old or new suffices for `value=`). `None` for other causes.
    pub essences: Option<(Option<&'a Value>, Option<&'a Value>)>,
}

/// Kopf's `prematch`: labels, annotations, field value, `when` (no field-change check).
/// Used to decide the finalizer and whether an object concerns changing handlers at all.
pub fn prematch(filters: &Filters, subject: &FilterSubject<'_>) -> FilterMatch {
    let body = subject.body;
    let mut result = match_metadata(&filters.labels, Body::new(body).labels());
    if result == FilterMatch::NoMatch {
        return result;
    }
    result = result.and(match_metadata(
        &filters.annotations,
        Body::new(body).annotations(),
    ));
    if result == FilterMatch::NoMatch {
        return result;
    }
    result = result.and(match_field_values(filters, subject));
    if filters.when && result != FilterMatch::NoMatch {
        result = result.and(FilterMatch::NeedsCallback);
    }
    result
}

/// Kopf's `match`: [`prematch`] plus the field-change filters (`old=`/`new=`, and an actual
/// change of the field for update and field handlers when `field_needs_change`).
pub fn matches(filters: &Filters, subject: &FilterSubject<'_>, field_needs_change: bool) -> FilterMatch {
    let pre = prematch(filters, subject);
    if pre == FilterMatch::NoMatch {
        return pre;
    }
    pre.and(match_field_changes(filters, subject, field_needs_change))
}

fn match_metadata(
    pattern: &BTreeMap<String, FilterValue>,
    content: Option<&Map<String, Value>>,
) -> FilterMatch {
    let mut result = FilterMatch::Match;
    for (key, filter) in pattern {
        let value = content.and_then(|c| c.get(key));
        let ok = match filter {
            FilterValue::Absent => value.is_none(),
            FilterValue::Present => value.is_some(),
            FilterValue::Callback => {
                result = FilterMatch::NeedsCallback;
                true
            }
            FilterValue::Equals(want) => value.is_some_and(|v| py_eq(want, v)),
        };
        if !ok {
            return FilterMatch::NoMatch;
        }
    }
    result
}

fn field_path(filters: &Filters) -> Option<Vec<String>> {
    filters
        .field
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(dicts::parse_field)
}

fn match_field_values(filters: &Filters, subject: &FilterSubject<'_>) -> FilterMatch {
    let Some(path) = field_path(filters) else {
        return FilterMatch::Match;
    };
    let values: Vec<Option<&Value>> = match subject.essences {
        Some((old, new)) => vec![dicts::resolve_opt(new, &path), dicts::resolve_opt(old, &path)],
        None => vec![dicts::resolve(subject.body, &path)],
    };
    match &filters.value {
        None | Some(FilterValue::Present) => FilterMatch::from_bool(values.iter().any(Option::is_some)),
        Some(FilterValue::Absent) => FilterMatch::from_bool(values.iter().any(Option::is_none)),
        Some(FilterValue::Callback) => FilterMatch::NeedsCallback,
        Some(FilterValue::Equals(want)) => {
            FilterMatch::from_bool(values.iter().flatten().any(|v| py_eq(want, v)))
        }
    }
}

fn match_one(filter: &Option<FilterValue>, value: Option<&Value>) -> FilterMatch {
    match filter {
        None => FilterMatch::Match,
        Some(FilterValue::Absent) => FilterMatch::from_bool(value.is_none()),
        Some(FilterValue::Present) => FilterMatch::from_bool(value.is_some()),
        Some(FilterValue::Callback) => FilterMatch::NeedsCallback,
        Some(FilterValue::Equals(want)) => FilterMatch::from_bool(value.is_some_and(|v| py_eq(want, v))),
    }
}

fn match_field_changes(
    filters: &Filters,
    subject: &FilterSubject<'_>,
    field_needs_change: bool,
) -> FilterMatch {
    let (Some((old, new)), Some(path)) = (subject.essences, field_path(filters)) else {
        return FilterMatch::Match;
    };
    let old = dicts::resolve_opt(old, &path);
    let new = dicts::resolve_opt(new, &path);
    let changed = match (old, new) {
        (None, None) => false,
        (Some(a), Some(b)) => !py_eq(a, b),
        _ => true,
    };
    if field_needs_change && !changed {
        return FilterMatch::NoMatch;
    }
    match_one(&filters.old, old).and(match_one(&filters.new, new))
}

/// The label selector the API server can apply for all these handlers' filters at once
/// (Kopf #1311: fewer objects listed and watched): per label key that every handler
/// filters by, the weakest requirement all of them imply (`app=web` and `app=db` give
/// `app in (db,web)`; a value and `PRESENT` give `app`). A value, `PRESENT` and `ABSENT`
/// become `key=value`, `key` and `!key`; callbacks and values the server cannot express
/// stay client-side only. `None` when nothing is shared (or there are no handlers): then
/// every object is watched. The client-side filters still decide for each handler.
pub fn common_label_selector<'a>(filters: impl IntoIterator<Item = &'a Filters>) -> Option<LabelSelector> {
    let mut common: Option<BTreeMap<String, LabelRequirement>> = None;
    for filters in filters {
        let mut own = label_requirements(filters);
        common = Some(match common {
            None => own,
            Some(shared) => shared
                .into_iter()
                .filter_map(|(key, requirement)| {
                    let theirs = own.remove(&key)?;
                    Some((key, requirement.either(theirs)?))
                })
                .collect(),
        });
    }
    LabelSelector::new(common.unwrap_or_default().into_values())
}

/// The label filters of one handler that a server-side selector can state, by key.
fn label_requirements(filters: &Filters) -> BTreeMap<String, LabelRequirement> {
    filters
        .labels
        .iter()
        .filter_map(|(key, value)| match value {
            FilterValue::Equals(Value::String(text)) => LabelRequirement::equals(key, text),
            FilterValue::Present => LabelRequirement::exists(key),
            FilterValue::Absent => LabelRequirement::not_exists(key),
            FilterValue::Equals(_) | FilterValue::Callback => None,
        })
        .map(|requirement| (requirement.key().to_owned(), requirement))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_values() {
        let body = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": 1}});
        let mut f = Filters::default();
        f.labels.insert("a".into(), FilterValue::Equals(json!("b")));
        f.labels.insert("c".into(), FilterValue::Absent);
        let s = FilterSubject {
            body: &body,
            essences: None,
        };
        assert_eq!(prematch(&f, &s), FilterMatch::Match);
        f.field = Some("spec.x".into());
        f.value = Some(FilterValue::Equals(json!(2)));
        assert_eq!(prematch(&f, &s), FilterMatch::NoMatch);
        f.value = Some(FilterValue::Callback);
        assert_eq!(prematch(&f, &s), FilterMatch::NeedsCallback);
    }

    #[test]
    fn either_old_or_new_suffices() {
        let body = json!({});
        let (old, new) = (json!({"spec": {"x": 1}}), json!({"spec": {"x": 2}}));
        let f = Filters {
            field: Some("spec.x".into()),
            value: Some(FilterValue::Equals(json!(1))),
            ..Default::default()
        };
        let s = FilterSubject {
            body: &body,
            essences: Some((Some(&old), Some(&new))),
        };
        assert_eq!(matches(&f, &s, true), FilterMatch::Match);
        let s = FilterSubject {
            body: &body,
            essences: Some((Some(&old), Some(&old))),
        };
        assert_eq!(matches(&f, &s, true), FilterMatch::NoMatch);
        assert_eq!(matches(&f, &s, false), FilterMatch::Match);
    }

    fn labelled(pairs: &[(&str, FilterValue)]) -> Filters {
        let mut f = Filters::default();
        for (key, value) in pairs {
            f.labels.insert((*key).into(), value.clone());
        }
        f
    }

    #[test]
    fn the_common_label_selector_is_what_every_handler_states() {
        let web = FilterValue::Equals(json!("web"));
        let a = labelled(&[
            ("app", web.clone()),
            ("tier", FilterValue::Present),
            ("skip", FilterValue::Absent),
        ]);
        let b = labelled(&[
            ("app", web.clone()),
            ("skip", FilterValue::Absent),
            ("x", FilterValue::Callback),
        ]);
        let selector = common_label_selector([&a, &b]).map(|s| s.to_string());
        assert_eq!(selector.as_deref(), Some("app=web,!skip"));
        // A handler without label filters sees every object: nothing can be left out.
        assert_eq!(common_label_selector([&a, &Filters::default()]), None);
        // Different values of one key: either of them.
        let c = labelled(&[
            ("app", FilterValue::Equals(json!("db"))),
            ("skip", FilterValue::Present),
        ]);
        let selector = common_label_selector([&a, &c]).map(|s| s.to_string());
        assert_eq!(selector.as_deref(), Some("app in (db,web)"));
        let e = labelled(&[("app", FilterValue::Present)]);
        let selector = common_label_selector([&a, &c, &e]).map(|s| s.to_string());
        assert_eq!(selector.as_deref(), Some("app"));
        // Callbacks and non-string values stay client-side.
        let d = labelled(&[
            ("app", FilterValue::Callback),
            ("n", FilterValue::Equals(json!(1))),
        ]);
        assert_eq!(common_label_selector([&d]), None);
        assert_eq!(common_label_selector(std::iter::empty()), None);
    }
}
