//! Resource selectors, parsed by Kopf's rules, and the filter markers.

use kopf_abi::protocol::ResourceSelector;

/// The special values of Kopf: [`PRESENT`], [`ABSENT`] and [`EVERYTHING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Marker(MarkerKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MarkerKind {
    Present,
    Absent,
    Everything,
}

impl Marker {
    /// True for [`PRESENT`].
    pub fn is_present(self) -> bool {
        self.0 == MarkerKind::Present
    }

    /// True for [`ABSENT`].
    pub fn is_absent(self) -> bool {
        self.0 == MarkerKind::Absent
    }

    /// True for [`EVERYTHING`].
    pub fn is_everything(self) -> bool {
        self.0 == MarkerKind::Everything
    }
}

/// A label, annotation or field filter: the key or field must exist (`kopf.PRESENT`).
pub const PRESENT: Marker = Marker(MarkerKind::Present);
/// A label, annotation or field filter: the key or field must not exist (`kopf.ABSENT`).
pub const ABSENT: Marker = Marker(MarkerKind::Absent);
/// A resource selector for all resources except events (`kopf.EVERYTHING`).
pub const EVERYTHING: Marker = Marker(MarkerKind::Everything);

/// One positional argument of a resource selector: a string or [`EVERYTHING`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorArg {
    /// A group, `group/version`, version, or name.
    Str(String),
    /// A marker ([`EVERYTHING`] is the only one allowed here).
    Marker(Marker),
}

impl From<&str> for SelectorArg {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for SelectorArg {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<&String> for SelectorArg {
    fn from(s: &String) -> Self {
        Self::Str(s.clone())
    }
}

impl From<Marker> for SelectorArg {
    fn from(m: Marker) -> Self {
        Self::Marker(m)
    }
}

/// Matches kubectl-style `plural.v1.group` names: Kopf's `K8S_GROUP_VERSION_PATTERN`,
/// `^[^.]*\.v\d+((alpha|beta)\d+)?(\..*)?$`.
fn is_versioned_dotted(s: &str) -> bool {
    let Some((_, rest)) = s.split_once('.') else {
        return false;
    };
    let version = rest.split('.').next().unwrap_or_default();
    is_k8s_version(version)
}

/// `v\d+((alpha|beta)\d+)?`
fn is_k8s_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let rest = &rest[digits..];
    if rest.is_empty() {
        return true;
    }
    let tail = rest.strip_prefix("alpha").or_else(|| rest.strip_prefix("beta"));
    matches!(tail, Some(t) if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()))
}

