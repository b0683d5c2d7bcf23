//! `rmicro new NAME`: a new service project laid out as the seed's go-micro
//! services are (`micro new`), from the templates in `templates/new/` (minijinja),
//! built into the binary.

use std::path::{Path, PathBuf};

/// When a file is part of a new project.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    /// Every project.
    Always,
    /// A project with a database (`--db sqlite|mysql|postgres`).
    Db,
}

/// Where each file of a new project comes from: its path (itself a template),
/// its template, and when it is made.
const FILES: &[(&str, &str, When)] = &[
    (
        "Cargo.toml",
        include_str!("../templates/new/Cargo.toml.j2"),
        When::Always,
    ),
    (
        "build.rs",
        include_str!("../templates/new/build.rs.j2"),
        When::Always,
    ),
    (
        "proto/{{ name }}.proto",
        include_str!("../templates/new/proto/NAME.proto.j2"),
        When::Always,
    ),
    (
        "src/lib.rs",
        include_str!("../templates/new/src/lib.rs.j2"),
        When::Always,
    ),
    (
        "src/main.rs",
        include_str!("../templates/new/src/main.rs.j2"),
        When::Always,
    ),
    (
        "src/handler/mod.rs",
        include_str!("../templates/new/src/handler/mod.rs.j2"),
        When::Always,
    ),
    (
        "src/domain/mod.rs",
        include_str!("../templates/new/src/domain/mod.rs.j2"),
        When::Always,
    ),
    (
        "src/domain/model/mod.rs",
        include_str!("../templates/new/src/domain/model/mod.rs.j2"),
        When::Always,
    ),
    (
        "src/domain/repository/mod.rs",
        include_str!("../templates/new/src/domain/repository/mod.rs.j2"),
        When::Always,
    ),
    (
        "src/domain/service/mod.rs",
        include_str!("../templates/new/src/domain/service/mod.rs.j2"),
        When::Always,
    ),
    (
        "src/subscriber/mod.rs",
        include_str!("../templates/new/src/subscriber/mod.rs.j2"),
        When::Always,
    ),
    (
        "migrations/README.md",
        include_str!("../templates/new/migrations/README.md.j2"),
        When::Always,
    ),
    (
        "config/config.yaml",
        include_str!("../templates/new/config/config.yaml.j2"),
        When::Always,
    ),
    (
        "tests/service.rs",
        include_str!("../templates/new/tests/service.rs.j2"),
        When::Always,
    ),
    (
        "Dockerfile",
        include_str!("../templates/new/Dockerfile.j2"),
        When::Always,
    ),
    (
        "Makefile",
        include_str!("../templates/new/Makefile.j2"),
        When::Always,
    ),
    (
        "README.md",
        include_str!("../templates/new/README.md.j2"),
        When::Always,
    ),
    (
        ".gitignore",
        include_str!("../templates/new/gitignore.j2"),
        When::Always,
    ),
    (
        "src/domain/repository/entity.rs",
        include_str!("../templates/new/src/domain/repository/entity.rs.j2"),
        When::Db,
    ),
    (
        "migrations/mysql/0001_create_records.sql",
        include_str!("../templates/new/migrations/mysql/0001_create_records.sql.j2"),
        When::Db,
    ),
    (
        "migrations/postgres/0001_create_records.sql",
        include_str!("../templates/new/migrations/postgres/0001_create_records.sql.j2"),
        When::Db,
    ),
    (
        "migrations/sqlite/0001_create_records.sql",
        include_str!("../templates/new/migrations/sqlite/0001_create_records.sql.j2"),
        When::Db,
    ),
];

/// `rmicro new`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct NewFlags {
    /// The service's name: its crate, binary, registry name and proto package
    /// (`user`, `order-history`).
    pub name: String,
    /// Where its records are kept: `sqlite` (a file, nothing to install),
    /// `mysql` (MySQL/MariaDB, the seed's), `postgres`, through SeaORM with
    /// migrations; or `none` (in memory).
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "mysql", "postgres", "none"])]
    pub db: String,
    /// The broker its `make run` uses: `http` (embedded), `nats`, `redis`,
    /// `rabbitmq` or `mqtt`; the adapter is compiled in.
    #[arg(long = "broker", id = "new_broker", default_value = "http", value_parser = ["http", "memory", "nats", "redis", "rabbitmq", "mqtt"])]
    pub broker: String,
    /// The registry its `make run` uses (`--registry`, the flag every command
    /// has): `local` (embedded), `etcd`, `consul` or `mdns`; the adapter is
    /// compiled in. Set from the command line, not parsed here.
    #[arg(skip)]
    pub registry: String,
    /// Depend on the rmicro checkout at PATH instead of a released version (its
    /// Cargo.lock is copied too, so the project builds with the same crates).
    #[arg(long, value_name = "PATH")]
    pub rmicro_path: Option<PathBuf>,
    /// Write into the directory even if it exists, replacing the files it makes.
    #[arg(long)]
    pub force: bool,
}

