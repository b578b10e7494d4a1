//! Resource versions: opaque strings to clients for years, comparable since Kubernetes 1.35
//! (KEP-5504, "comparable resource versions"): decimal integers without leading zeros,
//! ordered like numbers for the objects of one resource. etcd's revisions always were.

use std::cmp::Ordering;

/// Orders two resource versions of one resource if both have the comparable form (digits
/// only, no leading zero, not `0`); `None` otherwise, and then they are opaque.
///
/// ```
/// use std::cmp::Ordering;
/// use kopf_cli::structs::versions::compare;
/// assert_eq!(compare("99", "100"), Some(Ordering::Less));
/// assert_eq!(compare("abc", "100"), None);
/// ```
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    (is_comparable(a) && is_comparable(b)).then(|| a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
}

fn is_comparable(version: &str) -> bool {
    !version.is_empty() && !version.starts_with('0') && version.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_value_and_anything_else_is_opaque() {
        assert_eq!(compare("9", "10"), Some(Ordering::Less));
        assert_eq!(
            compare("123456789012345678901234567890", "99"),
            Some(Ordering::Greater)
        );
        assert_eq!(compare("42", "42"), Some(Ordering::Equal));
        for opaque in ["", "0", "012", "12a", "-1", "1.5", " 1"] {
            assert_eq!(compare(opaque, "5"), None, "{opaque:?}");
            assert_eq!(compare("5", opaque), None, "{opaque:?}");
        }
    }
}
