//! Turning what the user passed to `redmap run` into a job library:
//! - a single `.rs` file: compiled with plain `rustc -O` into a cdylib,
//!   against the job API source this binary carries (no cargo, no network);
//! - a directory holding a cargo crate of type cdylib: `cargo build --release`;
//! - a `.so`/`.dylib`: used as it is.
//!
//! Single-file builds are cached under a hash of the source, the job API and
//! the compiler's full version, so running an unchanged job again compiles
//! nothing. Each build happens in a fresh temporary directory that is then
//! renamed into place, so concurrent runs never see a half-written library.
//! Compiler output goes straight to the user's terminal, verbatim.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use log::{debug, info};
use sha2::{Digest, Sha256};

/// The job API, compiled into single-file jobs as a crate named `redmap`:
/// each file of `src/job/` (tests aside) as (path in the crate, source).
pub const JOB_API_SOURCES: &[(&str, &str)] = &[
    ("job/mod.rs", include_str!("../job/mod.rs")),
    ("job/batch.rs", include_str!("../job/batch.rs")),
    ("job/codec.rs", include_str!("../job/codec.rs")),
    ("job/input.rs", include_str!("../job/input.rs")),
    ("job/keyed.rs", include_str!("../job/keyed.rs")),
    ("job/run.rs", include_str!("../job/run.rs")),
    ("job/keyed/ffi.rs", include_str!("../job/keyed/ffi.rs")),
];

/// The C header for jobs written in C (`redmap_job.h`).
pub const C_HEADER: &str = include_str!("redmap_job.h");

#[derive(Debug, Clone)]
pub struct Toolchain {
    pub rustc: PathBuf,
    pub cargo: PathBuf,
    pub cache_dir: PathBuf,
}

