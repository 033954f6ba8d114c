//! Run with `cargo run --release -p rapid-knowledge --bin rapid-transe -- --train train.tsv --valid valid.tsv
//! --test test.tsv --out out/transe` (or `--triples all.tsv --split 0.8,0.1,0.1` instead of the three files).
//!
//! The trainer's command-line edge: flags become a `TrainConfig`, training and evaluation run in a rayon pool
//! of `--threads`, progress goes to stderr, metrics to stdout and everything to `--out`. `anyhow` lives here
//! and nowhere else in the crate.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use rapid_knowledge::dataset::Dataset;
use rapid_knowledge::eval::{self, Filter, RankMetrics};
use rapid_knowledge::model::Norm;
use rapid_knowledge::output::{self, DataSummary, EpochMetrics, Report, Settings};
use rapid_knowledge::sampling::Corruption;
use rapid_knowledge::split::SplitRatios;
use rapid_knowledge::train::{self, EpochReport, TrainConfig};

#[derive(Parser)]
#[command(name = "rapid-transe", version, about = "Train TransE knowledge-graph embeddings (Bordes et al. 2013)")]
struct Cli {
    /// Training triples: head<TAB>relation<TAB>tail per line; blank lines and # comments are skipped.
    #[arg(long, value_name = "FILE", required_unless_present = "triples", conflicts_with = "triples")]
    train: Option<PathBuf>,
    /// Validation triples (for --eval-every).
    #[arg(long, value_name = "FILE", requires = "train")]
    valid: Option<PathBuf>,
    /// Test triples, ranked after training.
    #[arg(long, value_name = "FILE", requires = "train")]
    test: Option<PathBuf>,
    /// One triples file to split by --split instead of --train/--valid/--test.
    #[arg(long, value_name = "FILE", requires = "split")]
    triples: Option<PathBuf>,
    /// Fractions train,valid,test of --triples, e.g. 0.8,0.1,0.1; the shuffle is seeded by --seed.
    #[arg(long, value_name = "TRAIN,VALID,TEST", requires = "triples")]
    split: Option<SplitRatios>,
    /// Output directory; must not exist unless --overwrite.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace --out if it exists (only once the new result is complete).
    #[arg(long)]
    overwrite: bool,
    /// Embedding dimension.
    #[arg(long, default_value_t = 50)]
    dim: usize,
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// Positive triples per mini-batch.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f32,
    /// Margin of the ranking loss max(0, margin + d(pos) - d(neg)).
    #[arg(long, default_value_t = 1.0)]
    margin: f32,
    /// Negatives per positive triple.
    #[arg(long, default_value_t = 1)]
    negatives: usize,
    /// Distance: l1 or l2.
    #[arg(long, default_value = "l1")]
    norm: Norm,
    /// Which side to corrupt: uniform (head or tail, 1/2 each) or bernoulli (per relation, Wang et al. 2014).
    #[arg(long, default_value = "bernoulli")]
    corruption: Corruption,
    /// Seed of initialisation, shuffles, negatives and --split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads [default: all cores]. Results do not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Evaluate on the validation split every K epochs.
    #[arg(long, value_name = "K")]
    eval_every: Option<usize>,
    /// Without a terminal on stderr, print a progress line every N epochs.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    log_every: u64,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let threads = cli.threads.map_or_else(|| std::thread::available_parallelism().map_or(1, usize::from), usize::from);
    let config = TrainConfig {
        dim: cli.dim,
        epochs: cli.epochs,
        batch_size: cli.batch_size,
        learning_rate: cli.lr,
        margin: cli.margin,
        negatives: cli.negatives,
        norm: cli.norm,
        corruption: cli.corruption,
        seed: cli.seed,
        eval_every: cli.eval_every,
    };
    config.validate()?;
    output::check_destination(&cli.out, cli.overwrite)?;

