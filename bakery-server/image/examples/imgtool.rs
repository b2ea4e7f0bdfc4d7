//! Small command line around the crate, for trying it by hand and for profiling:
//!
//! ```text
//! cargo run --release -p bakery-image --example imgtool -- sample OUT.img [--legacy]
//! cargo run --release -p bakery-image --example imgtool -- import IMAGE DEST
//! cargo run --release -p bakery-image --example imgtool -- clone SRC DST [copy|reflink|btrfs-snapshot]
//! ```

use std::path::Path;
use std::time::Instant;

use bakery_image::{
    CloneStrategy, ImportPhase, SampleSpec, build_sample_image, clone_tree, detect_strategy,
    import_image,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = Instant::now();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["sample", out, rest @ ..] => {
            let spec = if rest.contains(&"--legacy") {
                SampleSpec::legacy_template()
            } else {
                SampleSpec::default()
            };
            build_sample_image(Path::new(out), &spec).map(|()| format!("wrote {out}"))
        }
        ["import", image, dest] => {
            let mut last = None;
            import_image(Path::new(image), Path::new(dest), &mut |p| {
                if last != Some(p.phase) && p.phase != ImportPhase::Scan {
                    eprintln!(
                        "{:?}: {} entries, {} bytes",
                        p.phase, p.files_total, p.bytes_total
                    );
                    last = Some(p.phase);
                }
            })
            .map(|s| format!("{s:#?}"))
        }
        ["clone", src, dst, rest @ ..] => {
            let strategy = match rest.first().copied() {
                Some("copy") => CloneStrategy::Copy,
                Some("reflink") => CloneStrategy::Reflink,
                Some("btrfs-snapshot") => CloneStrategy::Snapshot,
                _ => detect_strategy(Path::new(dst).parent().unwrap_or(Path::new("."))),
            };
            clone_tree(Path::new(src), Path::new(dst), strategy).map(|s| format!("{s:?}"))
        }
        _ => {
            eprintln!("usage: see the header of examples/imgtool.rs");
            std::process::exit(2);
        }
    };
    match result {
        Ok(msg) => println!("{msg}\ntook {:.2?}", t.elapsed()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
