//! Checks sample images with the standard tools (sfdisk, mtools, debugfs): layout and contents.

use std::path::Path;
use std::process::Command;

use bakery_image::sample::{SampleKind, SampleSpec, build_sample_image};

fn tool(cmd: &mut Command) -> String {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn partitions(img: &Path) -> Vec<(u64, u64, String)> {
    let dump = tool(Command::new("sfdisk").arg("-d").arg(img));
    dump.lines()
        .filter(|l| l.contains("start="))
        .map(|l| {
            let field = |key: &str| -> String {
                let rest = &l[l.find(key).unwrap() + key.len()..];
                rest.split(',').next().unwrap().trim().to_owned()
            };
            (
                field("start=").parse().unwrap(),
                field("size=").parse().unwrap(),
                field("type="),
            )
        })
        .collect()
}

#[test]
fn default_sample_has_stock_layout_and_contents() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("raspios.img");
    let spec = SampleSpec::default();
    build_sample_image(&img, &spec).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("raspios.img")]);

    let parts = partitions(&img);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0].0, 8192);
    assert_eq!(parts[0].2, "c");
    assert_eq!(parts[1].2, "83");
    let disk_id = tool(Command::new("sfdisk").arg("--disk-id").arg(&img));
    assert_eq!(disk_id.trim(), "0x738a4d67");

    // Boot files, read back with mtools.
    let boot = format!("{}@@{}", img.display(), parts[0].0 * 512);
    for (name, data) in &spec.boot_files {
        let out = dir.path().join("extracted");
        tool(
            Command::new("mcopy")
                .args(["-n", "-o", "-i", &boot])
                .arg(format!("::{name}"))
                .arg(&out),
        );
        assert_eq!(&std::fs::read(&out).unwrap(), data, "{name}");
    }
    let cmdline = spec
        .boot_files
        .iter()
        .find(|(n, _)| n == "cmdline.txt")
        .unwrap();
    assert!(String::from_utf8_lossy(&cmdline.1).contains("root=PARTUUID=738a4d67-02"));

    // Root entries, read back with debugfs from the extracted partition.
    let root = dir.path().join("root.ext4");
    tool(
        Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", root.display()))
            .arg("bs=512")
            .arg(format!("skip={}", parts[1].0))
            .arg(format!("count={}", parts[1].1))
            .arg("status=none"),
    );
    tool(Command::new("e2fsck").args(["-f", "-n"]).arg(&root));
    let stat = |p: &str| {
        tool(
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("stat \"/{p}\""))
                .arg(&root),
        )
    };
    for node in &spec.root_nodes {
        let s = stat(&node.path);
        match &node.kind {
            SampleKind::CharDevice { major, minor } | SampleKind::BlockDevice { major, minor } => {
                assert!(
                    s.contains(&format!("Device major/minor number: {major:02}:{minor:02}")),
                    "{}: {s}",
                    node.path
                );
            }
            SampleKind::Hardlink(_) => assert!(s.contains("Links: 2"), "{}: {s}", node.path),
            _ => {}
        }
        if !matches!(node.kind, SampleKind::Hardlink(_) | SampleKind::Symlink(_)) {
            assert!(
                s.contains(&format!("Mode:  0{:o}", node.mode))
                    || s.contains(&format!("Mode:  {:04o}", node.mode)),
                "{}: {s}",
                node.path
            );
            assert!(
                s.contains(&format!("User: {:5}", node.uid)),
                "{}: {s}",
                node.path
            );
        }
    }
}

#[test]
fn same_spec_gives_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    build_sample_image(&a, &SampleSpec::legacy_template()).unwrap();
    // Cross a second boundary so any wall-clock time leaking into the image shows.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build_sample_image(&b, &SampleSpec::legacy_template()).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "sample images differ"
    );
}

#[test]
fn bad_spec_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bad.img");
    let mut spec = SampleSpec::default();
    spec.root_files.push(("../escape".into(), b"x".to_vec()));
    let err = build_sample_image(&img, &spec).unwrap_err().to_string();
    assert!(err.contains("../escape"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