/// Why a project was not made.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The name cannot be a crate and proto package name (bad usage: exit 2).
    #[error("`{name}` cannot name a service: {rule}")]
    BadName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A flag asks for what is not built yet (bad usage: exit 2).
    #[error("{0}")]
    Unsupported(String),
    /// The directory exists and `--force` was not given.
    #[error("`{0}` already exists; pick another name, remove it, or pass --force to write over it")]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("cannot write `{path}`: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A template did not render (a bug in rmicro's templates).
    #[error("template `{file}` did not render: {source}")]
    Template {
        /// The template.
        file: &'static str,
        /// Why.
        source: minijinja::Error,
    },
}

impl NewError {
    /// The exit code: 2 for bad usage, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            NewError::BadName { .. } | NewError::Unsupported(_) => 2,
            _ => 1,
        }
    }
}

/// Rust's keywords and the crate names a package may not take.
const RESERVED: &[&str] = &[
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "gen",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "test",
    "rmicro",
    "proto",
];

/// Checks `name` against what a crate, a binary and a proto package accept.
pub fn check_name(name: &str) -> Result<(), NewError> {
    let bad = |rule| {
        Err(NewError::BadName {
            name: name.to_owned(),
            rule,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("a name has 1 to 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("a name starts with a lower-case letter (a-z)");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return bad("a name has only lower-case letters, digits, `-` and `_`");
    }
    if name.ends_with(['-', '_']) || name.contains("--") || name.contains("__") {
        return bad("`-` and `_` only go between letters or digits");
    }
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        return bad("a name is not a Rust keyword or a reserved crate name");
    }
    Ok(())
}

/// `order-history` → `OrderHistory`.
fn pascal(name: &str) -> String {
    name.split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The adapters the project compiles in for its registry and broker.
fn features(flags: &NewFlags) -> Vec<&'static str> {
    let mut features = Vec::new();
    for wanted in [flags.registry.as_str(), flags.broker.as_str()] {
        if let Some(feature) = [
            "etcd", "consul", "mdns", "nats", "redis", "rabbitmq", "mqtt",
        ]
        .into_iter()
        .find(|f| *f == wanted)
        {
            features.push(feature);
        }
    }
    if flags.db != "none" {
        features.push("db");
    }
    features
}

/// What a project's templates say of its database.
struct Database {
    /// For people: `SQLite`, `MySQL/MariaDB`, `PostgreSQL`.
    title: &'static str,
    /// The configuration section it is read from (the seed's `mysql`).
    section: &'static str,
    /// The section's built-in default, as JSON.
    default: String,
    /// That default as a URL without credentials.
    shown: String,
}

impl Database {
    fn of(db: &str, package: &str) -> Database {
        match db {
            "postgres" => Database {
                title: "PostgreSQL",
                section: "postgres",
                default: format!(
                    r#"{{"driver": "postgres", "host": "127.0.0.1", "port": 5432, "user": "postgres", "pwd": "", "database": "{package}"}}"#
                ),
                shown: format!("postgres://127.0.0.1:5432/{package}"),
            },
            "mysql" => Database {
                title: "MySQL/MariaDB",
                section: "mysql",
                default: format!(
                    r#"{{"host": "127.0.0.1", "port": 3306, "user": "root", "pwd": "", "database": "{package}"}}"#
                ),
                shown: format!("mysql://127.0.0.1:3306/{package}"),
            },
            _ => Database {
                title: "SQLite",
                section: "sqlite",
                default: format!(r#"{{"driver": "sqlite", "database": "{package}.db"}}"#),
                shown: format!("sqlite://{package}.db (made when missing)"),
            },
        }
    }
}

/// How the project depends on `crate_dir` of rmicro (`rmicro`, `rmicro-build`):
/// by path into a checkout, or by version.
fn dependency(checkout: Option<&Path>, crate_dir: &str, features: &[&str]) -> String {
    let source = match checkout {
        Some(root) => format!(
            "path = {}",
            toml_string(&root.join("crates").join(crate_dir).to_string_lossy())
        ),
        None => format!("version = \"{}\"", env!("CARGO_PKG_VERSION")),
    };
    if features.is_empty() {
        format!("{{ {source} }}")
    } else {
        let list: Vec<String> = features.iter().map(|f| format!("\"{f}\"")).collect();
        format!("{{ {source}, features = [{}] }}", list.join(", "))
    }
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Makes the project `flags.name` in `parent`; the directory it made.
pub fn generate(flags: &NewFlags, parent: &Path) -> Result<PathBuf, NewError> {
    check_name(&flags.name)?;
    if !["local", "memory", "etcd", "consul", "mdns"].contains(&flags.registry.as_str()) {
        return Err(NewError::Unsupported(format!(
            "--registry {}: known registries are local, memory, etcd, consul and mdns",
            flags.registry
        )));
    }
    let root = parent.join(&flags.name);
    if root.exists() && !flags.force {
        return Err(NewError::Exists(root));
    }
    let checkout = match &flags.rmicro_path {
        Some(path) => Some(std::path::absolute(path).map_err(|source| NewError::Write {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let features = features(flags);
    let package = flags.name.replace('-', "_");
    let database = Database::of(&flags.db, &package);
    let context = minijinja::context! {
        name => &flags.name,
        crate_name => &package,
        package => &package,
        pascal => pascal(&flags.name),
        db => &flags.db,
        broker => &flags.broker,
        registry => &flags.registry,
        db_title => database.title,
        db_section => database.section,
        db_default => &database.default,
        db_default_shown => &database.shown,
        env_prefix => package.to_ascii_uppercase(),
        rmicro_dep => dependency(checkout.as_deref(), "rmicro", &features),
        rmicro_build_dep => dependency(checkout.as_deref(), "rmicro-build", &[]),
    };
    let mut env = minijinja::Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .map_err(|source| NewError::Template {
            file: "(syntax)",
            source,
        })?;
    env.set_syntax(syntax);
    let mut rust_files = Vec::new();
    for (path, template, when) in FILES {
        if *when == When::Db && flags.db == "none" {
            continue;
        }
        let render = |source: &str| {
            env.render_str(source, &context)
                .map_err(|source| NewError::Template { file: path, source })
        };
        let file = root.join(render(path)?);
        let text = render(template)?;
        write(&file, text.as_bytes())?;
        if file.extension().is_some_and(|e| e == "rs") {
            rust_files.push(file);
        }
    }
    format_rust(&rust_files);
    if let Some(lock) = checkout
        .as_ref()
        .map(|c| c.join("Cargo.lock"))
        .filter(|l| l.is_file())
    {
        let bytes = std::fs::read(&lock).map_err(|source| NewError::Write {
            path: lock.clone(),
            source,
        })?;
        write(&root.join("Cargo.lock"), &bytes)?;
    }
    Ok(root)
}

/// Lays the generated Rust out as `cargo fmt` would (line widths depend on the
/// service's name), so the project starts `cargo fmt --check` clean. Without
/// `rustfmt` the files stay as rendered: valid, only laid out differently.
fn format_rust(files: &[PathBuf]) {
    if files.is_empty() {
        return;
    }
    let formatted = std::process::Command::new("rustfmt")
        .args(["--edition", "2024"])
        .args(files)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !formatted.is_ok_and(|status| status.success()) {
        eprintln!("note: rustfmt did not run; `cargo fmt` in the project lays the code out");
    }
}

fn write(file: &Path, bytes: &[u8]) -> Result<(), NewError> {
    let failed = |source| NewError::Write {
        path: file.to_owned(),
        source,
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    std::fs::write(file, bytes).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_crate_rules() {
        for good in ["user", "order-history", "svc_2", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for (bad, rule) in [
            ("", "1 to 64"),
            ("User", "lower-case letter"),
            ("9lives", "lower-case letter"),
            ("my.svc", "only lower-case"),
            ("trailing-", "between letters"),
            ("two--dashes", "between letters"),
            ("self", "keyword"),
            ("proc-macro", "reserved"),
        ] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.contains(rule), "{bad}: {err}");
        }
    }

    #[test]
    fn pascal_case_joins_the_parts() {
        assert_eq!(pascal("order-history"), "OrderHistory");
        assert_eq!(pascal("user"), "User");
        assert_eq!(pascal("svc_2"), "Svc2");
    }

    #[test]
    fn dependencies_by_path_are_toml_strings() {
        let dep = dependency(Some(Path::new("/x/a \"b\"")), "rmicro", &["etcd", "nats"]);
        assert_eq!(
            dep,
            r#"{ path = "/x/a \"b\"/crates/rmicro", features = ["etcd", "nats"] }"#
        );
        assert!(dependency(None, "rmicro-build", &[]).starts_with("{ version = "));
    }
}
