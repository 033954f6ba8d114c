//! Knowledge-enhanced prompts on the knowledge-enabled fixture models (`tiny-sd-clip-kg`,
//! `tiny-sd-bert-kg`, made by `deploy/export/add_knowledge.py` from the plain fixtures and the
//! TransE vectors of the project's domain graph): the extra encoder input is exact when zero,
//! linked entities change the encoding where they should, and broken knowledge folders are named.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use ndarray::{Array2, Array3};
use rapid_engine::error::EngineError;
use rapid_engine::knowledge::KnowledgeBase;
use rapid_engine::parts::text_encoder::TextEncoder;
use rapid_engine::pipeline::{GenerationRequest, Pipeline, PromptRole};
use rapid_engine::runtime::{Runtime, RuntimeOptions};
use rapid_engine::tokenizer::PromptTokenizer;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model(name: &str) -> PathBuf {
    repo().join("tests/fixtures/models").join(name)
}

fn runtime() -> Runtime {
    Runtime::new(&RuntimeOptions { intra_threads: Some(1), ..RuntimeOptions::default() })
        .expect("ONNX Runtime did not load: run `bash deploy/setup.sh`")
}

/// Encodes `prompt` with the plain and the knowledge-enabled encoder of one model, the latter
/// with the entity embeddings the knowledge base links. Returns (plain, with zeros, with
/// entities, first token of the first entity).
fn encode_both(plain: &str, with_knowledge: &str, prompt: &str) -> (Array3<f32>, Array3<f32>, Array3<f32>, usize) {
    let runtime = runtime();
    let mut plain_encoder = TextEncoder::load(&runtime, &model(plain).join("text_encoder/model.onnx")).unwrap();
    let mut encoder = TextEncoder::load(&runtime, &model(with_knowledge).join("text_encoder/model.onnx")).unwrap();
    assert!(encoder.takes_entity_embeds() && !plain_encoder.takes_entity_embeds());
    let tokenizer = PromptTokenizer::load(&model(with_knowledge).join("tokenizer"), encoder.context_length()).unwrap();
    let tokens = tokenizer.encode(prompt).unwrap();
    let ids = Array2::from_shape_vec((1, tokens.ids.len()), tokens.ids.clone()).unwrap();
    let hidden = encoder.hidden_size().unwrap();
    let knowledge = KnowledgeBase::load(&model(with_knowledge).join("knowledge"), hidden).unwrap();
    let mut embeds = Array3::<f32>::zeros((1, tokens.ids.len(), hidden));
    let linked = knowledge.inject(prompt, &tokens.offsets, &mut embeds, 0);
    assert!(!linked.is_empty(), "the prompt names known entities");
    let first = linked.iter().flat_map(|e| e.tokens.iter().copied()).min().unwrap();
    (
        plain_encoder.encode(&ids, None).unwrap(),
        encoder.encode(&ids, None).unwrap(),
        encoder.encode(&ids, Some(embeds)).unwrap(),
        first,
    )
}

fn row_changed(a: &Array3<f32>, b: &Array3<f32>, row: usize) -> bool {
    a.slice(ndarray::s![0, row, ..]).iter().zip(b.slice(ndarray::s![0, row, ..])).any(|(x, y)| x != y)
}

#[test]
fn causal_clip_changes_only_from_the_entity_on() {
    let (plain, zeros, linked, first) =
        encode_both("tiny-sd-clip", "tiny-sd-clip-kg", "a studio photo of a silk qipao");
    assert_eq!(plain, zeros, "zero entity_embeds must give exactly the plain encoder's output");
    assert!(first > 1, "the prompt starts with plain words");
    for row in 0..first {
        assert!(!row_changed(&plain, &linked, row), "row {row} before the entity changed");
    }
    for row in first..plain.dim().1 {
        assert!(row_changed(&plain, &linked, row), "row {row} from the entity on did not change");
    }
}