/// Parses positional selector arguments and keyword names by Kopf's rules
/// (`kopf._cogs.structs.references.Selector`) into the ABI's [`ResourceSelector`].
///
/// | positional | meaning |
/// |---|---|
/// | `("kopf.dev", "v1", "kopfexamples")` | group, version, any name |
/// | `("kopf.dev/v1", "kopfexamples")` | group/version, any name |
/// | `("v1", "pods")` | the core group `""`, version `v1` |
/// | `("kopf.dev", "kopfexamples")` | group only (preferred version) |
/// | `("kopfexamples.kopf.dev")` | kubectl style: name.group |
/// | `("kopfexamples.v1.kopf.dev")` | kubectl style: name.version.group |
/// | `("kopfexamples")` | a bare name: plural, singular, kind or short name, any group |
/// | `(EVERYTHING)` | all resources except events |
///
/// Keyword names (`kind`, `plural`, `singular`, `shortcut`, `category`) and `group` /
/// `version` come in `keywords`. Exactly one name must result.
pub fn parse_selector(args: &[SelectorArg], keywords: &SelectorKeywords) -> Result<ResourceSelector, String> {
    let mut sel = ResourceSelector {
        group: keywords.group.clone(),
        version: keywords.version.clone(),
        plural: keywords.plural.clone(),
        kind: keywords.kind.clone(),
        singular: keywords.singular.clone(),
        shortcut: keywords.shortcut.clone(),
        category: keywords.category.clone(),
        ..ResourceSelector::default()
    };
    let str_of = |a: &SelectorArg| -> Result<String, String> {
        match a {
            SelectorArg::Str(s) => Ok(s.clone()),
            SelectorArg::Marker(m) if m.is_everything() => {
                Err("EVERYTHING must be the only positional argument".to_owned())
            }
            SelectorArg::Marker(m) => Err(format!("{m:?} is not a resource selector")),
        }
    };
    match args {
        [] => {}
        [SelectorArg::Marker(m)] if m.is_everything() => sel.everything = true,
        [a1] => {
            let a1 = str_of(a1)?;
            if is_versioned_dotted(&a1) {
                let parts: Vec<&str> = a1.splitn(3, '.').collect();
                if parts.len() >= 3 {
                    sel.group = Some(parts[2].to_owned());
                }
                sel.version = Some(parts[1].to_owned());
                sel.any_name = Some(parts[0].to_owned());
            } else if let Some((name, group)) = a1.split_once('.') {
                sel.group = Some(group.to_owned());
                sel.any_name = Some(name.to_owned());
            } else {
                sel.any_name = Some(a1);
            }
        }
        [a1, a2] => {
            let (a1, a2) = (str_of(a1)?, str_of(a2)?);
            if let Some((group, version)) = a1.rsplit_once('/') {
                sel.group = Some(group.to_owned());
                sel.version = Some(version.to_owned());
            } else if a1 == "v1" {
                sel.group = Some(String::new());
                sel.version = Some(a1);
            } else {
                sel.group = Some(a1);
            }
            sel.any_name = Some(a2);
        }
        [a1, a2, a3] => {
            sel.group = Some(str_of(a1)?);
            sel.version = Some(str_of(a2)?);
            sel.any_name = Some(str_of(a3)?);
        }
        _ => return Err("too many positional arguments; at most 3 are accepted".to_owned()),
    }

    let names = [
        &sel.kind,
        &sel.plural,
        &sel.singular,
        &sel.shortcut,
        &sel.category,
        &sel.any_name,
    ];
    let given: Vec<&str> = names.iter().filter_map(|n| n.as_deref()).collect();
    if given.iter().any(|n| n.is_empty()) {
        return Err("names must not be empty strings".to_owned());
    }
    match (given.len(), sel.everything) {
        (0, false) => Err("unspecific resource with no names".to_owned()),
        (0, true) | (1, false) => Ok(sel),
        _ => Err(format!("ambiguous resource specification with {given:?}")),
    }
}

/// The keyword parts of a selector: `group=`, `version=` and the explicit names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorKeywords {
    /// `group=`.
    pub group: Option<String>,
    /// `version=`.
    pub version: Option<String>,
    /// `kind=`.
    pub kind: Option<String>,
    /// `plural=`.
    pub plural: Option<String>,
    /// `singular=`.
    pub singular: Option<String>,
    /// `shortcut=`.
    pub shortcut: Option<String>,
    /// `category=`.
    pub category: Option<String>,
}

impl SelectorKeywords {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ResourceSelector, String> {
        let args: Vec<SelectorArg> = args.iter().map(|a| SelectorArg::from(*a)).collect();
        parse_selector(&args, &SelectorKeywords::default())
    }

