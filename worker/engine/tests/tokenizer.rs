//! Token ids equal transformers' on the fixture tokenizers (CLIP BPE from vocab.json + merges.txt,
//! BERT WordPiece from vocab.txt), including padding, truncation and its report.

use std::path::{Path, PathBuf};

use rapid_engine::tokenizer::PromptTokenizer;
use serde::Deserialize;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Deserialize)]
struct Fixture {
    tokenizers: Vec<TokenizerCases>,
}

#[derive(Deserialize)]
struct TokenizerCases {
    tokenizer_dir: String,
    model_max_length: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<i64>,
    untruncated_len: usize,
}

#[test]
fn ids_match_transformers() {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/tokenizer/cases.json")).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fixture.tokenizers.len(), 2, "expected the CLIP and the BERT tokenizer");
    for set in &fixture.tokenizers {
        let tokenizer = PromptTokenizer::load(&repo().join(&set.tokenizer_dir), None).unwrap();
        assert_eq!(tokenizer.max_length(), set.model_max_length, "{}", set.tokenizer_dir);
        let mut truncated_cases = 0;
        for case in &set.cases {
            let encoded = tokenizer.encode(&case.text).unwrap();
            assert_eq!(encoded.ids, case.ids, "{}: {:?}", set.tokenizer_dir, case.text);
            let overflow = case.untruncated_len.saturating_sub(set.model_max_length);
            match &encoded.truncation {
                Some(t) => {
                    truncated_cases += 1;
                    assert_eq!(t.dropped_tokens, overflow, "{:?}: dropped token count", case.text);
                    assert!(!t.dropped_text.is_empty(), "{:?}: the dropped text is reported", case.text);
                }
                None => assert_eq!(overflow, 0, "{:?}: truncation went unreported", case.text),
            }
        }
        assert!(truncated_cases > 0, "{}: no case exercises truncation", set.tokenizer_dir);
    }
}