#[test]
fn bidirectional_bert_changes_every_position() {
    let (plain, zeros, linked, _) = encode_both("tiny-sd-bert", "tiny-sd-bert-kg", "一件红色的丝绸旗袍");
    assert_eq!(plain, zeros, "zero entity_embeds must give exactly the plain encoder's output");
    assert!((0..plain.dim().1).all(|row| row_changed(&plain, &linked, row)));
}

#[test]
fn pipeline_reports_linked_entities_in_both_languages() {
    let runtime = runtime();
    for (name, prompt, expected) in [
        (
            "tiny-sd-clip-kg",
            "Kung Pao Chicken next to a silky scarf",
            vec![("kung pao chicken", "Kung Pao Chicken"), ("scarf", "scarf")],
        ),
        ("tiny-sd-bert-kg", "一盘麻婆豆腐", vec![("mapo tofu", "麻婆豆腐")]),
    ] {
        let mut pipeline = Pipeline::load(&runtime, &model(name)).unwrap();
        let mut request = GenerationRequest::new(prompt);
        request.steps = 2;
        request.upscale = false;
        let generated = pipeline.generate(&request, &mut |_| ControlFlow::Continue(())).unwrap();
        let found: Vec<(&str, &str)> = generated
            .entities
            .iter()
            .filter(|(role, _)| *role == PromptRole::Prompt)
            .map(|(_, e)| (e.entity.as_str(), e.text.as_str()))
            .collect();
        assert_eq!(found, expected, "{name}: `silky` is not `silk`, and the longest name wins");
        let (key, value) = generated.entities_field().unwrap();
        assert_eq!(key, "entities");
        assert!(value.contains(expected[0].0), "{value}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Breaks one thing in a copy of the knowledge model and returns the load error.
fn load_error(damage: impl Fn(&Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("model");
    copy_dir(&model("tiny-sd-clip-kg"), &copy);
    damage(&copy);
    match Pipeline::load(&runtime(), &copy) {
        Err(e @ (EngineError::BadFile { .. } | EngineError::MissingFile { .. } | EngineError::Contract { .. })) => {
            e.to_string()
        }
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("a broken knowledge folder loaded"),
    }
}

#[test]
fn broken_knowledge_folders_are_named() {
    let error = load_error(|m| {
        let names = std::fs::read_to_string(m.join("knowledge/entities.txt")).unwrap();
        std::fs::write(m.join("knowledge/entities.txt"), names.lines().skip(1).collect::<Vec<_>>().join("\n")).unwrap();
    });
    assert!(error.contains("entity_vectors.npy") && error.contains("rows"), "{error}");

    let error = load_error(|m| {
        let file = std::fs::File::create(m.join("knowledge/projection.npy")).unwrap();
        ndarray_npy::WriteNpyExt::write_npy(&Array2::<f32>::zeros((3, 5)), file).unwrap();
    });
    assert!(error.contains("projection.npy") && error.contains("[3, 5]"), "{error}");

    let error = load_error(|m| std::fs::remove_file(m.join("knowledge/projection.npy")).unwrap());
    assert!(error.contains("projection.npy") && error.contains("missing"), "{error}");

    let error =
        load_error(|m| std::fs::write(m.join("knowledge/aliases.tsv"), "丝绸\tsilk\nvelour\tvelours\n").unwrap());
    assert!(error.contains("aliases.tsv") && error.contains("line 2") && error.contains("velours"), "{error}");

    let error = load_error(|m| std::fs::write(m.join("knowledge/entities.txt"), "").unwrap());
    assert!(error.contains("entities.txt"), "{error}");

    let error = load_error(|m| {
        std::fs::copy(model("tiny-sd-clip").join("text_encoder/model.onnx"), m.join("text_encoder/model.onnx"))
            .unwrap();
    });
    assert!(error.contains("entity_embeds"), "knowledge/ with a plain encoder: {error}");
}
