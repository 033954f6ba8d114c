//! Prompt tokenization exactly as diffusers calls its tokenizer:
//! `tokenizer(text, padding="max_length", max_length=model_max_length, truncation=True)`.
//!
//! Three on-disk forms are accepted, in this order: `tokenizer.json` (any fast tokenizer),
//! `vocab.json` + `merges.txt` (CLIP BPE, what Optimum and SD 1.x ship) and `vocab.txt` (BERT
//! WordPiece, the paper's Chinese encoder). The latter two are assembled from `tokenizers` parts the
//! way transformers' own converters (`CLIPConverter`, `BertConverter`) do, so the ids match
//! transformers without needing a `tokenizer.json`. Truncation is reported, never silent.

use std::path::Path;

use serde::Deserialize;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{BertNormalizer, Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PostProcessor, SplitDelimiterBehavior, Tokenizer};

use crate::error::{EngineError, Result};

/// CLIP's pre-tokenization pattern, as in transformers' `CLIPConverter`.
const CLIP_SPLIT_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The part of a prompt that did not fit the text encoder's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub kept_tokens: usize,
    pub dropped_tokens: usize,
    pub dropped_text: String,
}

/// One prompt as the text encoder sees it: exactly `max_length` ids.
#[derive(Debug, Clone)]
pub struct TokenizedPrompt {
    pub ids: Vec<i64>,
    /// Byte range in the prompt of each of the `ids`; `None` for special and padding tokens.
    /// Entity linking uses it to find the tokens that spell an entity.
    pub offsets: Vec<Option<(usize, usize)>>,
    pub truncation: Option<Truncation>,
}

/// A tokenizer fixed to one context length and padding token.
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
    pad_id: u32,
    special_tokens: usize,
}

impl PromptTokenizer {
    /// Loads the tokenizer in `dir`. `context_length` is the text encoder's maximum sequence length
    /// when known from its ONNX input or config; the tokenizer's own `model_max_length` wins when
    /// it is smaller, as in transformers.
    pub fn load(dir: &Path, context_length: Option<usize>) -> Result<Self> {
        let config = TokenizerConfig::read(dir)?;
        let (mut tokenizer, kind) = if dir.join("tokenizer.json").exists() {
            let path = dir.join("tokenizer.json");
            let tokenizer = Tokenizer::from_file(&path)
                .map_err(|e| EngineError::bad_file(&path, format!("not a valid tokenizer.json: {e}")))?;
            (tokenizer, Kind::Json)
        } else if dir.join("vocab.json").exists() {
            (build_clip(dir, &config)?, Kind::Clip)
        } else if dir.join("vocab.txt").exists() {
            (build_bert(dir, &config)?, Kind::Bert)
        } else {
            return Err(EngineError::MissingFile {
                path: dir.join("tokenizer.json"),
                hint:
                    "the tokenizer folder needs tokenizer.json, or vocab.json + merges.txt (CLIP), or vocab.txt (BERT)",
            });
        };
        // Without a post-processor (plain tokenizer.json files may lack one) nothing is added.
        let special_tokens = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));

        let max_length = match (config.model_max_length(), context_length) {
            (Some(a), Some(b)) => a.min(b),
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => kind.default_max_length(),
        };
        if max_length <= special_tokens {
            return Err(EngineError::bad_file(
                dir.join("tokenizer_config.json"),
                format!("model_max_length {max_length} leaves no room for text after {special_tokens} special tokens"),
            ));
        }
        let pad_token = config.pad_token().unwrap_or_else(|| kind.default_pad_token().to_owned());
        let pad_id = tokenizer.token_to_id(&pad_token).ok_or_else(|| {
            EngineError::bad_file(
                dir,
                format!("pad token `{pad_token}` is not in the vocabulary; fix tokenizer_config.json"),
            )
        })?;
        // Nothing is truncated or padded by the tokenizer itself: `encode` does both so it can
        // report exactly what was cut.
        tokenizer.with_truncation(None).map_err(|e| EngineError::bad_file(dir, e))?;
        tokenizer.with_padding(None);
        Ok(Self { tokenizer, max_length, pad_id, special_tokens })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes like transformers with `padding="max_length", truncation=True`: the text is cut
    /// to leave room for the special tokens, which are then added, and the rest is padding.
    pub fn encode(&self, text: &str) -> Result<TokenizedPrompt> {
        let to_error = |e: tokenizers::Error| EngineError::invalid("prompt", format!("cannot tokenize: {e}"));
        let content = self.tokenizer.encode(text, false).map_err(to_error)?;
        let room = self.max_length - self.special_tokens;
        let content_ids = content.get_ids();
        let truncation = if content_ids.len() > room {
            let dropped = &content_ids[room..];
            Some(Truncation {
                kept_tokens: room,
                dropped_tokens: dropped.len(),
                dropped_text: self.tokenizer.decode(dropped, true).map_err(to_error)?,
            })
        } else {
            None
        };
        let mut kept = content;
        kept.truncate(room, 0, tokenizers::TruncationDirection::Right);
        let processed = self.tokenizer.post_process(kept, None, true).map_err(to_error)?;
        let mut ids: Vec<i64> = processed.get_ids().iter().map(|&id| i64::from(id)).collect();
        ids.resize(self.max_length, i64::from(self.pad_id));
        let mut offsets: Vec<Option<(usize, usize)>> = processed
            .get_offsets()
            .iter()
            .zip(processed.get_special_tokens_mask())
            .map(|(&span, &special)| (special == 0).then_some(span))
            .collect();
        offsets.resize(self.max_length, None);
        Ok(TokenizedPrompt { ids, offsets, truncation })
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Json,
    Clip,
    Bert,
}

