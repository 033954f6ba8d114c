//! The `rapid-transe` binary end to end: real files in, real files out, errors on stderr.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::Array2;

fn rapid_transe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rapid-transe")).args(args).output().expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The composition graph of the unit tests as TSV files: 16 groups (p_i, r, a_i), (p_i, s, b_i),
/// (a_i, q, b_i), every third q link held out for test, and one for validation.
fn write_graph(dir: &Path) -> [PathBuf; 3] {
    let (mut train, mut valid, mut test) = (String::from("# head\trelation\ttail\n"), String::new(), String::new());
    for i in 0..16 {
        train += &format!("p{i}\tr\ta{i}\np{i}\ts\tb{i}\n");
        let q = format!("a{i}\tq\tb{i}\n");
        match i % 3 {
            0 => test += &q,
            1 if i < 5 => valid += &q,
            _ => train += &q,
        }
    }
    // A test triple naming an entity absent from training: dropped and reported.
    test += "a0\tq\tnowhere\n";
    let paths = ["train.tsv", "valid.tsv", "test.tsv"].map(|name| dir.join(name));
    for (path, text) in paths.iter().zip([train, valid, test]) {
        fs::write(path, text).unwrap();
    }
    paths
}

fn train_args<'a>(files: &'a [PathBuf; 3], out: &'a Path, threads: &'a str) -> Vec<&'a str> {
    let [train, valid, test] = files.each_ref().map(|p| p.to_str().unwrap());
    vec![
        "--train",
        train,
        "--valid",
        valid,
        "--test",
        test,
        "--out",
        out.to_str().unwrap(),
        "--dim",
        "8",
        "--epochs",
        "40",
        "--batch-size",
        "16",
        "--lr",
        "0.02",
        "--negatives",
        "4",
        "--norm",
        "l2",
        "--eval-every",
        "20",
        "--log-every",
        "10",
        "--threads",
        threads,
        "--seed",
        "9",
    ]
}

#[test]
fn trains_evaluates_and_writes_vectors_names_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_graph(dir.path());
    let out = dir.path().join("vectors");
    let output = rapid_transe(&train_args(&files, &out, "2"));
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("loaded 48 entities, 3 relations; 40 train, 2 valid, 6 test triples"), "{log}");
    assert!(log.contains("dropped 1 of 7 test triples"), "{log}");
    // No terminal: a plain line every 10 epochs, validation lines at 20 and 40, no progress bar.
    assert_eq!(log.matches("epoch ").count(), 4, "{log}");
    assert!(log.contains("epoch 20/40: loss") && log.contains("validation: filtered MRR"), "{log}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("test: filtered MRR"));

    let entities = fs::read_to_string(out.join("entities.txt")).unwrap();
    let names: Vec<&str> = entities.lines().collect();
    assert_eq!(names.len(), 48);
    assert_eq!(names[..3], ["p0", "a0", "b0"]);
    assert_eq!(fs::read_to_string(out.join("relations.txt")).unwrap(), "r\ns\nq\n");
    let vectors: Array2<f32> = ndarray_npy::read_npy(out.join("entity_vectors.npy")).unwrap();
    assert_eq!(vectors.shape(), [48, 8]);
    for row in vectors.rows() {
        assert!((row.dot(&row) - 1.0).abs() < 1e-5);
    }
    let relations: Array2<f32> = ndarray_npy::read_npy(out.join("relation_vectors.npy")).unwrap();
    assert_eq!(relations.shape(), [3, 8]);

    let metrics: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["test"]["ranks"], 12);
    // Measured 0.90-1.00 over seeds 1, 2, 3 and 9 with these settings; random is about 0.09.
    assert!(metrics["test"]["mrr"].as_f64().unwrap() > 0.7, "{metrics}");
    assert_eq!(metrics["validation"].as_array().unwrap().len(), 2);
    assert_eq!(metrics["data"]["dropped_test"], 1);
    assert_eq!(metrics["settings"]["negatives"], 4);
    assert!(metrics["training_seconds"].as_f64().unwrap() > 0.0);

    // Same seed on one thread: byte-identical vectors.
    let again = dir.path().join("again");
    assert!(rapid_transe(&train_args(&files, &again, "1")).status.success());
    for file in ["entity_vectors.npy", "relation_vectors.npy"] {
        assert_eq!(fs::read(out.join(file)).unwrap(), fs::read(again.join(file)).unwrap(), "{file}");
    }

    // An existing output is left alone without --overwrite.
    let output = rapid_transe(&train_args(&files, &out, "2"));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("already exists; remove it, choose another --out, or pass --overwrite"));
}

#[test]
fn a_malformed_line_fails_naming_file_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_graph(dir.path());
    fs::write(&files[2], "a0\tq\tb0\n\na1 q b1\n").unwrap();
    let out = dir.path().join("vectors");
    let output = rapid_transe(&train_args(&files, &out, "2"));
    assert!(!output.status.success());
    let expected =
        format!("error: {}:3: expected 3 tab-separated columns (head, relation, tail), found 1", files[2].display());
    assert!(stderr(&output).starts_with(&expected), "{}", stderr(&output));
    assert!(!out.exists());
}

#[test]
fn an_empty_graph_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.tsv");
    fs::write(&empty, "# nothing here\n").unwrap();
    let out = dir.path().join("vectors");
    let output =
        rapid_transe(&["--triples", empty.to_str().unwrap(), "--split", "0.8,0.1,0.1", "--out", out.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("holds no triples"), "{}", stderr(&output));
    assert!(!out.exists());
}

#[test]
fn one_file_is_split_with_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let [train, ..] = write_graph(dir.path());
    let out = dir.path().join("vectors");
    let args = ["--triples", train.to_str().unwrap(), "--split", "0.8,0.1,0.1", "--epochs", "5", "--dim", "4"];
    let output = rapid_transe(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    let metrics: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let data = &metrics["data"];
    let total =
        ["train_triples", "valid_triples", "test_triples"].map(|k| data[k].as_u64().unwrap()).iter().sum::<u64>();
    assert_eq!(total, 40);
    assert_eq!(data["entities"], 48, "every entity gets a vector: held-out triples with unseen names move to training");
}
