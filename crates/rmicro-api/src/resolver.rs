//! go-micro's path rule (the `micro` resolver of `micro api`): which service and
//! endpoint an HTTP path names, with no registry lookup.
//!
//! | path | service | endpoint |
//! |---|---|---|
//! | `/foo` | `foo` | `Foo.Call` |
//! | `/foo/bar` | `foo` | `Foo.Bar` |
//! | `/foo/foo/bar` | `foo` | `Foo.Bar` |
//! | `/foo/bar/baz` | `foo` | `Bar.Baz` |
//! | `/foo/bar/baz-xyz` | `foo` | `Bar.BazXyz` |
//! | `/foo/bar/baz/cat` | `foo.bar` | `Baz.Cat` |
//! | `/v1/foo/bar` | `v1.foo` | `Foo.Bar` |
//! | `/v1/foo/bar/baz` | `v1.foo` | `Bar.Baz` |
//!
//! A namespace (`--namespace go.micro.api`) is put in front of the service name.

/// The service and endpoint a path names by go-micro's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The registry name of the service, namespace included (`go.micro.api.foo`).
    pub service: String,
    /// `Receiver.Method` (`Foo.Bar`).
    pub endpoint: String,
}

/// Resolves `path` (no query) by go-micro's rule; `None` for `/` or a path with an
/// empty or non-name segment (`/foo//bar`, `/foo/ba r`).
///
/// ```
/// use rmicro_api::resolver::resolve;
/// let r = resolve("/v1/foo/bar", "").expect("a name");
/// assert_eq!((r.service.as_str(), r.endpoint.as_str()), ("v1.foo", "Foo.Bar"));
/// let r = resolve("/foo/bar/baz-xyz", "go.micro.api").expect("a name");
/// assert_eq!((r.service.as_str(), r.endpoint.as_str()), ("go.micro.api.foo", "Bar.BazXyz"));
/// ```
pub fn resolve(path: &str, namespace: &str) -> Option<Resolved> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    if !parts.iter().all(|p| is_segment(p)) {
        return None;
    }
    let (name, method): (Vec<&str>, Vec<&str>) = match parts.len() {
        1 => (vec![parts[0]], vec![parts[0], "call"]),
        2 => (vec![parts[0]], parts.clone()),
        3 if is_version(parts[0]) => (parts[..2].to_vec(), parts[1..].to_vec()),
        n => (parts[..n - 2].to_vec(), parts[n - 2..].to_vec()),
    };
    let name = name.join(".");
    let service = if namespace.is_empty() {
        name
    } else {
        format!("{}.{name}", namespace.trim_end_matches('.'))
    };
    let endpoint = method
        .iter()
        .map(|p| camel(p))
        .collect::<Vec<_>>()
        .join(".");
    Some(Resolved { service, endpoint })
}

/// The path go-micro's rule resolves to `service`'s `endpoint` (`Receiver.Method`),
/// the namespace taken off the front of the name: the path `--print-routes` shows.
/// `None` when no path resolves to it (a name the rule cannot spell, or a service
/// outside the namespace).
///
/// ```
/// use rmicro_api::resolver::path_for;
/// assert_eq!(path_for("greeter", "Greeter.SayHello", "").as_deref(), Some("/greeter/say-hello"));
/// assert_eq!(path_for("foo.bar", "Baz.Cat", "").as_deref(), Some("/foo/bar/baz/cat"));
/// ```
pub fn path_for(service: &str, endpoint: &str, namespace: &str) -> Option<String> {
    let name = if namespace.is_empty() {
        service
    } else {
        service
            .strip_prefix(namespace.trim_end_matches('.'))?
            .strip_prefix('.')?
    };
    let (receiver, method) = endpoint.split_once('.')?;
    let name_parts: Vec<&str> = name.split('.').collect();
    let (receiver, method) = (kebab(receiver), kebab(method));
    let mut parts: Vec<String> = name_parts.iter().map(|p| (*p).to_owned()).collect();
    let last = name_parts.last().copied().unwrap_or_default();
    let short = match name_parts.len() {
        // `/foo/bar` → `foo`, `Foo.Bar`.
        1 => receiver == last,
        // `/v1/foo/bar` → `v1.foo`, `Foo.Bar`.
        2 => is_version(name_parts[0]) && receiver == last,
        _ => false,
    };
    if !short {
        parts.push(receiver);
    }
    parts.push(method);
    let path = format!("/{}", parts.join("/"));
    // Only a path that resolves back to the same names is a route.
    let back = resolve(&path, namespace)?;
    (back.service == service && back.endpoint == endpoint).then_some(path)
}

