//! The files a batch names: files, directories (recursively) and globs, found as the
//! batch goes, a directory at a time, so that memory does not grow with the file count
//! (but for 16 bytes a file, and a little per directory, to drop duplicates).

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

use tusflow::batch::Job;
use tusflow::{Error, Result};

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The directory part of a glob before its first wildcard.
pub(crate) fn glob_base(pattern: &str) -> PathBuf {
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

/// Which entries of a walk below a glob's base the glob keeps: a file the pattern
/// matches, and everything below a directory it matches (as the shell's expansion of
/// the glob, then each directory walked, would give).
#[derive(Clone)]
struct Filter {
    pattern: std::sync::Arc<glob::Pattern>,
    /// How deep below the base a match can be; `None` with `**`.
    max_depth: Option<usize>,
}

impl Filter {
    fn new(pattern: glob::Pattern, base: &Path) -> Self {
        let max_depth = (!pattern.as_str().contains("**")).then(|| {
            let depth = |p: &Path| p.components().count();
            depth(Path::new(pattern.as_str())).saturating_sub(depth(base))
        });
        Filter {
            pattern: std::sync::Arc::new(pattern),
            max_depth,
        }
    }

    fn matches(&self, path: &Path) -> bool {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        self.pattern.matches_path_with(path, options)
    }
}

/// A directory being walked.
struct Dir {
    /// What relative paths are taken from.
    base: PathBuf,
    /// Its entries still to come, sorted.
    entries: std::vec::IntoIter<PathBuf>,
    /// The identities of it and the directories above it in this walk.
    above: Vec<(u64, u64)>,
    /// The glob that decides what is kept, if a glob named it.
    filter: Option<Filter>,
    /// True when the glob matched it or a directory above it: all below is kept.
    matched: bool,
    /// How deep below the base its entries are.
    depth: usize,
}

/// What is left to look at.
enum Pending {
    /// An argument not expanded yet.
    Pattern(String),
    /// A directory being walked.
    Dir(Dir),
    /// The end of a glob's walk: warn if it found nothing since `found` was counted.
    GlobEnd { pattern: String, found: u64 },
}

/// Where each key of a shared batch is on this machine, for the arguments `paths`.
pub(crate) fn locator(paths: &[String]) -> tusflow::fleet::Locate {
    let paths = paths.to_vec();
    std::sync::Arc::new(move |key: &str| crate::shared::locate_in(&paths, key))
}

/// Values seen before, at 16 bytes each (two 64-bit hashes: a false "seen" takes a
/// 128-bit collision).
#[derive(Default)]
pub(crate) struct Seen {
    set: HashSet<u128>,
    hashers: (std::hash::RandomState, std::hash::RandomState),
}

impl Seen {
    /// True when `v` was not seen before.
    pub(crate) fn insert(&mut self, v: &impl std::hash::Hash) -> bool {
        let key =
            (u128::from(self.hashers.0.hash_one(v)) << 64) | u128::from(self.hashers.1.hash_one(v));
        self.set.insert(key)
    }
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
    seen: Seen,
    walked: HashSet<(u64, u64)>,
    /// Files found so far.
    found: u64,
}

impl Walk {
    /// Check every glob now (an invalid one is an error naming it); the files are found
    /// as the walk is iterated, and a name that does not exist or a glob that matches
    /// nothing is a failed entry of its own ([`Unlisted`]), as in `upload`.
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
            seen: Seen::default(),
            walked: HashSet::new(),
            found: 0,
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
        // The same file by another name (a symlinked directory, overlapping arguments,
        // a glob's `**` through a loop) is uploaded once.
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let new = self.seen.insert(&real);
        self.found += u64::from(new);
        new.then_some(Job { path, relpath })
    }

    /// Start walking `dir`, its entries sorted; `parent` is the directory it was found
    /// in (`None` for an argument).
    fn enter(
        &mut self,
        dir: &Path,
        base: PathBuf,
        parent: Option<(&Dir, bool)>,
    ) -> std::result::Result<(), String> {
        let listed = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let meta = std::fs::metadata(listed).map_err(|e| format!("cannot read it: {e}"))?;
        let id = identity(&meta);
        let mut above = parent.map(|(p, _)| p.above.clone()).unwrap_or_default();
        if cfg!(unix) && above.contains(&id) {
            tracing::warn!(path = %dir.display(), "not following a symlink to a directory above it (a loop)");
            return Ok(());
        }
        // A directory reached again (through a symlink, or by overlapping arguments) is
        // walked once.
        if cfg!(unix) && !self.walked.insert(id) {
            tracing::debug!(path = %dir.display(), "already walked");
            return Ok(());
        }
        above.push(id);
        let mut entries = Vec::new();
        let cannot = |e: std::io::Error| format!("cannot list the directory: {e}");
        for e in std::fs::read_dir(listed).map_err(cannot)? {
            entries.push(dir.join(e.map_err(cannot)?.file_name()));
        }
        entries.sort();
        let (filter, matched, depth) = match parent {
            Some((p, matched)) => (p.filter.clone(), matched, p.depth + 1),
            None => (None, true, 0),
        };
        self.stack.push(Pending::Dir(Dir {
            base,
            entries: entries.into_iter(),
            above,
            filter,
            matched,
            depth,
        }));
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
            let dir = match self.stack.last_mut()? {
                Pending::Pattern(p) => {
                    let p = std::mem::take(p);
                    self.stack.pop();
                    if has_glob(&p) {
                        let pattern = match glob::Pattern::new(&p) {
                            Ok(pattern) => pattern,
                            Err(e) => {
                                return Self::unlisted(Path::new(&p), format!("invalid glob: {e}"));
                            }
                        };
                        let base = glob_base(&p);
                        let filter = Filter::new(pattern, &base);
                        self.stack.push(Pending::GlobEnd {
                            pattern: p.clone(),
                            found: self.found,
                        });
                        // The base is walked with the glob as a filter: symlink loops stop
                        // as in any walk (glob's own `**` would go round them).
                        let root = Dir {
                            base: base.clone(),
                            entries: Vec::new().into_iter(),
                            above: Vec::new(),
                            filter: Some(filter),
                            matched: false,
                            depth: 0,
                        };
                        if let Err(e) = self.enter(&base, base.clone(), Some((&root, false))) {
                            return Self::unlisted(&base, e);
                        }
                        // `enter` counts the base one deeper than its parent.
                        if let Some(Pending::Dir(d)) = self.stack.last_mut() {
                            d.depth = 0;
                        }
                        continue;
                    }
                    let path = PathBuf::from(&p);
                    if path.is_dir() {
                        if let Err(e) = self.enter(&path, path.clone(), None) {
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
                    let why = if std::fs::symlink_metadata(&path).is_ok() {
                        "not a regular file (a FIFO, a socket or a device): `tusflow batch` uploads regular files; `tusflow upload PATH` reads a FIFO as a stream"
                    } else {
                        "no such file or directory"
                    };
                    return Self::unlisted(&path, why.into());
                }
                Pending::GlobEnd { pattern, found } => {
                    // A pattern that matches nothing is a failed entry, as a name
                    // that does not exist is: the run says so and exits 1.
                    let none = *found == self.found;
                    let pattern = pattern.clone();
                    self.stack.pop();
                    if none {
                        return Self::unlisted(Path::new(&pattern), "matches no file".into());
                    }
                    continue;
                }
                Pending::Dir(dir) => dir,
            };
            let Some(path) = dir.entries.next() else {
                self.stack.pop();
                continue;
            };
            let depth = dir.depth + 1;
            let matched = dir.matched || dir.filter.as_ref().is_some_and(|f| f.matches(&path));
            let deeper = matched
                || dir
                    .filter
                    .as_ref()
                    .is_some_and(|f| f.max_depth.is_none_or(|m| depth < m));
            let base = dir.base.clone();
            // Symlinks are followed to what they name; loops stop at `enter`.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => {
                    if !deeper {
                        continue;
                    }
                    let Some(Pending::Dir(parent)) = self.stack.pop() else {
                        unreachable!("the top is this directory");
                    };
                    let entered = self.enter(&path, base, Some((&parent, matched)));
                    // The parent goes back under the child just pushed.
                    let child = entered.is_ok().then(|| self.stack.pop()).flatten();
                    self.stack.push(Pending::Dir(parent));
                    self.stack.extend(child);
                    if let Err(e) = entered {
                        return Self::unlisted(&path, e);
                    }
                }
                Ok(m) if m.is_file() => {
                    if !matched {
                        continue;
                    }
                    if let Some(job) = self.candidate(rel(&path, &base), path) {
                        return Some(Ok(job));
                    }
                }
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "left out: not a regular file (a FIFO, a socket or a device)");
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
        // A name that does not exist, and a glob that matches nothing: failed entries.
        let w = Walk::new(&[format!("{root}/nope"), format!("{root}/*.nope")], &[]).unwrap();
        let unlisted: Vec<String> = w.map(|j| j.err().unwrap().reason).collect();
        assert_eq!(unlisted, ["no such file or directory", "matches no file"]);
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
        // A glob's `**` goes round the loop until the system stops it: still one file.
        let glob = format!("{}/a/**/*", d.path().display());
        assert_eq!(rels(Walk::new(&[glob], &[]).unwrap()), ["b/f"]);
    }
}
