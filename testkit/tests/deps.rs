//! `scripts/deps.sh` leaves apt working on every Debian 12 sources layout,
//! however often it runs and whatever its cache holds. Each test works on a
//! copy of the sources in a temporary directory (apt's own `APT_CONFIG`),
//! never on the machine's `/etc/apt`, and asks apt itself to read the
//! result: a conflict such as "Conflicting values set for option Signed-By"
//! fails it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DEB822: &str = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
const ONE_LINE: &str = "deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n";
const ONE_LINE_SRC: &str = "deb-src http://deb.debian.org/debian bookworm main\n";
const ONE_LINE_SRC_SIGNED: &str =
    "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main\n";
/// What deps.sh wrote before 2026-12-02 on its second run.
const OLD_DEPS_LIST: &str = "sources.list.d/millrace-src.list";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A private apt: its own etc (holding `files`), lists and cache; the
/// machine's dpkg status, only read.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc/apt");
        for sub in ["sources.list.d", "apt.conf.d", "preferences.d", "trusted.gpg.d"] {
            std::fs::create_dir_all(etc.join(sub)).unwrap();
        }
        for sub in ["state/lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for (name, text) in files {
            std::fs::write(etc.join(name), text).unwrap();
        }
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("apt.conf"),
            format!("Dir::Etc \"{d}/etc/apt\";\nDir::State \"{d}/state\";\nDir::State::status \"/var/lib/dpkg/status\";\nDir::Cache \"{d}/cache\";\n"),
        )
        .unwrap();
        Sandbox { dir }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", self.dir.path().join("apt.conf")).current_dir(repo());
        c
    }

    /// The sources part of deps.sh, with a cache of its own (empty).
    fn deps_sources(&self) -> Output {
        let cache = tempfile::tempdir().unwrap();
        self.command("bash")
            .args(["-euc", "source scripts/deps/apt.sh && apt_sources_check"])
            .env("MILLRACE_CACHE", cache.path())
            .output()
            .unwrap()
    }

    /// What `apt-get update` would fetch: apt parses every source.
    fn apt_update_uris(&self) -> Output {
        self.command("apt-get").args(["update", "--print-uris"]).output().unwrap()
    }

    fn files(&self) -> Vec<(String, String)> {
        let etc = self.dir.path().join("etc/apt");
        let mut out = Vec::new();
        for name in ["sources.list"]
            .into_iter()
            .map(PathBuf::from)
            .chain(std::fs::read_dir(etc.join("sources.list.d")).unwrap().map(|e| Path::new("sources.list.d").join(e.unwrap().file_name())))
        {
            if let Ok(text) = std::fs::read_to_string(etc.join(&name)) {
                out.push((name.display().to_string(), text));
            }
        }
        out.sort();
        out
    }
}

