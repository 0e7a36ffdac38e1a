//! Built-in tasks' data found at run time: `$PEZ_DATA`, `shared/data` beside the checkout, the Hugging Face hub
//! cache (a fake one with tiny Parquet files in the real datasets' layout, `scripts/make_hub_fixture.py`).

use pez_tasks::data;
use pez_tasks::sources::{builtin_task, Location, Places};
use pez_tasks::TaskSpec;
use std::path::{Path, PathBuf};

fn hub() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hub")
}

/// Places with only the fake hub cache: no $PEZ_DATA and no directory searched for shared/data (a temporary
/// directory may have one above it: CI links /tmp/shared beside its clone).
fn hub_only() -> Places {
    Places {
        pez_data: None,
        cwd: None,
        hub_cache: hub(),
        offline: true,
    }
}

/// (texts, labels) of a built-in task's split as found in `places`.
fn read(task: &str, split: &str, places: &Places) -> (Location, Vec<String>, Vec<usize>) {
    let pez_tasks::sources::BuiltinTask { train, dev, .. } = builtin_task(task).unwrap();
    let s = if split == "train" { train } else { dev };
    let loc = s.fetch(places).unwrap();
    let d = data::load(
        loc.path(),
        &s.format_of(loc.path()),
        TaskSpec::resolve(task).unwrap().num_labels(),
    )
    .unwrap();
    (
        loc,
        d.examples.iter().map(|e| e.text.clone()).collect(),
        d.examples.iter().map(|e| e.label).collect(),
    )
}

#[test]
fn every_built_in_task_resolves_its_splits_from_the_hub_cache() {
    let p = hub_only();
    // SST-2: our dev is the hub's validation split (its test labels are hidden).
    let (loc, texts, labels) = read("sst2", "dev", &p);
    assert!(matches!(loc, Location::HubCache(_)), "{loc:?}");
    assert!(loc.path().ends_with("data/validation-00000-of-00001.parquet"));
    assert_eq!(texts, ["val a delight", "val a bore", "val fine work"]);
    assert_eq!(labels, [1, 0, 1]);
    let (_, texts, labels) = read("sst2", "train", &p);
    assert_eq!(
        (texts.len(), &texts[1][..], &labels[..2]),
        (6, "dull and flat", &[1, 0][..])
    );
    // AG News: labels 0..3 in our order; our dev is the hub's test split.
    let (_, texts, labels) = read("agnews", "dev", &p);
    assert_eq!(texts, ["test world", "test sports", "test business", "test tech"]);
    assert_eq!(labels, [0, 1, 2, 3]);
    assert_eq!(read("agnews", "train", &p).1.len(), 8);
    // Amazon: 0 = negative, 1 = positive on the hub (the public CSV's 1 / 2 map is not applied); title + content.
    let (_, texts, labels) = read("amazon", "dev", &p);
    assert_eq!(texts, ["test Awful no", "test Fine yes", "test only content"]);
    assert_eq!(labels, [0, 1, 1]);
    let (_, texts, labels) = read("amazon", "train", &p);
    assert_eq!(
        (texts, labels),
        (vec!["Great loved it".to_string(), "Bad broke fast".into()], vec![1, 0])
    );
}

#[test]
fn pez_data_then_shared_data_then_the_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let tsv = |root: &Path, s: &str| {
        std::fs::create_dir_all(root.join("sst2")).unwrap();
        std::fs::write(root.join("sst2/dev.tsv"), format!("sentence\tlabel\n{s}\t1\n")).unwrap();
    };
    let pez_data = tmp.path().join("pez-data");
    tsv(&pez_data, "from pez data");
    let checkout = tmp.path().join("work/repo/crates");
    std::fs::create_dir_all(&checkout).unwrap();
    tsv(&tmp.path().join("work/shared/data"), "from shared");
    let all = Places {
        pez_data: Some(pez_data),
        cwd: Some(checkout.clone()),
        hub_cache: hub(),
        offline: true,
    };
    let (loc, texts, _) = read("sst2", "dev", &all);
    assert!(
        matches!(loc, Location::PezData(_)) && texts == ["from pez data"],
        "{loc:?} {texts:?}"
    );
    let no_env = Places {
        pez_data: None,
        ..all.clone()
    };
    let (loc, texts, _) = read("sst2", "dev", &no_env);
    assert!(
        matches!(loc, Location::Shared(_)) && texts == ["from shared"],
        "{loc:?} {texts:?}"
    );
    // $PEZ_DATA without the file falls through to the next place.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (loc, _, _) = read(
        "sst2",
        "dev",
        &Places {
            pez_data: Some(empty),
            cwd: None,
            ..all.clone()
        },
    );
    assert!(matches!(loc, Location::HubCache(_)), "{loc:?}");
    // An explicit file beats them all.
    let given = tmp.path().join("given.tsv");
    std::fs::write(&given, "sentence\tlabel\ngiven\t0\n").unwrap();
    let d = TaskSpec::resolve("sst2").unwrap().load("dev", Some(&given)).unwrap();
    assert_eq!(d.examples[0].text, "given");
}

#[test]
fn offline_and_missing_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Places {
        hub_cache: tmp.path().join("no-cache"),
        ..hub_only()
    };
    let dev = builtin_task("sst2").unwrap().dev;
    let e = format!("{:#}", dev.fetch(&p).unwrap_err());
    for want in [
        "stanfordnlp/sst2/data/validation-00000-of-00001.parquet",
        "HF_HUB_OFFLINE=1",
        "$PEZ_DATA",
        "--data",
        "pez data --fetch",
    ] {
        assert!(e.contains(want), "{e:?} does not say {want:?}");
    }
}

#[test]
fn a_corrupt_or_truncated_parquet_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let good = hub().join("datasets--stanfordnlp--sst2/snapshots/0123456789abcdef0123456789abcdef01234567/data/train-00000-of-00001.parquet");
    let bytes = std::fs::read(&good).unwrap();
    let dev = builtin_task("sst2").unwrap().dev;
    for (name, b) in [
        ("truncated.parquet", &bytes[..bytes.len() / 2]),
        ("garbage.parquet", &b"PAR1 this is not parquet PAR1"[..]),
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, b).unwrap();
        let e = format!("{:#}", data::load(&p, &dev.format_of(&p), 2).unwrap_err());
        assert!(e.contains(name) && e.contains("Parquet"), "{e}");
    }
    // A readable file whose columns are not the task's.
    let ag = hub().join("datasets--fancyzhx--ag_news/snapshots/0123456789abcdef0123456789abcdef01234567/data/test-00000-of-00001.parquet");
    let e = format!("{:#}", data::load(&ag, &dev.format_of(&ag), 2).unwrap_err());
    assert!(e.contains("no column named `sentence`"), "{e}");
}