    let dataset = match (&cli.train, &cli.triples, cli.split) {
        (Some(train), _, _) => Dataset::from_files(train, cli.valid.as_deref(), cli.test.as_deref())?,
        (None, Some(triples), Some(ratios)) => Dataset::from_split(triples, ratios, cli.seed)?,
        _ => unreachable!("clap requires --train, or --triples with --split"),
    };
    describe(&dataset);

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .with_context(|| format!("cannot start {threads} worker threads; try a smaller --threads"))?;
    pool.install(|| -> anyhow::Result<()> {
        let progress = Progress::new(config.epochs, cli.log_every);
        let mut validation = Vec::new();
        let mut final_loss = f64::NAN;
        let started = Instant::now();
        let model = train::train(&dataset, &config, |report| {
            progress.epoch(report);
            final_loss = report.loss;
            if let Some(metrics) = report.validation {
                validation.push(EpochMetrics { epoch: report.epoch, metrics: metrics.into() });
            }
        })?;
        let training_seconds = started.elapsed().as_secs_f64();
        progress.finish();

        let started = Instant::now();
        let test = eval::evaluate(&model, &dataset.test, &Filter::new(dataset.known_triples()));
        let evaluation_seconds = started.elapsed().as_secs_f64();
        match test {
            Some(metrics) => println!("test: {}", summary(&metrics)),
            None => println!("test: no test split, nothing evaluated"),
        }
        let plural = if threads == 1 { "" } else { "s" };
        println!("training: {training_seconds:.2} s on {threads} thread{plural}, final loss {final_loss:.4}");

        let report = Report {
            test: test.map(Into::into),
            validation,
            final_loss,
            training_seconds,
            evaluation_seconds,
            settings: Settings::new(&config, threads),
            data: DataSummary::new(&dataset),
        };
        output::write(&cli.out, cli.overwrite, &dataset, &model, &report)?;
        println!("wrote {}", cli.out.display());
        Ok(())
    })
}

/// Says on stderr what was loaded and what was dropped or moved, so a surprising metric can be traced.
fn describe(dataset: &Dataset) {
    eprintln!(
        "loaded {} entities, {} relations; {} train, {} valid, {} test triples",
        dataset.entities.len(),
        dataset.relations.len(),
        dataset.train.len(),
        dataset.valid.len(),
        dataset.test.len()
    );
    let unseen = dataset.unseen;
    for (dropped, kept, split) in
        [(unseen.dropped_valid, dataset.valid.len(), "validation"), (unseen.dropped_test, dataset.test.len(), "test")]
    {
        if dropped > 0 {
            eprintln!(
                "dropped {dropped} of {} {split} triples: they name entities or relations absent from the training \
                 file, which get no vector (PyKEEN drops them too)",
                dropped + kept
            );
        }
    }
    if unseen.moved_to_train > 0 {
        eprintln!(
            "moved {} held-out triples into training so that every entity and relation gets a vector",
            unseen.moved_to_train
        );
    }
}

fn summary(metrics: &RankMetrics) -> String {
    format!(
        "filtered MRR {:.4}, Hits@1 {:.4}, Hits@3 {:.4}, Hits@10 {:.4} ({} ranks, realistic ties)",
        metrics.mrr, metrics.hits_at_1, metrics.hits_at_3, metrics.hits_at_10, metrics.ranks
    )
}

/// A progress bar on a terminal; otherwise a line every `log_every` epochs, so logs stay readable.
struct Progress {
    bar: Option<ProgressBar>,
    epochs: usize,
    log_every: u64,
}

impl Progress {
    fn new(epochs: usize, log_every: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template("{elapsed_precise} [{bar:40}] epoch {pos}/{len} {msg}")
                .expect("the template is valid")
                .progress_chars("=> ");
            ProgressBar::new(epochs as u64).with_style(style)
        });
        Self { bar, epochs, log_every }
    }

    fn epoch(&self, report: &EpochReport) {
        let line = format!("epoch {}/{}: loss {:.4}", report.epoch, self.epochs, report.loss);
        let validation = report.validation.map(|m| format!("validation: {}", summary(&m)));
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("loss {:.4}", report.loss));
                bar.inc(1);
                if let Some(validation) = validation {
                    bar.println(format!("{line}; {validation}"));
                }
            }
            None => {
                let due = (report.epoch as u64).is_multiple_of(self.log_every) || report.epoch == self.epochs;
                match validation {
                    Some(validation) => eprintln!("{line}; {validation}"),
                    None if due => eprintln!("{line}"),
                    None => {}
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