/// A path segment go-micro's rule accepts: letters, digits, `-` and `_`.
fn is_segment(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `v1`, `v2`, …: a version segment.
fn is_version(part: &str) -> bool {
    part.len() > 1 && part.starts_with('v') && part[1..].bytes().all(|b| b.is_ascii_digit())
}

/// `baz-xyz` → `BazXyz`, `sayHello` → `SayHello` (each `-` word capitalised, as
/// go-micro does).
fn camel(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for word in part.split('-') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// `SayHello` → `say-hello`, the segment [`camel`] turns back into the name;
/// `HTTPGet` → `hTTPGet` where dashes cannot spell it.
fn kebab(name: &str) -> String {
    let dashed = dashed(name);
    if camel(&dashed) == name {
        return dashed;
    }
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `SayHello` → `say-hello`.
fn dashed(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('-');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_go_micros_table() {
        for (path, service, endpoint) in [
            ("/foo", "foo", "Foo.Call"),
            ("/foo/bar", "foo", "Foo.Bar"),
            ("/foo/foo/bar", "foo", "Foo.Bar"),
            ("/foo/bar/baz", "foo", "Bar.Baz"),
            ("/foo/bar/baz-xyz", "foo", "Bar.BazXyz"),
            ("/foo/bar/baz/cat", "foo.bar", "Baz.Cat"),
            ("/v1/foo/bar", "v1.foo", "Foo.Bar"),
            ("/v1/foo/bar/baz", "v1.foo", "Bar.Baz"),
            ("/greeter/sayHello", "greeter", "Greeter.SayHello"),
            ("/foo/bar/", "foo", "Foo.Bar"),
        ] {
            let r = resolve(path, "").unwrap_or_else(|| panic!("{path} resolves"));
            assert_eq!(
                (r.service.as_str(), r.endpoint.as_str()),
                (service, endpoint),
                "{path}"
            );
        }
    }

    #[test]
    fn the_namespace_goes_in_front() {
        let r = resolve("/foo/bar", "go.micro.api").unwrap();
        assert_eq!(r.service, "go.micro.api.foo");
        assert_eq!(r.endpoint, "Foo.Bar");
        let r = resolve("/v1/foo/bar/baz", "go.micro.api.").unwrap();
        assert_eq!(r.service, "go.micro.api.v1.foo");
    }

    #[test]
    fn paths_that_name_nothing() {
        for path in [
            "",
            "/",
            "//",
            "/foo//bar",
            "/foo/ba r",
            "/foo/../bar",
            "/foo/b%20r",
        ] {
            assert_eq!(resolve(path, ""), None, "{path}");
        }
    }

    #[test]
    fn printed_paths_resolve_back_to_their_endpoint() {
        for (service, endpoint, ns, path) in [
            (
                "greeter",
                "Greeter.SayHello",
                "",
                Some("/greeter/say-hello"),
            ),
            ("greeter", "Admin.Reset", "", Some("/greeter/admin/reset")),
            ("foo.bar", "Baz.Cat", "", Some("/foo/bar/baz/cat")),
            ("v1.foo", "Foo.Bar", "", Some("/v1/foo/bar")),
            ("v1.foo", "Bar.Baz", "", Some("/v1/foo/bar/baz")),
            (
                "go.micro.api.foo",
                "Foo.Bar",
                "go.micro.api",
                Some("/foo/bar"),
            ),
            // Outside the namespace, or not spellable by the rule.
            ("other.foo", "Foo.Bar", "go.micro.api", None),
            ("greeter", "Greeter.HTTPGet", "", Some("/greeter/hTTPGet")),
            ("my greeter", "Greeter.SayHello", "", None),
        ] {
            assert_eq!(
                path_for(service, endpoint, ns).as_deref(),
                path,
                "{service} {endpoint}"
            );
        }
    }
}