fn text(o: &Output) -> String {
    format!("status {}\n{}{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Skips (fails under CI) where apt itself is absent.
fn have_apt() -> bool {
    if Command::new("apt-get").arg("--version").output().is_ok() {
        return true;
    }
    assert!(!millrace_testkit::in_ci(), "apt-get not found; CI=true does not skip");
    eprintln!("skipped: apt-get not found");
    false
}

/// Every layout a Debian 12 machine may have, twice through deps.sh: the
/// files stay as they were and apt reads them, sources and deb-src alike.
#[test]
fn every_sources_layout_stays_as_it_was_and_readable_after_two_runs() {
    if !have_apt() {
        return;
    }
    let deb822_src = DEB822.replace("Types: deb\n", "Types: deb deb-src\n");
    let layouts: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("deb822", vec![("sources.list.d/debian.sources", DEB822.into())]),
        ("deb822 with deb-src", vec![("sources.list.d/debian.sources", deb822_src)]),
        ("one-line", vec![("sources.list", ONE_LINE.into())]),
        ("one-line with deb-src", vec![("sources.list", format!("{ONE_LINE}{ONE_LINE_SRC}"))]),
        (
            "deb822 and a one-line deb-src list",
            vec![("sources.list.d/debian.sources", DEB822.into()), ("sources.list.d/src.list", ONE_LINE_SRC_SIGNED.into())],
        ),
        ("none", vec![]),
    ];
    for (name, files) in layouts {
        let apt = Sandbox::new(&files);
        let before = apt.files();
        for run in 1..=2 {
            let o = apt.deps_sources();
            assert!(o.status.success(), "{name}, run {run}: {}", text(&o));
            assert_eq!(apt.files(), before, "{name}, run {run}: deps.sh changed the sources");
            let update = apt.apt_update_uris();
            assert!(
                update.status.success() && update.stderr.is_empty(),
                "{name}, run {run}: apt cannot read the sources: {}",
                text(&update)
            );
            if !files.is_empty() {
                assert!(String::from_utf8_lossy(&update.stdout).contains("dists/bookworm/InRelease"), "{name}: {}", text(&update));
            }
        }
    }
}

/// A machine an older deps.sh broke: its one-line deb-src list (no
/// Signed-By) beside the deb822 file, which its first run may have turned
/// to `Types: deb deb-src`. Apt refuses every source until deps.sh removes
/// that one file.
#[test]
fn the_list_an_older_deps_wrote_is_removed_when_apt_refuses_it() {
    if !have_apt() {
        return;
    }
    for types in ["deb", "deb deb-src"] {
        let deb822 = DEB822.replace("Types: deb\n", &format!("Types: {types}\n"));
        let apt = Sandbox::new(&[("sources.list.d/debian.sources", deb822.clone()), (OLD_DEPS_LIST, ONE_LINE_SRC.into())]);
        let broken = apt.apt_update_uris();
        assert!(String::from_utf8_lossy(&broken.stderr).contains("Conflicting values set for option Signed-By"), "{}", text(&broken));
        for run in 1..=2 {
            let o = apt.deps_sources();
            assert!(o.status.success(), "Types: {types}, run {run}: {}", text(&o));
            assert_eq!(apt.files(), vec![("sources.list.d/debian.sources".to_string(), deb822.clone())], "Types: {types}, run {run}");
            let update = apt.apt_update_uris();
            assert!(update.status.success() && update.stderr.is_empty(), "Types: {types}, run {run}: {}", text(&update));
        }
    }
}

/// Sources apt refuses for another reason are the owner's: deps.sh says so
/// in apt's words and touches nothing.
#[test]
fn sources_broken_otherwise_are_reported_and_left_alone() {
    if !have_apt() {
        return;
    }
    let deb822_src = DEB822.replace("Types: deb\n", "Types: deb deb-src\n");
    let files = [("sources.list.d/debian.sources", deb822_src), ("sources.list.d/mine.list", ONE_LINE_SRC.into())];
    let apt = Sandbox::new(&files);
    let before = apt.files();
    let o = apt.deps_sources();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("Conflicting values set for option Signed-By") && out.contains("never edits them"), "{out}");
    assert_eq!(apt.files(), before);
}

/// The demo's whole install, twice, each time with an empty cache: the
/// second run finds the sources as the first left them and apt reads them.
/// (The apt packages must be installed already: this test installs nothing
/// on the machine. scripts/test.sh runs deps.sh first.)
#[test]
fn the_demo_install_twice_with_empty_caches_leaves_apt_working() {
    if !have_apt() {
        return;
    }
    let installed = Command::new("dpkg-query").args(["-W", "-f=${Status}\n", "mosquitto", "influxdb", "python3-venv"]).output().unwrap();
    if String::from_utf8_lossy(&installed.stdout).lines().filter(|l| l.ends_with("install ok installed")).count() < 3 {
        assert!(!millrace_testkit::in_ci(), "the demo's apt packages are not installed; CI=true does not skip");
        eprintln!("skipped: run scripts/deps.sh demo first");
        return;
    }
    let host = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_else(|_| DEB822.into());
    let apt = Sandbox::new(&[("sources.list.d/debian.sources", host)]);
    let before = apt.files();
    for run in 1..=2 {
        let cache = tempfile::tempdir().unwrap();
        let o = apt.command("bash").args(["scripts/deps.sh", "demo"]).env("MILLRACE_CACHE", cache.path()).output().unwrap();
        assert!(o.status.success(), "run {run}: {}", text(&o));
        assert!(cache.path().join("venv/bin/python").exists(), "run {run}: no venv");
        assert_eq!(apt.files(), before, "run {run}");
        let update = apt.apt_update_uris();
        assert!(update.status.success() && update.stderr.is_empty(), "run {run}: {}", text(&update));
    }
}