    fn sel(group: Option<&str>, version: Option<&str>, any: &str) -> ResourceSelector {
        ResourceSelector {
            group: group.map(str::to_owned),
            version: version.map(str::to_owned),
            any_name: Some(any.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn positional_forms() {
        let full = sel(Some("kopf.dev"), Some("v1"), "kopfexamples");
        assert_eq!(parse(&["kopf.dev", "v1", "kopfexamples"]).unwrap(), full);
        assert_eq!(parse(&["kopf.dev/v1", "kopfexamples"]).unwrap(), full);
        assert_eq!(parse(&["kopfexamples.v1.kopf.dev"]).unwrap(), full);
        assert_eq!(parse(&["v1", "pods"]).unwrap(), sel(Some(""), Some("v1"), "pods"));
        assert_eq!(
            parse(&["", "v1", "pods"]).unwrap(),
            sel(Some(""), Some("v1"), "pods")
        );
        assert_eq!(
            parse(&["apps", "v1", "deployments"]).unwrap(),
            sel(Some("apps"), Some("v1"), "deployments")
        );
        assert_eq!(
            parse(&["kopf.dev", "kopfexamples"]).unwrap(),
            sel(Some("kopf.dev"), None, "kopfexamples")
        );
        assert_eq!(
            parse(&["kopfexamples.kopf.dev"]).unwrap(),
            sel(Some("kopf.dev"), None, "kopfexamples")
        );
        assert_eq!(parse(&["kopfexamples"]).unwrap(), sel(None, None, "kopfexamples"));
        assert_eq!(parse(&["pods"]).unwrap(), sel(None, None, "pods"));
        // A version-looking second part without a group: version only.
        assert_eq!(parse(&["pods.v1"]).unwrap(), sel(None, Some("v1"), "pods"));
        assert_eq!(
            parse(&["deployments.v1beta1.apps"]).unwrap(),
            sel(Some("apps"), Some("v1beta1"), "deployments")
        );
        // "v1x" is not a version: it is a group.
        assert_eq!(
            parse(&["things.v1x.example"]).unwrap(),
            sel(Some("v1x.example"), None, "things")
        );
    }

    #[test]
    fn keyword_names() {
        let kw = SelectorKeywords {
            group: Some("kopf.dev".into()),
            kind: Some("KopfExample".into()),
            ..Default::default()
        };
        let s = parse_selector(&[], &kw).unwrap();
        assert_eq!(s.kind.as_deref(), Some("KopfExample"));
        assert_eq!(s.group.as_deref(), Some("kopf.dev"));
        for (field, kw) in [
            (
                "plural",
                SelectorKeywords {
                    plural: Some("x".into()),
                    ..Default::default()
                },
            ),
            (
                "singular",
                SelectorKeywords {
                    singular: Some("x".into()),
                    ..Default::default()
                },
            ),
            (
                "shortcut",
                SelectorKeywords {
                    shortcut: Some("x".into()),
                    ..Default::default()
                },
            ),
            (
                "category",
                SelectorKeywords {
                    category: Some("x".into()),
                    ..Default::default()
                },
            ),
        ] {
            let s = parse_selector(&[], &kw).unwrap();
            let json = serde_json::to_value(&s).unwrap();
            assert_eq!(json[field], "x", "{field}");
        }
    }

    #[test]
    fn everything() {
        let s = parse_selector(&[EVERYTHING.into()], &SelectorKeywords::default()).unwrap();
        assert!(s.everything);
        assert_eq!(s.any_name, None);
        let kw = SelectorKeywords {
            group: Some("kopf.dev".into()),
            ..Default::default()
        };
        let s = parse_selector(&[EVERYTHING.into()], &kw).unwrap();
        assert!(s.everything);
        assert_eq!(s.group.as_deref(), Some("kopf.dev"));
        assert!(parse_selector(&["a".into(), EVERYTHING.into()], &SelectorKeywords::default()).is_err());
        assert!(parse_selector(&[PRESENT.into()], &SelectorKeywords::default()).is_err());
    }

    #[test]
    fn errors() {
        assert!(parse(&[]).unwrap_err().contains("no names"));
        assert!(parse(&["a", "b", "c", "d"]).unwrap_err().contains("too many"));
        assert!(parse(&[""]).unwrap_err().contains("empty"));
        let kw = SelectorKeywords {
            kind: Some("K".into()),
            ..Default::default()
        };
        let err = parse_selector(&["pods".into()], &kw).unwrap_err();
        assert!(err.contains("ambiguous"), "{err}");
        let kw = SelectorKeywords {
            kind: Some("K".into()),
            ..Default::default()
        };
        assert!(parse_selector(&[EVERYTHING.into()], &kw).is_err());
    }
}
