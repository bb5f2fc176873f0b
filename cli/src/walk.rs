//! The files a batch names: files, directories (recursively) and globs, found as the
//! batch goes, a directory at a time, so that memory does not grow with the file count
//! (but for 16 bytes a file to drop duplicates).

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

use tusflow::batch::Job;
use tusflow::{Error, Result};

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The directory part of a glob before its first wildcard.
fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for part in Path::new(pattern).components() {
        if has_glob(&part.as_os_str().to_string_lossy()) {
            break;
        }
        base.push(part);
    }
    base
}

fn rel(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn not_found(path: &Path) -> Error {
    Error::io(
        Some(path),
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
    )
}

/// A file system identity, to find directory loops through symlinks.
#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(_m: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// A path found in a walk: itself, the base its relative path is taken from, and the
/// identities of the directories above it.
type Found = (PathBuf, PathBuf, Vec<(u64, u64)>);

/// What is left to look at.
enum Pending {
    /// An argument not expanded yet.
    Pattern(String),
    /// The matches of a glob still to come.
    Glob { base: PathBuf, paths: glob::Paths },
    /// The entries of one directory still to come, sorted; with the identities of it
    /// and the directories above it in this walk.
    Dir {
        base: PathBuf,
        entries: std::vec::IntoIter<PathBuf>,
        above: Vec<(u64, u64)>,
    },
}

/// A path that could not be listed, with why (the path not repeated).
pub(crate) struct Unlisted {
    pub(crate) path: String,
    pub(crate) reason: String,
}

/// The files `patterns` name, lazily, without those an `exclude` glob matches (a
/// relative glob against the path relative to what named the file, an absolute one
/// against the full path), each once, in sorted order within each argument.
/// Directories are walked depth-first; a symlink to a directory above it is not
/// followed (a loop), and what is not a regular file is left out.
pub(crate) struct Walk {
    stack: Vec<Pending>,
    excludes: Vec<glob::Pattern>,
    seen: HashSet<u128>,
    hashers: (std::hash::RandomState, std::hash::RandomState),
}

impl Walk {
    /// Check every argument now (a name that matches nothing is an error naming it, an
    /// invalid glob too); the files are found as the walk is iterated.
    pub(crate) fn new(patterns: &[String], exclude: &[String]) -> Result<Self> {
        let excludes = exclude
            .iter()
            .map(|e| {
                glob::Pattern::new(e)
                    .map_err(|err| Error::config(format!("invalid exclude glob {e:?}: {err}")))
            })
            .collect::<Result<Vec<_>>>()?;
        for p in patterns {
            if has_glob(p) {
                glob::Pattern::new(p)
                    .map_err(|e| Error::config(format!("invalid glob {p:?}: {e}")))?;
            } else if std::fs::metadata(p).is_err() {
                return Err(not_found(Path::new(p)));
            }
        }
        Ok(Walk {
            stack: patterns
                .iter()
                .rev()
                .cloned()
                .map(Pending::Pattern)
                .collect(),
            excludes,
            seen: HashSet::new(),
            hashers: Default::default(),
        })
    }

    /// `path` as a job, unless excluded or seen before.
    fn candidate(&mut self, relpath: String, path: PathBuf) -> Option<Job> {
        let excluded = self.excludes.iter().any(|x| {
            if x.as_str().starts_with('/') {
                x.matches_path(&path)
            } else {
                x.matches(&relpath)
            }
        });
        if excluded {
            return None;
        }
        let key = (u128::from(self.hashers.0.hash_one(&path)) << 64)
            | u128::from(self.hashers.1.hash_one(&path));
        self.seen.insert(key).then_some(Job { path, relpath })
    }

    /// Start walking `dir`, its entries sorted.
    fn enter(
        &mut self,
        dir: &Path,
        base: PathBuf,
        mut above: Vec<(u64, u64)>,
    ) -> std::result::Result<(), String> {
        let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
        let id = identity(&meta);
        if cfg!(unix) && above.contains(&id) {
            tracing::warn!(path = %dir.display(), "not following a symlink to a directory above it (a loop)");
            return Ok(());
        }
        above.push(id);
        let mut entries = Vec::new();
        let cannot = |e: std::io::Error| format!("cannot list the directory: {e}");
        for e in std::fs::read_dir(dir).map_err(cannot)? {
            entries.push(e.map_err(cannot)?.path());
        }
        entries.sort();
        self.stack.push(Pending::Dir {
            base,
            entries: entries.into_iter(),
            above,
        });
        Ok(())
    }

    fn unlisted(path: &Path, reason: String) -> Option<std::result::Result<Job, Unlisted>> {
        Some(Err(Unlisted {
            path: path.display().to_string(),
            reason,
        }))
    }
}

impl Iterator for Walk {
    type Item = std::result::Result<Job, Unlisted>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let found: Option<Found> = match self.stack.last_mut()? {
                Pending::Pattern(p) => {
                    let p = std::mem::take(p);
                    self.stack.pop();
                    if has_glob(&p) {
                        match glob::glob(&p) {
                            Ok(paths) => self.stack.push(Pending::Glob {
                                base: glob_base(&p),
                                paths,
                            }),
                            Err(e) => {
                                return Self::unlisted(Path::new(&p), format!("invalid glob: {e}"));
                            }
                        }
                        continue;
                    }
                    let path = PathBuf::from(&p);
                    if path.is_dir() {
                        if let Err(e) = self.enter(&path, path.clone(), Vec::new()) {
                            return Self::unlisted(&path, e);
                        }
                        continue;
                    }
                    if path.is_file() {
                        let name = path
                            .file_name()
                            .map_or_else(|| p.clone(), |n| n.to_string_lossy().into_owned());
                        match self.candidate(name, path) {
                            Some(job) => return Some(Ok(job)),
                            None => continue,
                        }
                    }
                    return Self::unlisted(&path, "no such file or directory".into());
                }
                Pending::Glob { base, paths } => match paths.next() {
                    None => {
                        self.stack.pop();
                        continue;
                    }
                    Some(Err(e)) => {
                        let path = e.path().to_owned();
                        return Self::unlisted(&path, format!("cannot list it: {}", e.error()));
                    }
                    Some(Ok(path)) => Some((path, base.clone(), Vec::new())),
                },
                Pending::Dir {
                    base,
                    entries,
                    above,
                } => match entries.next() {
                    None => {
                        self.stack.pop();
                        continue;
                    }
                    Some(path) => Some((path, base.clone(), above.clone())),
                },
            };
            let Some((path, base, above)) = found else {
                continue;
            };
            // Symlinks are followed to what they name; loops stop at `enter`.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => {
                    if let Err(e) = self.enter(&path, base, above) {
                        return Self::unlisted(&path, e);
                    }
                }
                Ok(m) if m.is_file() => {
                    if let Some(job) = self.candidate(rel(&path, &base), path) {
                        return Some(Ok(job));
                    }
                }
                Ok(_) => {
                    tracing::debug!(path = %path.display(), "not a regular file: left out");
                }
                // A dangling symlink, or a file gone since it was listed.
                Err(e) => return Self::unlisted(&path, format!("cannot read it: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(w: Walk) -> Vec<String> {
        w.map(|j| j.ok().expect("listed").relpath).collect()
    }

    #[test]
    fn dirs_globs_and_excludes() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a/1.txt", "a/b/2.txt", "a/b/3.log", "a/tmp/4.txt", "c.txt"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let root = d.path().to_string_lossy().into_owned();
        let w = Walk::new(
            &[
                format!("{root}/a"),
                format!("{root}/c.txt"),
                format!("{root}/a/1.txt"),
            ],
            &["tmp/**".into()],
        )
        .unwrap();
        assert_eq!(rels(w), ["1.txt", "b/2.txt", "b/3.log", "c.txt"]);
        let w = Walk::new(&[format!("{root}/a/**/*.txt")], &["**/tmp/**".into()]).unwrap();
        let jobs: Vec<Job> = w.map(|j| j.ok().unwrap()).collect();
        let r: Vec<&str> = jobs.iter().map(|j| j.relpath.as_str()).collect();
        assert_eq!(r, ["1.txt", "b/2.txt"]);
        let e = Walk::new(&[format!("{root}/nope")], &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        assert_eq!(
            tusflow::batch::render_template("{relpath} ({size}) {filename}", &jobs[1], 7),
            "b/2.txt (7) 2.txt"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_is_walked_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("..", d.path().join("a/b/up")).unwrap();
        std::os::unix::fs::symlink(".", d.path().join("a/self")).unwrap();
        let w = Walk::new(&[d.path().join("a").to_string_lossy().into_owned()], &[]).unwrap();
        assert_eq!(rels(w), ["b/f"]);
    }
}