impl Kind {
    fn default_max_length(self) -> usize {
        match self {
            Self::Json | Self::Clip => 77,
            Self::Bert => 512,
        }
    }

    fn default_pad_token(self) -> &'static str {
        match self {
            Self::Json | Self::Clip => "<|endoftext|>",
            Self::Bert => "[PAD]",
        }
    }
}

/// The fields of `tokenizer_config.json` / `special_tokens_map.json` that change the ids.
#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
    pad_token: Option<SpecialToken>,
    bos_token: Option<SpecialToken>,
    eos_token: Option<SpecialToken>,
    unk_token: Option<SpecialToken>,
    do_lower_case: Option<bool>,
}

/// transformers writes special tokens either as a string or as an `AddedToken` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Plain(String),
    Object { content: String },
}

impl SpecialToken {
    fn content(&self) -> String {
        match self {
            Self::Plain(s) | Self::Object { content: s } => s.clone(),
        }
    }
}

impl TokenizerConfig {
    fn read(dir: &Path) -> Result<Self> {
        let mut config = Self::default();
        // special_tokens_map.json first, so tokenizer_config.json's values take precedence.
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let read: TokenizerConfig = crate::model_dir::read_json(&path)?;
            config.model_max_length = read.model_max_length.or(config.model_max_length);
            config.pad_token = read.pad_token.or(config.pad_token);
            config.bos_token = read.bos_token.or(config.bos_token);
            config.eos_token = read.eos_token.or(config.eos_token);
            config.unk_token = read.unk_token.or(config.unk_token);
            config.do_lower_case = read.do_lower_case.or(config.do_lower_case);
        }
        Ok(config)
    }

    /// transformers stores "no limit" as a huge float (1e30); treat that as unknown.
    fn model_max_length(&self) -> Option<usize> {
        self.model_max_length.filter(|n| (1.0..1e9).contains(n)).map(|n| n as usize)
    }

    fn pad_token(&self) -> Option<String> {
        self.pad_token.as_ref().map(SpecialToken::content)
    }

    fn token_or(&self, token: &Option<SpecialToken>, default: &str) -> String {
        token.as_ref().map_or_else(|| default.to_owned(), SpecialToken::content)
    }
}

fn build_clip(dir: &Path, config: &TokenizerConfig) -> Result<Tokenizer> {
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    require(&merges, "CLIP's BPE needs merges.txt beside vocab.json")?;
    let bos = config.token_or(&config.bos_token, "<|startoftext|>");
    let eos = config.token_or(&config.eos_token, "<|endoftext|>");
    let unk = config.token_or(&config.unk_token, "<|endoftext|>");
    let model = BPE::from_file(&path_str(&vocab), &path_str(&merges))
        .unk_token(unk)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix("</w>".to_owned())
        .fuse_unk(false)
        .build()
        .map_err(|e| {
            EngineError::bad_file(&vocab, format!("cannot build CLIP BPE from vocab.json + merges.txt: {e}"))
        })?;
    let mut tokenizer = Tokenizer::new(model);
    let whitespace =
        Replace::new(ReplacePattern::Regex(r"\s+".to_owned()), " ").map_err(|e| EngineError::bad_file(dir, e))?;
    tokenizer.with_normalizer(Some(NormalizerSequence::new(vec![NFC.into(), whitespace.into(), Lowercase.into()])));
    let split = Split::new(SplitPattern::Regex(CLIP_SPLIT_PATTERN.to_owned()), SplitDelimiterBehavior::Removed, true)
        .map_err(|e| EngineError::bad_file(dir, e))?;
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let bos_id = token_id(&tokenizer, &bos, &vocab)?;
    let eos_id = token_id(&tokenizer, &eos, &vocab)?;
    tokenizer.with_post_processor(Some(
        RobertaProcessing::new((eos.clone(), eos_id), (bos.clone(), bos_id))
            .trim_offsets(false)
            .add_prefix_space(false),
    ));
    tokenizer.add_special_tokens(&[AddedToken::from(bos, true), AddedToken::from(eos, true)]);
    Ok(tokenizer)
}

fn build_bert(dir: &Path, config: &TokenizerConfig) -> Result<Tokenizer> {
    let vocab = dir.join("vocab.txt");
    let unk = config.token_or(&config.unk_token, "[UNK]");
    let model = WordPiece::from_file(&path_str(&vocab))
        .unk_token(unk)
        .continuing_subword_prefix("##".to_owned())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| EngineError::bad_file(&vocab, format!("cannot build WordPiece from vocab.txt: {e}")))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, None, config.do_lower_case.unwrap_or(true))));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    let cls = token_id(&tokenizer, "[CLS]", &vocab)?;
    let sep = token_id(&tokenizer, "[SEP]", &vocab)?;
    let template = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .and_then(|b| b.special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)]).build().map_err(|e| e.to_string()))
        .map_err(|e| EngineError::bad_file(&vocab, e))?;
    tokenizer.with_post_processor(Some(template));
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .into_iter()
        .filter(|t| tokenizer.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}

fn token_id(tokenizer: &Tokenizer, token: &str, vocab: &Path) -> Result<u32> {
    tokenizer
        .token_to_id(token)
        .ok_or_else(|| EngineError::bad_file(vocab, format!("special token `{token}` is missing from the vocabulary")))
}

fn require(path: &Path, hint: &'static str) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(EngineError::MissingFile { path: path.to_path_buf(), hint })
    }
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
