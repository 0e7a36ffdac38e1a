use pez_tasks::metrics::{wilson, Accuracy};
use pez_tasks::TaskSpec;

#[test]
fn built_in_tasks_read_the_shared_data() {
    let sst2 = TaskSpec::resolve("sst2").unwrap();
    let dev = sst2.load("dev", None).unwrap();
    assert_eq!(dev.examples.len(), 872);
    assert_eq!(dev.examples.iter().filter(|e| e.label == 1).count(), 444);
    let ag = TaskSpec::resolve("agnews").unwrap();
    let train = ag.load("train", None).unwrap();
    let counts: Vec<usize> = (0..4)
        .map(|c| train.examples.iter().filter(|e| e.label == c).count())
        .collect();
    assert_eq!(counts, vec![1259, 1257, 1281, 1203]);
    let err = TaskSpec::resolve("amazon")
        .unwrap()
        .load("dev", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--data"), "{err}");
}

/// SST-2's train rows that look like its dev sentences are the long ones; other tasks' are any row, and a task
/// file says `rows = "long"` to choose the long ones.
#[test]
fn each_task_names_the_rows_that_look_like_its_evaluation_data() {
    use pez_tasks::RowRule;
    assert_eq!(TaskSpec::resolve("sst2").unwrap().rows, RowRule::Long);
    assert_eq!(TaskSpec::resolve("agnews").unwrap().rows, RowRule::Random);
    assert_eq!(TaskSpec::resolve("amazon").unwrap().rows, RowRule::Random);
    let tmp = tempfile::tempdir().unwrap();
    let toml = "name = \"t\"\ntemplate = \" It was\"\nverbalizers = [\" bad\", \" good\"]\nlabel_names = [\"bad\", \"good\"]\n";
    let fmt = "[format]\ndelimiter = \"\\t\"\nheader = true\nquoting = false\ntext_columns = [\"sentence\"]\nlabel_column = \"label\"\n";
    let (plain, long) = (tmp.path().join("plain.toml"), tmp.path().join("long.toml"));
    std::fs::write(&plain, format!("{toml}{fmt}")).unwrap();
    std::fs::write(&long, format!("{toml}rows = \"long\"\n{fmt}")).unwrap();
    assert_eq!(TaskSpec::from_toml(&plain).unwrap().rows, RowRule::Random);
    assert_eq!(TaskSpec::from_toml(&long).unwrap().rows, RowRule::Long);
}

#[test]
fn few_shot_sampling_is_seeded_disjoint_and_balanced() {
    let ag = TaskSpec::resolve("agnews").unwrap().load("train", None).unwrap();
    let (tr, ho) = ag.few_shot(4, 4, 7).unwrap();
    let (tr2, _) = ag.few_shot(4, 4, 7).unwrap();
    let (tr3, _) = ag.few_shot(4, 4, 8).unwrap();
    assert_eq!(tr, tr2);
    assert_ne!(tr, tr3);
    for c in 0..4 {
        assert_eq!(tr.iter().filter(|e| e.label == c).count(), 4);
        assert_eq!(ho.iter().filter(|e| e.label == c).count(), 4);
    }
    assert!(tr.iter().all(|e| !ho.contains(e)));
}

#[test]
fn amazon_csv_layout_with_quotes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("amazon.csv");
    std::fs::write(
        &p,
        "\"2\",\"Great\",\"Loved it, really\"\n\"1\",\"Bad\",\"Broke \"\"fast\"\"\"\n",
    )
    .unwrap();
    let d = TaskSpec::resolve("amazon").unwrap().load("dev", Some(&p)).unwrap();
    assert_eq!(d.examples[0].text, "Great Loved it, really");
    assert_eq!(d.examples[0].label, 1);
    assert_eq!(d.examples[1].text, "Bad Broke \"fast\"");
    assert_eq!(d.examples[1].label, 0);
    std::fs::write(&p, "\"2\",\"Great\",\"ok\"\n\"3\",\"Odd\",\"label three\"\n").unwrap();
    let e = TaskSpec::resolve("amazon")
        .unwrap()
        .load("dev", Some(&p))
        .unwrap_err()
        .to_string();
    assert!(e.contains("amazon.csv:2") && e.contains("label map"), "{e}");
}

#[test]
fn accuracy_and_wilson_interval() {
    let a = Accuracy::from_predictions(&[0, 1, 1, 0], &[0, 1, 0, 0], 2);
    assert_eq!((a.correct, a.total), (3, 4));
    assert_eq!(a.per_class, vec![(2, 3), (1, 1)]);
    // statsmodels proportion_confint(50, 100, method="wilson") = (0.4038, 0.5962)
    let (lo, hi) = wilson(50, 100, 1.959964);
    assert!((lo - 0.40383).abs() < 1e-4 && (hi - 0.59617).abs() < 1e-4, "{lo} {hi}");
}

#[test]
fn row_rules_random_as_before_and_long_from_long_rows_only() {
    use pez_tasks::{Dataset, Example, RowRule};
    let examples: Vec<Example> = (0..200)
        .map(|i| Example {
            text: "w ".repeat(1 + i % 15).trim().to_string() + &format!(" {i}"),
            label: i % 2,
        })
        .collect();
    let d = Dataset {
        examples: examples.clone(),
        source: "mem".into(),
    };
    // Random: the first `h` of the seeded shuffle, the rest in the same order (the paper's, and the old, split).
    let (train, hold) = d.split_holdout(30, 7, RowRule::Random, RowRule::Random);
    let mut idx: Vec<usize> = (0..200).collect();
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    assert_eq!(hold, idx[..30].iter().map(|&i| examples[i].clone()).collect::<Vec<_>>());
    assert_eq!(
        train,
        idx[30..].iter().map(|&i| examples[i].clone()).collect::<Vec<_>>()
    );
    // Long: only rows of at least 10 words are held out, never trained on; everything else trains.
    let (train, hold) = d.split_holdout(30, 7, RowRule::Long, RowRule::Random);
    assert_eq!((hold.len(), train.len()), (30, 170));
    let long = |e: &Example| e.text.split_whitespace().count() >= pez_tasks::data::LONG_WORDS;
    assert!(hold.iter().all(long));
    assert!(hold.iter().all(|e| !train.contains(e)));
    // Training on long rows too: the same holdout; the batches come from the other long rows, in the same order.
    let (train_long, hold_long) = d.split_holdout(30, 7, RowRule::Long, RowRule::Long);
    assert_eq!(hold_long, hold);
    assert_eq!(
        train_long,
        train.iter().filter(|e| long(e)).cloned().collect::<Vec<_>>()
    );
    assert_eq!(train_long.len(), examples.iter().filter(|e| long(e)).count() - 30);
    // Asking for more long rows than exist takes all of them (and at most half of the data).
    let n_long = examples.iter().filter(|e| RowRule::Long.admits(e)).count();
    assert_eq!(
        d.split_holdout(190, 7, RowRule::Long, RowRule::Random).1.len(),
        n_long.min(100)
    );
}