impl Toolchain {
    /// `rustc` and `cargo` from PATH unless given; the cache under
    /// `$REDMAP_CACHE_DIR`, else `$XDG_CACHE_HOME/redmap`, else `~/.cache/redmap`.
    pub fn new(rustc: Option<PathBuf>, cargo: Option<PathBuf>) -> Toolchain {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let cache_dir = env("REDMAP_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("redmap")))
            .or_else(|| env("HOME").map(|d| d.join(".cache").join("redmap")))
            .unwrap_or_else(|| std::env::temp_dir().join("redmap-cache"));
        Toolchain {
            rustc: rustc.unwrap_or_else(|| "rustc".into()),
            cargo: cargo.unwrap_or_else(|| "cargo".into()),
            cache_dir,
        }
    }
}

#[derive(Debug)]
pub enum CompileError {
    NotFound(PathBuf),
    UnknownKind(PathBuf),
    /// The compiler could not be started.
    Tool {
        tool: PathBuf,
        flag: &'static str,
        source: io::Error,
    },
    /// The compiler ran and failed; its messages were shown already.
    Failed {
        what: String,
        status: ExitStatus,
    },
    NoCdylib(PathBuf),
    Io {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::NotFound(p) => write!(f, "{} does not exist", p.display()),
            CompileError::UnknownKind(p) => write!(
                f,
                "don't know how to run {}: expected a .rs file, a cargo crate directory, or a .so/.dylib",
                p.display()
            ),
            CompileError::Tool { tool, flag, source } => write!(
                f,
                "cannot run {}: {source} (install it or point {flag} at it)",
                tool.display()
            ),
            CompileError::Failed { what, status } => write!(f, "{what} failed ({status})"),
            CompileError::NoCdylib(dir) => write!(
                f,
                "cargo built no cdylib in {}: add `[lib] crate-type = [\"cdylib\"]` to its Cargo.toml",
                dir.display()
            ),
            CompileError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for CompileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CompileError::Tool { source, .. } | CompileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A job library ready to load.
#[derive(Debug, Clone)]
pub struct Built {
    pub library: PathBuf,
    /// True when nothing had to be compiled.
    pub cached: bool,
}

/// Produces the job library for `path` (see the module docs for the forms).
pub fn build(path: &Path, tools: &Toolchain) -> Result<Built, CompileError> {
    let meta = std::fs::metadata(path).map_err(|_| CompileError::NotFound(path.to_owned()))?;
    if meta.is_dir() {
        if !path.join("Cargo.toml").is_file() {
            return Err(CompileError::UnknownKind(path.to_owned()));
        }
        return build_crate(path, tools);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("rs") => build_file(path, tools),
        Some("so" | "dylib") => Ok(Built {
            library: path.to_owned(),
            cached: true,
        }),
        _ => Err(CompileError::UnknownKind(path.to_owned())),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CompileError + '_ {
    move |source| CompileError::Io {
        path: path.to_owned(),
        source,
    }
}

fn run_tool(
    cmd: &mut Command,
    tool: &Path,
    flag: &'static str,
    what: String,
) -> Result<(), CompileError> {
    debug!("running {cmd:?}");
    let status = cmd.status().map_err(|source| CompileError::Tool {
        tool: tool.to_owned(),
        flag,
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(CompileError::Failed { what, status })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `rustc -vV`: the full compiler identity, part of every cache key.
fn rustc_version(tools: &Toolchain) -> Result<String, CompileError> {
    let out = Command::new(&tools.rustc)
        .arg("-vV")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| CompileError::Tool {
            tool: tools.rustc.clone(),
            flag: "--rustc",
            source,
        })?;
    if !out.status.success() {
        return Err(CompileError::Failed {
            what: format!("{} -vV", tools.rustc.display()),
            status: out.status,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds into a fresh temporary directory, then renames it to `dir`. If
/// another process got there first, its result is as good as ours.
fn build_into(
    dir: &Path,
    f: impl FnOnce(&Path) -> Result<(), CompileError>,
) -> Result<(), CompileError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("build")
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = f(&tmp).and_then(|()| match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.is_dir() => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// The job API as an rlib named `redmap`, built once per compiler.
fn job_api(tools: &Toolchain, version: &str) -> Result<(PathBuf, String), CompileError> {
    let key = hex(&Sha256::digest(
        JOB_API_SOURCES
            .iter()
            .flat_map(|(path, source)| [*path, "\0", *source, "\0"])
            .chain([version, "\0edition 2021 -O"])
            .collect::<String>(),
    ));
    let dir = tools.cache_dir.join(format!("api-{}", &key[..16]));
    let rlib = dir.join("libredmap.rlib");
    if !rlib.is_file() {
        info!(
            "compiling the job API for {}",
            version.lines().next().unwrap_or("rustc")
        );
        build_into(&dir, |tmp| {
            for (path, source) in JOB_API_SOURCES {
                let file = tmp.join(path);
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                }
                std::fs::write(&file, source).map_err(io_err(tmp))?;
            }
            let lib = tmp.join("lib.rs");
            std::fs::write(&lib, "pub mod job;\n").map_err(io_err(tmp))?;
            run_tool(
                Command::new(&tools.rustc)
                    .args([
                        "--edition",
                        "2021",
                        "--crate-type",
                        "rlib",
                        "--crate-name",
                        "redmap",
                    ])
                    .args(["-O", "--cap-lints", "allow", "-o"])
                    .arg(tmp.join("libredmap.rlib"))
                    .arg(&lib),
                &tools.rustc,
                "--rustc",
                "compiling the job API".into(),
            )
        })?;
    }
    Ok((dir, key))
}

/// A crate name from a file stem: letters, digits and `_` only.
fn crate_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("job");
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "job_");
    }
    name
}

fn build_file(path: &Path, tools: &Toolchain) -> Result<Built, CompileError> {
    let source = std::fs::read(path).map_err(io_err(path))?;
    let version = rustc_version(tools)?;
    let (api_dir, api_key) = job_api(tools, &version)?;
    let name = crate_name(path);
    let mut hasher = Sha256::new();
    for part in [
        &source[..],
        api_key.as_bytes(),
        version.as_bytes(),
        name.as_bytes(),
        b"cdylib edition 2021 -O strip=debuginfo",
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let key = hex(&hasher.finalize());
    let dir = tools.cache_dir.join(format!("job-{}", &key[..24]));
    let file = format!("lib{name}.{}", std::env::consts::DLL_EXTENSION);
    let library = dir.join(&file);
    if library.is_file() {
        info!(
            "{}: unchanged, using the cached build {}",
            path.display(),
            library.display()
        );
        return Ok(Built {
            library,
            cached: true,
        });
    }
    let started = Instant::now();
    info!("compiling {}", path.display());
    build_into(&dir, |tmp| {
        run_tool(
            Command::new(&tools.rustc)
                .args(["--edition", "2021", "--crate-type", "cdylib", "-O"])
                // The standard library's debug info is 90% of an unstripped
                // job, and every worker is sent the library: leave it out.
                .args(["-C", "strip=debuginfo"])
                .args(["--crate-name", &name, "--extern"])
                .arg(format!(
                    "redmap={}",
                    api_dir.join("libredmap.rlib").display()
                ))
                .arg("-L")
                .arg(format!("dependency={}", api_dir.display()))
                .arg("-o")
                .arg(tmp.join(&file))
                .arg(path),
            &tools.rustc,
            "--rustc",
            format!("compiling {}", path.display()),
        )
    })?;
    info!("compiled {} in {:.1?}", path.display(), started.elapsed());
    Ok(Built {
        library,
        cached: false,
    })
}

/// Pulls the cdylib paths out of cargo's JSON messages for `manifest`.
fn cdylibs_in(messages: &str, manifest: &Path) -> Vec<PathBuf> {
    let manifest = manifest.to_string_lossy().replace('\\', "\\\\");
    let mut found = Vec::new();
    for line in messages.lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"")
            || !line.contains("\"cdylib\"")
            || !line.contains(&format!("\"manifest_path\":\"{manifest}\""))
        {
            continue;
        }
        let Some(start) = line.find("\"filenames\":[") else {
            continue;
        };
        let rest = &line[start + "\"filenames\":[".len()..];
        let list = &rest[..rest.find(']').unwrap_or(rest.len())];
        for item in list.split(',') {
            let item = item.trim().trim_matches('"').replace("\\\\", "\\");
            if item.ends_with(".so") || item.ends_with(".dylib") {
                found.push(PathBuf::from(item));
            }
        }
    }
    found
}

fn build_crate(dir: &Path, tools: &Toolchain) -> Result<Built, CompileError> {
    let dir = std::path::absolute(dir).map_err(io_err(dir))?;
    let manifest = dir.join("Cargo.toml");
    let manifest = manifest.canonicalize().unwrap_or(manifest);
    info!("building the crate in {} with cargo", dir.display());
    let out = Command::new(&tools.cargo)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| CompileError::Tool {
            tool: tools.cargo.clone(),
            flag: "--cargo",
            source,
        })?;
    if !out.status.success() {
        return Err(CompileError::Failed {
            what: format!("cargo build in {}", dir.display()),
            status: out.status,
        });
    }
    let messages = String::from_utf8_lossy(&out.stdout);
    let library = cdylibs_in(&messages, &manifest)
        .pop()
        .ok_or_else(|| CompileError::NoCdylib(dir.clone()))?;
    Ok(Built {
        library,
        cached: !messages.contains("\"fresh\":false"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_are_valid_identifiers() {
        assert_eq!(crate_name(Path::new("a/sum.rs")), "sum");
        assert_eq!(crate_name(Path::new("word-count.rs")), "word_count");
        assert_eq!(crate_name(Path::new("1st.rs")), "job_1st");
    }

    #[test]
    fn finds_the_cdylib_in_cargo_messages() {
        let msg = r#"{"reason":"compiler-artifact","manifest_path":"/x/Cargo.toml","target":{"crate_types":["cdylib"]},"filenames":["/x/target/release/libjob.so"],"fresh":false}
{"reason":"compiler-artifact","manifest_path":"/y/Cargo.toml","target":{"crate_types":["cdylib"]},"filenames":["/y/libdep.so"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            cdylibs_in(msg, Path::new("/x/Cargo.toml")),
            vec![PathBuf::from("/x/target/release/libjob.so")]
        );
    }

    #[test]
    fn the_job_api_shipped_to_single_file_jobs_is_every_file_of_src_job() {
        // Test modules aside (a `tests.rs`, or a directory of them).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut on_disk: Vec<String> = Vec::new();
        let mut pending = vec![dir.join("job")];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if !path.ends_with("tests.rs") {
                    let rel = path.strip_prefix(&dir).unwrap();
                    on_disk.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut shipped: Vec<String> = JOB_API_SOURCES.iter().map(|(p, _)| p.to_string()).collect();
        shipped.sort();
        assert_eq!(shipped, on_disk);
    }
}
